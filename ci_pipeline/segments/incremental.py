"""Record-level reuse of segment memberships between runs: only the customers whose inputs changed are evaluated.

Whether a customer is in a segment depends on that customer's row of each input (profile, measure values,
prediction fields, enrichment fields), its activity rows (the columns the activity conditions read), the run date
and the kept members of static segments. A run keeps, per customer, a digest of each of these and the membership
of every segment it evaluated; the next run computes the digests again (the activity rows' in one DuckDB
aggregation over the stored facts) and evaluates the segments only for the customers that are new or whose digests
differ, reading only their activity rows. The other customers keep their stored memberships; customers gone from
the profile are dropped. Member counts, history and the static state are then made from every customer's
membership, as a full run makes them.

A changed segments configuration, run date, package version, input or facts columns, kept static members (a
static segment refreshed or frozen for the first time) or state format, a missing or damaged state, or a full
refresh evaluates every customer, and says why.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

import ci_pipeline
from ci_pipeline.measures.conditions import column_kind
from ci_pipeline.measures.facts import INDEXED, StoredFacts
from ci_pipeline.measures.incremental import fact_digests
from ci_pipeline.run_state import META, read_run_state, write_run_state

#: Raised when what a state holds changes meaning: an older state is then not reused.
STATE_FORMAT = 1
STATE_DIR = "ci_pipeline/_state/segments"
#: Written last (:mod:`ci_pipeline.run_state`): a state without it (a run killed while writing) is no state.
META_FILE = f"{STATE_DIR}/{META}"


@dataclass
class SegmentsState:
    """What one run keeps for the next: per customer (sorted) the digests of its inputs and its membership of
    every segment evaluated (not kept frozen), and the fingerprint of what memberships depend on besides them."""

    digests: pd.DataFrame
    masks: pd.DataFrame
    meta: dict


def aligned(frame: pd.DataFrame | None, customers: pd.Index) -> pd.DataFrame | None:
    """One row per customer of ``customers`` (in their order): the first row of each CustomerId, an empty row for
    a customer the frame does not have; ``CustomerId`` holds the customer either way."""
    if frame is None:
        return None
    frame = frame.drop_duplicates("CustomerId")
    frame = frame.set_index(frame["CustomerId"].astype("string").rename(None)).reindex(customers)
    frame["CustomerId"] = pd.Series(customers, index=customers, dtype="string")
    return frame


def read_columns(frame: pd.DataFrame | None, names: set[str]) -> pd.DataFrame | None:
    """``CustomerId`` and the columns of ``frame`` that conditions read: ``names``, and for an enrichment field
    (``<enrichment>.<field>``) every field of its enrichment, since whether it has any decides how it is read."""
    if frame is None:
        return None
    prefixes = {name.split(".", 1)[0] + "." for name in names if "." in name}
    kept = [c for c in frame.columns if c == "CustomerId" or c in names or str(c).startswith(tuple(prefixes))]
    return frame[kept]


def fingerprint(section, as_of, tables: dict, columns: dict, facts: StoredFacts | None, frozen) -> str:
    """What memberships depend on besides each customer's rows: the segments configuration, the run date, the
    package and DuckDB versions, the columns of every input (``columns``), the kind of value (date, number, boolean,
    text) of each column the conditions read (``tables``, aligned to the customers: a missing row can make a true
    or false column text), the facts' columns and types, and the kept members of the static segments the evaluated
    ones refer to (``frozen``)."""
    parts = {
        "format": STATE_FORMAT,
        "version": ci_pipeline.__version__,
        "duckdb": duckdb.__version__,
        "config": section.model_dump(mode="json"),
        "as_of": str(as_of),
        "columns": columns,
        "kinds": {
            n: None if t is None else [[str(c), column_kind(t[c])] for c in t.columns] for n, t in tables.items()
        },
        "facts": None if facts is None else [[f.name, str(f.type)] for f in facts.dataset.schema],
        "frozen": {n: sorted(ids.astype(str)) for n, ids in sorted(frozen.items())},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def input_digests(
    customers: pd.Index, tables: dict[str, pd.DataFrame | None], facts: StoredFacts | None, columns: list[str]
) -> pd.DataFrame:
    """Per customer (``customers``, sorted), a digest of its row in each input table (aligned by
    :func:`aligned`) and of its activity rows' ``columns`` with their count (nothing without facts)."""
    out = pd.DataFrame({"CustomerId": pd.Series(customers, dtype="string")})
    for name, table in sorted(tables.items()):
        if table is not None:
            out[name] = _row_hashes(table)
    if facts is not None:
        wanted = [c for c in dict.fromkeys(["ActivityId", *INDEXED, *columns]) if c in facts.dataset.schema.names]
        found = fact_digests(facts.dataset, wanted).set_index("CustomerId")
        rows = found[["digest", "rows"]].astype("Int64").reindex(customers).fillna(-1)
        out["facts"], out["facts_rows"] = rows["digest"].to_numpy(np.int64), rows["rows"].to_numpy(np.int64)
    return out


def _row_hashes(table: pd.DataFrame) -> np.ndarray:
    """A hash of each row's values, as signed 64-bit integers; a column of values pandas cannot hash (lists,
    dicts) is hashed as its text."""
    try:
        hashed = pd.util.hash_pandas_object(table, index=False)
    except TypeError:
        hashed = pd.util.hash_pandas_object(table.astype("string"), index=False)
    return hashed.to_numpy().view(np.int64)


def reusable(state: SegmentsState | None, absent: str, meta: dict, evaluated: list[str]) -> tuple[str, pd.Index]:
    """Why the stored memberships cannot be reused ('' when they can), and the customers they cover."""
    if state is None:
        return absent, pd.Index([], dtype="string")
    if state.meta.get("fingerprint") != meta["fingerprint"]:
        return (
            "the segments configuration, the run date, the package version, an input's columns or the kept "
            "members of a static segment changed"
        ), pd.Index([], dtype="string")
    if not set(evaluated) <= set(state.masks.columns) - {"CustomerId"}:
        return "a segment to evaluate has no stored memberships", pd.Index([], dtype="string")
    return "", pd.Index(state.masks["CustomerId"].astype("string"))


def merged_masks(
    customers: pd.Index, state: SegmentsState, affected: pd.Index, fresh: dict[str, np.ndarray], names: list[str]
) -> dict[str, np.ndarray]:
    """The mask over ``customers`` of each segment of ``names``: the stored membership of the customers not
    ``affected`` (every one of them is in the state), ``fresh`` (masks over ``affected``, in order) for the others."""
    # One lookup of every customer among the stored ones, on Python strings (fast hashing), for every segment.
    ids = pd.Index(np.asarray(customers, dtype=object))
    row = pd.Index(np.asarray(state.masks["CustomerId"], dtype=object)).get_indexer(ids)
    at = ids.get_indexer(pd.Index(np.asarray(affected, dtype=object)))
    out = {}
    for name in names:
        mask = np.append(state.masks[name].to_numpy(bool), False)[row]
        mask[at] = fresh[name]
        out[name] = mask
    return out


def masks_frame(customers: pd.Index, masks: dict[str, np.ndarray]) -> pd.DataFrame:
    """The memberships a run keeps: ``CustomerId`` and one boolean column per segment."""
    frame = pd.DataFrame({"CustomerId": pd.Series(customers, dtype="string")})
    for name in sorted(masks):
        frame[name] = np.asarray(masks[name], dtype=bool)
    return frame


def write_state(lake, state: SegmentsState) -> None:
    """Store the state in the lake (:mod:`ci_pipeline.run_state`)."""
    write_run_state(lake, STATE_DIR, {"digests": state.digests, "memberships": state.masks}, state.meta)


def read_state(lake) -> tuple[SegmentsState | None, str]:
    """The last run's state, or None and why it cannot be used (then every customer is evaluated)."""
    found = read_run_state(lake, STATE_DIR, lambda meta: ["digests", "memberships"])
    if isinstance(found, str):
        return None, found
    meta, tables = found
    digests, masks = tables["digests"], tables["memberships"]
    if meta.get("format") != STATE_FORMAT or len(masks) != meta.get("customers") or len(digests) != len(masks):
        return None, f"the state at {lake.url(STATE_DIR)} has another format or is incomplete"
    digests["CustomerId"] = digests["CustomerId"].astype("string")
    return SegmentsState(digests, masks, meta), ""
