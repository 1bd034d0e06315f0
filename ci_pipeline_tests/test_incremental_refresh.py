"""Incremental refresh end to end on the sample: a sequence of increments applied by incremental runs, one of them
stopped by a failing step and run again, gives every output table (lake, sink, exports) equal to full refreshes on
the same data; unchanged tables are not read again; a deleted record that was a customer's only record removes the
customer; an hour folder arriving after a newer one is applied by last-modified."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pandas.api.types import is_datetime64_any_dtype, is_numeric_dtype

from ci_pipeline.cli import main
from ci_pipeline.dataverse.sqlite import SqliteSink

#: A ticket of a known customer (T0000002's requester) and one of someone new, and a survey of the first.
APPENDED_TICKETS = (
    "T9999991,Cindy Garcia,garcia.cindy@comcast.net,(874) 251-5793,2026-06-20 09:15:00,email,Refund request,"
    "Still waiting for my refund.,high,open\n"
    "T9999992,Zed Newperson,zed.newperson@example.org,(555) 010-0199,2026-06-21 10:00:00,email,Question,"
    "Do you ship abroad?,normal,open\n"
)
APPENDED_SURVEY = 'S9999991,T9999991,2026-06-22 08:00:00,1,"Too slow."\n'
#: Columns that name the run that wrote a row or when it ran: they differ between any two runs.
RUN_COLUMNS = {"RunId", "RunTime"}
#: The run's clock in a message ("is in the future (after <now>)").
CLOCK = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+\+00:00")
#: An export snapshot's folder and time are those of the run that wrote it.
SNAPSHOT = re.compile(r"\d{4}/\d{2}/\d{2}/\d{4}")
STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def _incremental_contacts(project: Path) -> None:
    """crm.contacts in the incremental layout: FullData plus one hour of changes."""
    path = project / "ci_pipeline.yaml"
    config = yaml.safe_load(path.read_text())
    table = config["sources"]["crm"]["tables"]["contacts"]
    table["path"] = "crm/contacts"
    table["incremental"] = {"last_modified": "modified_at"}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    (project / "crm" / "contacts" / "FullData").mkdir(parents=True)
    (project / "crm" / "contacts.csv").rename(project / "crm" / "contacts" / "FullData" / "contacts.csv")


def _record_level(project: Path) -> None:
    """Measures and segments compute only the customers a change reaches (off by default)."""
    path = project / "ci_pipeline.yaml"
    config = yaml.safe_load(path.read_text())
    config.setdefault("orchestration", {})["record_level_increments"] = True
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _hour(project: Path, hour: str, kind: str, text: str) -> None:
    folder = project / "crm" / "contacts" / "IncrementalData" / hour / kind
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part-0.csv").write_text(text)


def _upsert(row: pd.Series, city: str, modified: str) -> str:
    changed = row.copy()
    changed["city"], changed["modified_at"] = city, modified
    return changed.to_frame().T.to_csv(index=False)


def _run(project: Path, capsys, *extra: str) -> tuple[int, str]:
    code = main(["--config", str(project / "ci_pipeline.yaml"), "run", *extra])
    return code, capsys.readouterr().out


def _outputs(project: Path) -> dict:
    """Every stored table (sorted rows, run ids left out), the sink's content and every export file."""
    found = {}
    lake, here = project / "lake", project.resolve().as_posix()
    for file in sorted((lake / "ci_pipeline").rglob("*.parquet")):
        if "_state" in file.parts:
            continue
        found[str(file.relative_to(lake))] = _rows(pd.read_parquet(file), here)
    # Hidden files are the export's own records of the tables written ahead, which only the assets that ran write.
    files = [f for f in sorted((lake / "exports").rglob("*")) if f.is_file() and not f.name.startswith(".")]
    # Runs in the same minute share a snapshot folder, so how many older snapshots a lake keeps depends on the
    # clock: the latest snapshot (the one model.json points at) is what the two lakes must agree on.
    latest = max(m for f in files for m in SNAPSHOT.findall(str(f)))
    for file in files:
        stamps = SNAPSHOT.findall(str(file.relative_to(lake)))
        if stamps and stamps[0] != latest:
            continue
        name = SNAPSHOT.sub("<latest snapshot>", str(file.relative_to(lake)))
        text = file.read_text(encoding="utf-8")
        if file.suffix == ".json":
            # model.json names the run's time and the partitions' absolute locations (in this project's folder).
            text = STAMP.sub("<run time>", SNAPSHOT.sub("<latest snapshot>", text))
            text = text.replace(here, "<project>")
        found[name] = sorted(text.splitlines())
    with SqliteSink(project / "sink.sqlite") as sink:
        found["sink"] = sink.dump()
    return found


def _rows(frame: pd.DataFrame, here: str) -> tuple[tuple[str, ...], bytes]:
    """A stored table's columns and its rows in any order (run ids left out): each row's values as text, hashed, the
    hashes sorted (writing the sorted table as CSV instead took 4.7 rather than 3.4 CPU seconds per project)."""
    frame = frame.drop(columns=[c for c in frame.columns if c in RUN_COLUMNS])
    text = frame.astype(str)
    for column in frame.columns[[not (is_numeric_dtype(t) or is_datetime64_any_dtype(t)) for t in frame.dtypes]]:
        # A quarantined row names its source file by its absolute path, in this project's folder, and a message
        # may name the run's clock.
        text[column] = text[column].str.replace(CLOCK, "<run time>", regex=True).str.replace(here, "<project>")
    return tuple(text.columns), np.sort(pd.util.hash_pandas_object(text, index=False).to_numpy()).tobytes()


def _started(out: str) -> set[str]:
    return {a for line in out.splitlines() if "] start " in line for a in line.split("] start ", 1)[1].split(", ")}


@pytest.mark.slow
def test_increments_applied_incrementally_equal_full_refreshes(sample_copy, tmp_path, capsys, monkeypatch):
    incremental = sample_copy
    _incremental_contacts(incremental)
    _record_level(incremental)
    contacts = pd.read_csv(
        incremental / "crm/contacts/FullData/contacts.csv", dtype=str, keep_default_na=False, on_bad_lines="skip"
    )
    moved = contacts.iloc[10]
    _hour(incremental, "2026/01/02/12", "Upserts", _upsert(moved, "Newer Town", "01/02/2026 12:10:00"))
    code, out = _run(incremental, capsys)
    assert code == 0 and "no earlier run recorded in this lake: full refresh" in out

    # A customer whose only record is a CRM contact (not the contact changed above).
    identity = pd.read_parquet(incremental / "lake/ci_pipeline/unify/identity_map.parquet")
    sizes = identity.groupby("CustomerId")["AlternateValue"].transform("size")
    alone = identity[(sizes == 1) & (identity["DataSourceName"] == "crm")]
    alone = alone[alone["AlternateValue"] != moved["contact_id"]].sort_values("AlternateValue").iloc[0]
    full = tmp_path / "full"
    shutil.copytree(incremental, full, symlinks=True)

    for project in (incremental, full):
        # An hour older than the one applied already, written later; a deletion; a changed CSV file; appended
        # records with their activities: a ticket of a known customer and one of a new person, with a survey.
        _hour(project, "2026/01/02/09", "Upserts", _upsert(moved, "Older Town", "01/02/2026 09:10:00"))
        _hour(project, "2026/01/02/09", "Deletes", f"contact_id\n{alone['AlternateValue']}\n")
        surveys = project / "support" / "surveys.csv"
        surveys.write_text(surveys.read_text().replace(",3,", ",4,", 1) + APPENDED_SURVEY)
        tickets = project / "support" / "tickets.csv"
        tickets.write_text(tickets.read_text() + APPENDED_TICKETS)

    # The incremental run stops at the measures stage (as a killed run would), then runs again.
    from ci_pipeline.defs import measures

    # With record-level increments on (below), the stage's record-level entry is what runs.
    front = "compute_incremental"

    def stopped(*args, **kwargs):
        raise RuntimeError("the machine went down")

    with monkeypatch.context() as patched:
        patched.setattr(measures, front, stopped)
        code, out = _run(incremental, capsys)
    assert code == 1
    ingested = {a for a in _started(out) if a.split("/")[0] in {"crm", "ecommerce", "loyalty", "support"}}
    changed = {"crm/contacts", "support/surveys", "support/tickets"}
    assert ingested == changed | {f"{table}_corrupt" for table in changed}
    code, out = _run(incremental, capsys)
    assert code == 0, out
    rerun = _started(out)
    assert "measures/customer_measure" in rerun and any(a.startswith("publish/") for a in rerun), rerun
    assert not rerun & {"crm/contacts", "unify/customer_profile"}, "what the stopped run finished is not redone"
    code, out = _run(incremental, capsys)
    assert code == 0 and "nothing to run" in out and not _started(out)

    assert _run(full, capsys, "--full")[0] == 0
    # Measures and segments were computed again only for the customers the changes reached; the full refresh
    # computed everyone.
    for stage, counted in (("measures", "customers_computed"), ("segments", "customers_evaluated")):
        for project, incremental_run in ((incremental, True), (full, False)):
            meta = json.loads((project / f"lake/ci_pipeline/_state/{stage}/meta.json").read_text())["run"]
            assert meta["incremental"] is incremental_run, (stage, meta)
            assert (0 < meta[counted] < meta["customers"]) is incremental_run, (stage, meta)
    mine, theirs = _outputs(incremental), _outputs(full)
    assert sorted(mine) == sorted(theirs)
    differ = [name for name in mine if mine[name] != theirs[name]]
    assert not differ, "\n".join(differ)

    # The newer change stays; the customer of the deleted record is gone, and id_change says so.
    stored = pd.read_parquet(incremental / "lake/ci_pipeline/crm/contacts.parquet").set_index("contact_id")
    assert stored.loc[moved["contact_id"], "city"] == "Newer Town"
    changes = pd.read_parquet(incremental / "lake/ci_pipeline/unify/id_change.parquet")
    gone = changes[changes["OldCustomerId"] == alone["CustomerId"]]
    assert gone["Reason"].tolist() == ["removed"]
    profiles = pd.read_parquet(incremental / "lake/ci_pipeline/unify/customer_profile.parquet")
    assert alone["CustomerId"] not in set(profiles["CustomerId"])
    with SqliteSink(incremental / "sink.sqlite") as sink:
        published = sink.read("msdynci_customerprofile")
    assert alone["CustomerId"] not in set(published["msdynci_customerid"])
