"""Generate the sample data set: four sources in four formats, a matching configuration and the ground truth."""

from __future__ import annotations

import json
import math
import os
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from tqdm import tqdm

from ci_pipeline.errors import UserError
from ci_pipeline.export.cdm import CSV_SETTINGS
from ci_pipeline.generate import behaviour, faults, tables
from ci_pipeline.generate.noise import take
from ci_pipeline.generate.pools import CATALOG, build_pools, product_catalog
from ci_pipeline.generate.population import CUSTOMER_SOURCES, SEGMENTS, build_people

TEMPLATES = Path(__file__).resolve().parent / "templates"
#: Configuration sections in the order they are written; each stage owns ``templates/<section>.yaml``.
SECTIONS = (
    "sources",
    "unify",
    "activities",
    "measures",
    "predictions",
    "enrich",
    "segments",
    "publish",
    "orchestration",
)
CONFIG_FILE = "ci_pipeline.yaml"
DEFAULT_AS_OF = "2026-06-30"
#: Rows per loyalty CSV partition; every entity gets at least two partitions.
PARTITION_ROWS = 250_000
#: Scales orders, sessions and points per person (tuned so 2,000 people give about 8k orders).
ACTIVITY_VOLUME = 0.8

_HEADER = """\
# Configuration of the generated sample data set, written by `ci-pipeline generate`.
# It is assembled from ci_pipeline/generate/templates/<section>.yaml; change those, not this file.
name: ci_pipeline
lake:
  url: lake
"""


def assemble_config() -> str:
    """The sample configuration: a header plus every section template that exists, in :data:`SECTIONS` order."""
    parts = [_HEADER]
    for section in SECTIONS:
        template = TEMPLATES / f"{section}.yaml"
        if template.exists():
            parts.append(template.read_text(encoding="utf-8").rstrip("\n") + "\n")
    return "\n".join(parts)


def write_config(out: str | os.PathLike) -> Path:
    """Write ``<out>/ci_pipeline.yaml`` from the templates (data files are left as they are)."""
    folder = _output_folder(out)
    target = folder / CONFIG_FILE
    _atomic_write(target, assemble_config().encode("utf-8"))
    return target


def _output_folder(out: str | os.PathLike) -> Path:
    folder = Path(out).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"--out {folder}: cannot write there ({exc.strerror or exc}); choose a folder you can write to"
        ) from None
    return folder


def _atomic_write(target: Path, payload: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(payload)
    partial.replace(target)


def _write_csv(frame: pd.DataFrame, target: Path, header: bool = True) -> None:
    text = frame.to_csv(index=False, header=header, lineterminator="\n")
    _atomic_write(target, text.encode("utf-8"))


def _write_partition(frame: pd.DataFrame, target: Path) -> None:
    # Headerless, every text value quoted (the CDM "QuoteAlways" style), written by Arrow for speed.
    buffer = pa.BufferOutputStream()
    pa_csv.write_csv(
        pa.Table.from_pandas(frame, preserve_index=False),
        buffer,
        pa_csv.WriteOptions(include_header=False, quoting_style="needed"),
    )
    _atomic_write(target, buffer.getvalue().to_pybytes())


def _write_parquet(frame: pd.DataFrame, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), partial, compression="zstd")
    partial.replace(target)


class ParquetChunks:
    """One Parquet file written frame by frame (one row group each), renamed into place when complete."""

    def __init__(self, target: Path):
        self.target = target
        self.partial = target.with_name(f".{target.name}.partial")
        self.writer: pq.ParquetWriter | None = None

    def write(self, frame: pd.DataFrame) -> None:
        """Append a frame; every frame must have the same columns and types."""
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.writer is None:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.partial, table.schema, compression="zstd")
        self.writer.write_table(table)

    def __enter__(self) -> ParquetChunks:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if self.writer is not None:
            self.writer.close()
            if kind is None:
                self.partial.replace(self.target)
            else:
                self.partial.unlink(missing_ok=True)


def parse_as_of(value: str) -> str:
    """Check an ``--as-of`` date (ISO ``YYYY-MM-DD``) and return it."""
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise UserError(f"--as-of {value!r}: not a date; write it as YYYY-MM-DD, e.g. 2026-06-30") from None


def generate(
    people: int, seed: int, out: str | os.PathLike, as_of: str = DEFAULT_AS_OF, progress: bool | None = None
) -> dict[str, int]:
    """Write the sample data set, its configuration and the ground truth to ``out``.

    Args:
        people: how many real people to simulate (each appears in one to three sources).
        seed: random seed; the same seed writes the same data.
        out: output folder (created if missing).
        as_of: ISO date on which all activity ends.
        progress: show a progress bar; default: for large runs when stderr is a terminal.

    Returns:
        Rows written per ``<source>.<table>``.

    Examples:
        >>> generate(people=200, seed=7, out="/tmp/sample")  # doctest: +SKIP
    """
    if people < 1:
        raise UserError(f"--people {people}: must be at least 1")
    as_of = parse_as_of(as_of)
    folder = _output_folder(out)
    end_day = int(np.datetime64(as_of, "D").astype(np.int64))
    if progress is None:
        progress = people >= 50_000 and sys.stderr.isatty()
    children = np.random.SeedSequence(seed).spawn(14)
    streams = iter(children[:12])
    # Faults draw from their own stream, so the genuine rows are the same with or without them.
    fault_rng = np.random.default_rng(children[12])
    # So does when customers buy, browse and return, so the people and customer records do not depend on it.
    behaviour_rng = np.random.default_rng(children[13])
    injected: list[pd.DataFrame] = []

    def rng() -> np.random.Generator:
        return np.random.default_rng(next(streams))

    steps = ["people", "crm", "ecommerce", "orders", "sessions", "loyalty", "support", "ground truth", "config"]
    bar = tqdm(total=len(steps), desc="generate", unit="step", disable=not progress, file=sys.stderr)

    def step(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update(1)

    pools = build_pools(seed)
    catalog = product_catalog()
    person = build_people(people, pools, rng(), as_of)
    emails = tables.person_emails(person, pools)
    step("people")
    counts: dict[str, int] = {}
    truth: list[pd.DataFrame] = []

    def record(source: str, table: str, frame: pd.DataFrame, key: str, persons: np.ndarray) -> None:
        counts[f"{source}.{table}"] = len(frame)
        truth.append(
            pd.DataFrame(
                {
                    "source": pd.Series([source] * len(frame), dtype="str"),
                    "table": pd.Series([table] * len(frame), dtype="str"),
                    "key": frame[key].reset_index(drop=True),
                    "person_id": person["person_id"].iloc[persons].reset_index(drop=True),
                }
            )
        )

    contacts, persons = tables.crm_contacts(person, pools, emails, rng(), end_day)
    record("crm", "contacts", contacts, "contact_id", persons)
    _write_with_faults(faults.crm_contacts(contacts, fault_rng), folder / "crm" / "contacts.csv", counts, injected)
    step("crm")

    customers, persons, signup = tables.ecommerce_customers(person, pools, emails, rng(), end_day)
    _write_parquet(customers, folder / "ecommerce" / "customers.parquet")
    record("ecommerce", "customers", customers, "customer_id", persons)
    step("ecommerce")
    accounts = behaviour.draw_accounts(person.iloc[persons].reset_index(drop=True), signup, behaviour_rng, end_day)
    with ParquetChunks(folder / "ecommerce" / "order_lines.parquet") as lines:
        orders, counts["ecommerce.order_lines"], purchases = tables.orders_and_lines(
            person, customers, persons, accounts, rng(), behaviour_rng, catalog, end_day, lines.write, ACTIVITY_VOLUME
        )
    orders, order_faults = faults.ecommerce_orders(orders, len(customers), fault_rng)
    injected.append(order_faults)
    _write_parquet(orders, folder / "ecommerce" / "orders.parquet")
    counts["ecommerce.orders"] = len(orders)
    del orders
    step("orders")
    sessions = tables.web_sessions(customers, accounts, purchases, signup, rng(), catalog, end_day, ACTIVITY_VOLUME)
    _write_parquet(sessions, folder / "ecommerce" / "web_sessions.parquet")
    counts["ecommerce.web_sessions"] = len(sessions)
    del sessions, customers
    step("sessions")

    members, persons, joined = tables.loyalty_members(person, pools, emails, rng(), end_day)
    points = tables.loyalty_points(person, members, persons, joined, rng(), end_day, ACTIVITY_VOLUME)
    write_cdm_folder(folder / "loyalty", {"Members": members, "Points": points}, as_of)
    record("loyalty", "members", members, "member_id", persons)
    counts["loyalty.points"] = len(points)
    del members, points
    step("loyalty")

    tickets, persons, opened = tables.support_tickets(person, pools, emails, rng(), catalog, end_day)
    survey = tables.surveys(person, tickets, persons, opened, rng(), end_day)
    _write_csv(tickets, folder / "support" / "tickets.csv")
    record("support", "tickets", tickets, "ticket_id", persons)
    survey_faults = faults.support_surveys(survey, len(tickets), fault_rng)
    _write_with_faults(survey_faults, folder / "support" / "surveys.csv", counts, injected)
    step("support")

    records = pd.concat(truth, ignore_index=True)
    _write_parquet(records, folder / "ground_truth" / "records.parquet")
    _write_parquet(people_facts(person, pools, records), folder / "ground_truth" / "people.parquet")
    _write_parquet(fault_table(injected), folder / "ground_truth" / "faults.parquet")
    step("ground truth")
    write_config(folder)
    step("config")
    bar.close()
    return counts


def _write_with_faults(table: faults.CsvFaults, target: Path, counts: dict, injected: list) -> None:
    text, records = table.render()
    _atomic_write(target, text.encode("utf-8"))
    counts[f"{table.source}.{table.table}"] = table.n + len(records)
    injected.append(records)


def fault_table(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Every injected fault: source, table, line (CSV files; 1 = header), key as written, kind, stage, detail."""
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=faults.FAULT_COLUMNS)
    types = {c: "str" for c in faults.FAULT_COLUMNS} | {"line": "Int64", "key": "string"}
    return frame.astype(types).reset_index(drop=True)


def people_facts(person: pd.DataFrame, pools, records: pd.DataFrame) -> pd.DataFrame:
    """Person-level truth: identity, household, look-alikes, segment, churn, preferences, where they appear."""
    ids = person["person_id"]
    lookalike = person["lookalike_of"].to_numpy()
    category_names = np.array(list(CATALOG), dtype=object)
    brand_names = np.array([b for brands, _, _ in CATALOG.values() for b in brands], dtype=object)
    fav_cat = person["fav_cat0"].to_numpy()
    in_sources = np.stack([person[f"in_{s}"].to_numpy() for s in CUSTOMER_SOURCES], axis=1)
    source_names = pd.Series([""] * len(person), dtype="str")
    for j, source in enumerate(CUSTOMER_SOURCES):
        add = in_sources[:, j]
        source_names = source_names.mask(add, source_names + np.where(source_names == "", "", ",") + source)
    n_records = records.groupby("person_id").size().reindex(ids, fill_value=0).to_numpy()

    def day(values: np.ndarray, known: np.ndarray | None = None) -> pd.Series:
        dates = pd.Series(pd.to_datetime(values, unit="D").date)
        return dates if known is None else dates.where(known, None)

    return pd.DataFrame(
        {
            "person_id": ids,
            "household_id": "H" + pd.Series(person["household"].to_numpy() + 1).astype("str").str.zfill(7),
            "role": pd.Series(person["role"].to_numpy(), dtype="str"),
            "gender": pd.Series(person["gender"].to_numpy(), dtype="str"),
            "first_name": take(pools.first_names, person["first"].to_numpy()),
            "last_name": take(pools.last_names, person["last"].to_numpy()),
            "previous_last_name": take(pools.last_names, person["previous_last"].to_numpy()),
            "birth_date": day(person["birth"].to_numpy()),
            "lookalike_of": ids.iloc[np.maximum(lookalike, 0)].reset_index(drop=True).where(lookalike >= 0),
            "moved": person["moved"].to_numpy(),
            "segment": take(np.array(SEGMENTS, dtype=object), person["segment"].to_numpy()),
            "order_rate": person["order_rate"].to_numpy(),
            "customer_since": day(person["customer_since"].to_numpy()),
            "churned": person["churned"].to_numpy(),
            "churn_date": day(person["churn_day"].to_numpy(), person["churned"].to_numpy()),
            "favourite_category": take(category_names, fav_cat),
            "favourite_brand": take(brand_names, fav_cat * 5 + person["fav_brand0"].to_numpy()),
            "brand_loyalty": person["brand_loyalty"].to_numpy(),
            "sources": source_names,
            "n_records": n_records,
        }
    )


CDM_DESCRIPTIONS = {
    "Members": "Loyalty programme members; one row per membership.",
    "Points": "Loyalty points; one row per points transaction (earned or redeemed).",
}
_CDM_TYPES = {"points": "int64", "birth_date": "date", "joined_on": "date", "transaction_date": "dateTime"}


def write_cdm_folder(folder: Path, entities: dict[str, pd.DataFrame], as_of: str) -> None:
    """Write a CDM folder: headerless CSV partitions per entity, then ``model.json`` describing them.

    Partition locations are relative to the folder holding ``model.json`` (``Members/Members-part-000.csv``).
    Files land before ``model.json`` is replaced, so a reader never sees it point at missing files.
    """
    model_entities = []
    for name, frame in entities.items():
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        for stale in target.glob(f"{name}-part-*.csv"):
            stale.unlink()
        parts = max(2, math.ceil(len(frame) / PARTITION_ROWS))
        partitions = []
        for i, bounds in enumerate(np.array_split(np.arange(len(frame)), parts)):
            file = f"{name}-part-{i:03d}.csv"
            _write_partition(frame.iloc[bounds], target / file)
            partitions.append(
                {
                    "name": f"{name}-part-{i:03d}",
                    "location": f"{name}/{file}",
                    "refreshTime": f"{as_of}T00:00:00Z",
                    "fileFormatSettings": dict(CSV_SETTINGS),
                }
            )
        model_entities.append(
            {
                "$type": "LocalEntity",
                "name": name,
                "description": CDM_DESCRIPTIONS.get(name, ""),
                "attributes": [{"name": col, "dataType": _CDM_TYPES.get(col, "string")} for col in frame.columns],
                "partitions": partitions,
            }
        )
    model = {
        "name": "loyalty",
        "description": "Loyalty programme export (CDM folder).",
        "version": "1.0",
        "modifiedTime": f"{as_of}T00:00:00Z",
        "annotations": [
            {"name": "ci:PartitionLocations", "value": "relative to the folder that holds this model.json"}
        ],
        "entities": model_entities,
    }
    _atomic_write(folder / "model.json", (json.dumps(model, indent=2) + "\n").encode("utf-8"))
