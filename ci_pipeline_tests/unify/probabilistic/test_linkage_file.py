"""`bench linkage --file`: the default settings on a labelled file of one's own, mapped as a new user maps it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ci_pipeline.benchmarks.linkage import person_pairs
from ci_pipeline.cli import main
from ci_pipeline.errors import UserError

# Each bench run weighs its throughput pairs; the tests check the figure is measured, not its size.
pytestmark = pytest.mark.usefixtures("throughput_on_fewer_pairs")

# fmt: off
FIRST = [
    "Olivia", "Amelia", "Isla", "Ava", "Ivy", "Freya", "Lily", "Florence", "Mia", "Willow", "Rosie", "Sophia",
    "Isabella", "Grace", "Daisy", "Sienna", "Poppy", "Elsie", "Noah", "Oliver", "George", "Arthur", "Muhammad",
    "Leo", "Harry", "Oscar", "Archie", "Henry", "Theodore", "Freddie", "Jack", "Charlie", "Theo", "Alfie", "Jacob",
]
LAST = [
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel", "Robinson", "Wright",
    "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Thomas", "Clarke", "Jackson", "Wood",
    "Harris", "Edwards", "Turner", "Martin", "Cooper", "Hill", "Ward", "Hughes", "Moore", "Clark",
]
# fmt: on
CITIES = ["London", "Leeds", "Bristol", "Sheffield", "Cardiff", "Glasgow", "Belfast", "Norwich"]


def _typo(text: str, rng: np.random.Generator) -> str:
    """``text`` with two neighbouring letters swapped."""
    i = int(rng.integers(1, len(text) - 1))
    return text[: i - 1] + text[i] + text[i - 1] + text[i + 1 :]


def labelled(people: int = 300, seed: int = 3) -> pd.DataFrame:
    """``people`` people with two records each: the original and a copy without the e-mail address that has a typo
    in the first or the last name or (every third person) first and last name swapped."""
    rng = np.random.default_rng(seed)
    rows = []
    for person in range(people):
        first, last = FIRST[rng.integers(len(FIRST))], LAST[rng.integers(len(LAST))]
        born = f"{rng.integers(1940, 2005)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"
        city, email = CITIES[rng.integers(len(CITIES))], f"{first}.{last}{person}@example.org".lower()
        rows.append((person, first, last, born, city, email))
        if person % 3 == 0:
            names = (last, first)
        else:
            names = (_typo(first, rng), last) if person % 2 else (first, _typo(last, rng))
        rows.append((person, *names, born, city, None))
    frame = pd.DataFrame(rows, columns=["person", "first_name", "surname", "dob", "city", "email"])
    frame.insert(0, "record_id", [f"r{i:05d}" for i in range(len(frame))])
    return frame


def test_person_pairs_count_every_two_records_of_one_label_and_none_for_a_missing_label():
    person = pd.Series(["a", "b", "a", None, "a", None], dtype="string")
    assert person_pairs(person) == {(0, 2), (0, 4), (2, 4)}


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_labelled_file_is_mapped_as_suggested_and_scored_against_its_truth_column(tmp_path, capsys, suffix):
    frame = labelled()
    path = tmp_path / f"people.{suffix}"
    frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path)
    assert main(["bench", "linkage", "--file", str(path), "--truth", "person", "--id", "record_id"]) == 0
    figures = json.loads(capsys.readouterr().out.strip())
    # The truth and id columns are never mapped; the others as `ci-pipeline suggest-mapping` proposes them.
    assert figures["mapping"] == {
        "first_name": "first_name",
        "surname": "last_name",
        "dob": "birth_date",
        "city": "city",
        "email": "email",
    }
    assert figures["records"] == len(frame) and figures["true_pairs"] == 300
    assert not any("fewer than" in w for w in figures["warnings"])
    assert figures["precision"] >= 0.98 and figures["recall"] >= 0.95


def test_columns_mapped_by_hand_are_the_only_ones_compared(tmp_path, capsys):
    path = tmp_path / "people.csv"
    labelled(people=200).to_csv(path, index=False)
    args = ["bench", "linkage", "--file", str(path), "--truth", "person"]
    assert main([*args, "--map", "first_name=first_name", "--map", "surname=last_name", "--map", "dob=birth_date"]) == 0
    figures = json.loads(capsys.readouterr().out.strip())
    assert figures["mapping"] == {"first_name": "first_name", "surname": "last_name", "dob": "birth_date"}
    assert figures["recall"] > 0.5


def test_a_file_too_small_for_the_model_is_scored_with_a_warning_saying_so(tmp_path, capsys):
    path = tmp_path / "people.csv"
    labelled(people=20).to_csv(path, index=False)
    assert main(["bench", "linkage", "--file", str(path), "--truth", "person", "--id", "record_id"]) == 0
    figures = json.loads(capsys.readouterr().out.strip())
    assert any(f"{path}: 40 records, fewer than the 100" in w for w in figures["warnings"]), figures["warnings"]


def test_settings_written_by_the_user_replace_the_default_s_where_given(tmp_path, capsys):
    path, written = tmp_path / "people.csv", tmp_path / "match.yaml"
    labelled(people=200).to_csv(path, index=False)
    written.write_text("blocking: [[dob], [surname, city]]\nthreshold: 0.8\n")
    args = ["bench", "linkage", "--file", str(path), "--truth", "person", "--id", "record_id"]
    assert main([*args, "--settings", str(written)]) == 0
    figures = json.loads(capsys.readouterr().out.strip())
    assert figures["settings"] == str(written)
    assert figures["blocking_rules"] == 2 and figures["threshold"] == 0.8
    # The default's notes on blocking rules it would have added describe rules not used.
    assert not any(n.startswith("blocking rule") for n in figures["default_notes"])
    assert figures["recall"] > 0.3


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("blocking: [[surnme]]", "reads column 'surnme'"),
        ("link_type: link_only", "link_type is set by --source"),
        ("- surname", "write the settings as a mapping"),
        ("blocking: [[surname]\n", "cannot be read as YAML"),
    ],
)
def test_a_mistake_in_the_settings_file_names_it(tmp_path, capsys, text, said):
    path, written = tmp_path / "people.csv", tmp_path / "match.yaml"
    labelled(people=40).to_csv(path, index=False)
    written.write_text(text)
    assert main(["bench", "linkage", "--file", str(path), "--truth", "person", "--settings", str(written)]) != 0
    error = capsys.readouterr().err
    assert "--settings" in error and said in error, error


def test_a_whole_name_is_compared_as_its_first_and_last_name_as_unification_does(tmp_path, capsys):
    frame = labelled(people=200)
    frame["name"] = frame["first_name"] + " " + frame["surname"]
    path = tmp_path / "people.csv"
    frame.drop(columns=["first_name", "surname"]).to_csv(path, index=False)
    assert main(["bench", "linkage", "--file", str(path), "--truth", "person", "--id", "record_id"]) == 0
    figures = json.loads(capsys.readouterr().out.strip())
    assert figures["mapping"]["name"] == "full_name"
    assert figures["split_from_full_name"] == {"first_name_from_name": "first_name", "last_name_from_name": "last_name"}
    # A typo in one part leaves the other part's blocking rules and evidence.
    assert figures["blocking_recall"] >= 0.95 and figures["recall"] >= 0.9 and figures["precision"] >= 0.98


def test_a_birth_date_in_three_columns_is_compared_as_one_date(tmp_path, capsys):
    frame = labelled(people=200)
    parts = frame.pop("dob").str.split("-", expand=True).astype(int)
    frame = frame.assign(birth_year=parts[0], birth_month=parts[1], birth_day=parts[2])
    path = tmp_path / "people.csv"
    frame.to_csv(path, index=False)
    assert main(["bench", "linkage", "--file", str(path), "--truth", "person", "--id", "record_id"]) == 0
    figures = json.loads(capsys.readouterr().out.strip())
    assert {figures["mapping"][c] for c in ("birth_year", "birth_month", "birth_day")} == {
        "birth_year",
        "birth_month",
        "birth_day",
    }
    # Joined as unification joins them: a rule of its own, within the pair budget.
    assert any(
        note.startswith("blocking rule [birth_date_from_birth_year_birth_month_birth_day] added")
        for note in figures["default_notes"]
    )
    assert figures["precision"] >= 0.98 and figures["recall"] >= 0.95
    args = ["bench", "linkage", "--file", str(path), "--truth", "person", "--map", "birth_day=birth_day"]
    assert main([*args, "--map", "first_name=first_name"]) != 0
    said = "needs birth_year, birth_month and birth_day; birth_year and birth_month not mapped"
    assert said in capsys.readouterr().err


@pytest.mark.parametrize("parts", [("birth_year",), ("birth_year", "birth_month")])
def test_a_year_of_birth_alone_or_with_its_month_is_compared_and_blocked_on_with_the_names(parts, tmp_path, capsys):
    # A year alone is compared as a year; a year and month are joined into a birth date known in part. Three
    # hundred people: at two hundred, one wrong link moves the precision by half a point.
    frame = labelled(people=300)
    dob = frame.pop("dob")
    frame["birth_year"] = dob.str[:4] + ".0"  # as a spreadsheet may export it
    if "birth_month" in parts:
        frame["birth_month"] = dob.str[5:7]
    path = tmp_path / "people.csv"
    frame.to_csv(path, index=False)
    assert main(["bench", "linkage", "--file", str(path), "--truth", "person", "--id", "record_id"]) == 0
    figures = json.loads(capsys.readouterr().out.strip())
    assert {p: figures["mapping"][p] for p in parts} == {p: p for p in parts}
    assert figures["precision"] >= 0.95 and figures["recall"] >= 0.9


def test_a_spreadsheet_export_is_read_as_the_quick_start_reads_it(tmp_path, capsys):
    frame = labelled(people=100)
    frame.loc[0, "surname"] = "Müller"
    path = tmp_path / "people.csv"
    frame.to_csv(path, index=False, sep=";", encoding="cp1252")
    assert main(["bench", "linkage", "--file", str(path), "--truth", "person", "--id", "record_id"]) == 0
    figures = json.loads(capsys.readouterr().out.strip())
    assert figures["records"] == 200 and figures["mapping"]["surname"] == "last_name"


def test_a_wrong_column_or_type_is_named_with_the_fix(tmp_path):
    path = tmp_path / "people.csv"
    frame = labelled(people=20)
    frame.to_csv(path, index=False)
    for args, said in [
        (["--truth", "cluster"], "--truth column 'cluster' is not in the file (it has record_id, person, first_name"),
        (["--truth", "person", "--map", "surname=surname"], "unknown semantic type 'surname'; use one of full_name"),
        ([], "name the column holding the true person of each record with --truth"),
        (["--truth", "person", "--map", "person=custom"], "'person' is the truth, id or source column, never compared"),
    ]:
        with pytest.raises(UserError) as raised:
            bench_file_args(path, args)
        assert said in str(raised.value)
    frame.assign(record_id="same").to_csv(path, index=False)
    with pytest.raises(UserError, match=r"--id column 'record_id' repeats 'same' \(row 2\)"):
        bench_file_args(path, ["--truth", "person", "--id", "record_id"])


def bench_file_args(path, args: list[str]) -> int:
    """Run ``bench linkage --file path *args`` as the command line parses it, errors raised."""
    import argparse

    from ci_pipeline.benchmarks import linkage

    parser = argparse.ArgumentParser()
    linkage.register(parser.add_subparsers())
    return linkage.run(parser.parse_args(["linkage", "--file", str(path), *args]))


def test_the_customers_the_links_make_are_scored_too(tmp_path, capsys):
    """Each person's third record carries the second record's typo, one more and no birth date: it links to the
    second record more often than to the first, and the customer (the connected component) joins all three anyway;
    links between look-alikes chain their customers too, which the links' own figures do not show."""
    frame = labelled(people=300)
    rng = np.random.default_rng(5)
    copies = frame.iloc[1::2].copy()
    copies["dob"] = None  # nothing but names and the city to go by, so the second typo costs the direct link
    copies["first_name"] = [_typo(name, rng) for name in copies["first_name"]]
    copies["record_id"] = [f"c{i:05d}" for i in range(len(copies))]
    path = tmp_path / "people.csv"
    pd.concat([frame, copies], ignore_index=True).to_csv(path, index=False)
    assert main(["bench", "linkage", "--file", str(path), "--truth", "person", "--id", "record_id"]) == 0
    figures = json.loads(capsys.readouterr().out.strip())
    customers = figures["clustered"]
    assert figures["true_pairs"] == 900
    assert customers["recall"] > figures["recall"] + 0.1
    assert customers["precision"] < figures["precision"] and customers["chained"] >= 1
    assert 300 <= customers["customers"] < 400


def test_a_file_of_two_systems_is_linked_across_them_only_with_source(tmp_path, capsys):
    # Each person's original in the CRM, the copy in the shop: with --source the pairs within a system are neither
    # compared nor counted as true pairs (there are none here), as a project of one table per system with
    # link_type: link_only would link them.
    frame = labelled()
    frame["system"] = np.where(np.arange(len(frame)) % 2 == 0, "crm", "shop")
    path = tmp_path / "people.csv"
    frame.to_csv(path, index=False)
    assert (
        main(["bench", "linkage", "--file", str(path), "--truth", "person", "--id", "record_id", "--source", "system"])
        == 0
    )
    figures = json.loads(capsys.readouterr().out.strip())
    assert "system" not in figures["mapping"] and figures["true_pairs"] == 300
    assert figures["precision"] >= 0.98 and figures["recall"] >= 0.95
    frame.assign(system="crm").to_csv(path, index=False)
    with pytest.raises(UserError, match=r"--source system: the file holds one system only"):
        bench_file_args(path, ["--truth", "person", "--source", "system"])
    with pytest.raises(UserError, match=r"--source column 'sys' is not in the file"):
        bench_file_args(path, ["--truth", "person", "--source", "sys"])
