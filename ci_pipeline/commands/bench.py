"""`ci-pipeline bench <name>`: performance figures for one stage (see ci_pipeline/benchmarks/)."""

from __future__ import annotations

import importlib
import pkgutil

from ci_pipeline import benchmarks


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="measure a stage on generated data and print figures as JSON")
    names = parser.add_subparsers(dest="benchmark", metavar="NAME", required=True)
    for module_info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        importlib.import_module(f"{benchmarks.__name__}.{module_info.name}").register(names)
