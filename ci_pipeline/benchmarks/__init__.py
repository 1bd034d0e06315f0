"""Benchmarks behind `ci-pipeline bench <name>`; each module here adds one through ``register(subparsers)``.

A benchmark prints figures (one JSON line); it never asserts timings.
"""
