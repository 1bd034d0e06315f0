"""`ci-pipeline bench enrich-providers`: address and e-mail accuracy against the generator's truth, as one JSON line."""

from __future__ import annotations

import json

from ci_pipeline.benchmarks.enrich_providers import address_quality
from ci_pipeline.cli import main

#: Floors a working provider clears with room to spare and a broken one does not (see the second test).
ADDRESS_FLOORS = {
    "accuracy_Street1": 0.9,
    "accuracy_Street1_no_typo": 0.95,
    "accuracy_Street1_parser": 0.75,
    "accuracy_City": 0.95,
    "accuracy_StateOrProvince": 0.95,
    "accuracy_ZipOrPostalCode": 0.95,
    "accuracy_CountryOrRegion": 0.95,
}
EMAIL_FLOORS = {"accuracy_personal_free_mail": 0.9, "accuracy_work_business": 0.9}


def test_the_benchmark_prints_accuracies_speed_and_memory_of_both_providers(capsys):
    assert main(["bench", "enrich-providers", "--people", "2000", "--seed", "7"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: figures[k] for k in ("benchmark", "people", "seed")} == {
        "benchmark": "enrich-providers",
        "people": 2000,
        "seed": 7,
    }
    address, email = figures["address"], figures["email"]
    for part, floors in ((address, ADDRESS_FLOORS), (email, EMAIL_FLOORS)):
        accuracies = {k: v for k, v in part.items() if k.startswith("accuracy_")}
        assert set(accuracies) == set(floors)
        assert all(0 <= v <= 1 for v in accuracies.values()), accuracies
        assert all(accuracies[k] >= floor for k, floor in floors.items()), accuracies
        assert part["seconds"] > 0 and part["cpu_seconds"] > 0 and part["peak_rss_mb"] > 0
        assert part["profiles"] == 2000
    # The peak is the process's so far: it cannot fall from one provider to the next.
    assert email["peak_rss_mb"] >= address["peak_rss_mb"]
    # Every profile is counted once, and the parser's figure rests on enough records to mean something.
    assert address["processed_changed"] + address["processed_unchanged"] + address["not_processed"] == 2000
    assert address["street_lines_parser"] > 0 and address["parser_records"] >= 10
    assert email["valid"] + email["invalid"] + email["no_email"] == 2000


def test_a_parser_that_reads_nothing_falls_below_the_floor(monkeypatch):
    # Most generated street lines take the fast path; the parser's own figure shows when the parser is broken.
    monkeypatch.setattr("ci_pipeline.enrich.address._parse_one", lambda line: None)
    broken = address_quality(2000, 7)
    assert broken["accuracy_Street1_parser"] < ADDRESS_FLOORS["accuracy_Street1_parser"]
    assert broken["street_lines_parser"] > 0
