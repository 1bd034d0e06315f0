"""Fixtures of the probabilistic matching tests."""

from __future__ import annotations

import functools

import pytest

from ci_pipeline.benchmarks import linkage

#: Random record pairs `bench linkage` weighs for its comparison_pairs_per_s figure in a test. The command weighs a
#: million for a steady figure (a few CPU seconds a run, whatever the data's size); the tests check that the figure
#: is measured, not how large it is.
TEST_THROUGHPUT_PAIRS = 20_000


@pytest.fixture
def throughput_on_fewer_pairs(monkeypatch):
    """`bench linkage` measures its comparison throughput on :data:`TEST_THROUGHPUT_PAIRS` random pairs."""
    monkeypatch.setattr(linkage, "_throughput", functools.partial(linkage._throughput, pairs=TEST_THROUGHPUT_PAIRS))
