"""Stable CustomerIds carried forward from the identity map of the last run.

Rules (docs/config/unify.md, "CustomerId"):

- A new cluster's id is ``uuid5(NAMESPACE, "customer|" + "\\n".join(sorted member identifiers)).hex``, where a
  member identifier is ``source|table|key``: 32 hex digits that depend only on the members, never on row order.
  If a customer of the last run holds that id (its records have changed since), ``"#1"``, ``"#2"``, ... is
  appended to the seed until the id is free; a retired id is issued again to the records it was issued to, so an
  id is never used for a different set of records than its first, and a merge undone restores the parted id.
- Each previous id goes "home" to the new cluster holding most of its records (ties: the cluster whose first
  record comes first in table/key order), unless a merge is undone: then to the cluster it was issued to, and the
  other cluster takes back its own retired id (:func:`_merges_undone`).
- A cluster that is home to several previous ids keeps the oldest (issued in the earliest run; ties: smallest id);
  the others are retired with reason ``merged``.
- A cluster that is home to none gets a new id: reason ``split`` if it holds records of a previous customer (the
  biggest part of a split kept the old id), else ``new``.
- A previous id none of whose records remain is retired with reason ``removed``.
- Records of a previous id that lives on elsewhere, now in a cluster keeping another previous id, moved between two
  customers that both keep their ids: reason ``moved`` (old id, new id, how many records), so every record whose
  CustomerId changed is in the log.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ci_pipeline.arrays import isin
from ci_pipeline.outputs import identifiers, uuid5_hex_digits
from ci_pipeline.unify.incremental import IDENTITY, previous_rows
from ci_pipeline.unify.text import arrow_strings, concat_strings, group_starts, join_runs, pandas_strings

IDENTITY_COLUMNS = ["DataSourceName", "EntityName", "AlternateValue", "CustomerId", "IdIssuedRun", "Run"]
ID_CHANGE_COLUMNS = ["Run", "RunId", "OldCustomerId", "NewCustomerId", "Reason", "Records"]


@dataclass(frozen=True)
class IdentityResult:
    """CustomerId per cluster label, the new identity map and the cumulative id change log."""

    ids: pd.Series  # label -> CustomerId
    identity_map: pd.DataFrame
    id_change: pd.DataFrame
    run: int


def _new_id_from_seed(seed: str, taken: set[str] | frozenset) -> str:
    """The uuid5 of ``seed``, or of ``seed#1``, ``seed#2``, ... the first that is not ``taken``."""
    candidate = uuid5_hex(seed)
    n = 0
    while candidate in taken:
        n += 1
        candidate = uuid5_hex(f"{seed}#{n}")
    return candidate


def uuid5_hex(name: str) -> str:
    """``uuid.uuid5(NAMESPACE, name).hex`` (new ids are issued in bulk by :func:`uuid5_hexes`)."""
    return uuid5_hex_digits([name]).tobytes().decode("ascii")


def empty_identity_map() -> pd.DataFrame:
    """An identity map of no records, with the columns and types of a stored one."""
    return pd.DataFrame(
        {c: pd.Series(dtype="Int64" if c in ("IdIssuedRun", "Run") else "string") for c in IDENTITY_COLUMNS}
    )


def empty_id_change() -> pd.DataFrame:
    """An id change log of no changes, with the columns and types of a stored one."""
    return pd.DataFrame(
        {c: pd.Series(dtype="Int64" if c in ("Run", "Records") else "string") for c in ID_CHANGE_COLUMNS}
    )


@dataclass(frozen=True)
class PreviousIds:
    """The CustomerIds of the last run's identity map as codes 0..P-1 in id order (so that "smallest id" is
    "smallest code"; -1: none), per row of the map, and the ids by code."""

    codes: np.ndarray
    text: pa.Array


def previous_id_codes(previous: pd.DataFrame) -> PreviousIds:
    """:class:`PreviousIds` of an identity map (sorting a million ids takes about a second: a caller with time
    to spare computes them ahead, as unification does while it prepares its records)."""
    codes, text = pd.factorize(previous["CustomerId"].astype("string"), sort=True)
    return PreviousIds(codes, arrow_strings(pd.Series(text, dtype="string")))


def assign_ids(
    membership: pd.DataFrame,
    previous: pd.DataFrame | None,
    history: pd.DataFrame | None,
    run_id: str = "",
    previous_row: np.ndarray | None = None,
    coded: PreviousIds | None = None,
) -> IdentityResult:
    """Give every cluster a CustomerId, carrying ids forward from the previous identity map.

    Identifiers and ids stay Arrow strings and are handled as integer codes: at a million customers, grouping,
    sorting and looking up Python strings would cost most of a nightly run's id phase.

    Args:
        membership: one row per record: ``source, table, key, label`` (label = cluster, smaller = earlier).
        previous: the identity map of the last run (``IDENTITY_COLUMNS``), or None on the first run.
        history: the cumulative id change log so far (``ID_CHANGE_COLUMNS``), or None.
        run_id: the orchestrator's run id, written to the change log.
        previous_row: :func:`previous_positions` of ``membership`` in ``previous``, when the caller has them.
        coded: :func:`previous_id_codes` of ``previous``, when the caller has them.
    """
    previous = empty_identity_map() if previous is None or previous.empty else previous
    history = empty_id_change() if history is None or history.empty else history
    run = int(previous["Run"].max()) + 1 if len(previous) else 1

    coded = previous_id_codes(previous) if coded is None or not len(previous) else coded
    prev_code, id_text = coded.codes, coded.text
    n_ids = len(id_text)
    issued = np.full(n_ids, np.inf)
    has = prev_code >= 0
    issued_runs = previous["IdIssuedRun"].astype("Float64").to_numpy(np.float64, na_value=np.inf)
    # Every record of an id carries the run it was issued in; the first one's is taken.
    first_codes, first_rows = np.unique(prev_code[has], return_index=True)
    issued[first_codes] = issued_runs[has][first_rows]

    found = previous_positions(membership, previous) if previous_row is None else previous_row
    found = np.full(len(membership), -1, np.int64) if found is None else np.asarray(found, np.int64)
    code = np.where(found >= 0, prev_code[np.maximum(found, 0)] if len(prev_code) else -1, -1)
    labels, label_pos = np.unique(membership["label"].to_numpy(np.int64), return_inverse=True)
    n_labels = len(labels)
    known = code >= 0

    id_c, id_l, n = _pair_counts(code[known], label_pos[known], n_labels)
    undone = _merges_undone(membership, label_pos, id_c, id_l, n, id_text, history)
    keeper_c, keeper_l, retired_c, _ = _homes(id_c, id_l, n, undone, issued)

    id_of_label = np.full(n_labels, -1, dtype=np.int64)
    id_of_label[keeper_l] = keeper_c
    need = np.flatnonzero(id_of_label < 0)
    fresh = pa.array([], pa.string())
    if len(need):
        need, seeds = _member_seeds(membership, label_pos, id_of_label[label_pos] < 0)
        fresh = _fresh_ids(seeds, id_text)
    cid = pa.concat_arrays([id_text.take(keeper_c).cast(pa.string()), fresh.cast(pa.string())])
    label_id = cid.take(np.argsort(np.concatenate([keeper_l, need]), kind="stable"))
    label_issued = np.full(n_labels, float(run))
    label_issued[keeper_l] = issued[keeper_c]

    counts = np.bincount(label_pos, minlength=n_labels)
    moved = np.bincount(code[known], minlength=n_ids)
    # Known records in a cluster with a new id: it was split off the ids they had.
    parted = known & (id_of_label[label_pos] < 0)
    split_c, split_l, split_n = _pair_counts(code[parted], label_pos[parted], n_labels)
    # Known records whose id lives on elsewhere, now in a cluster keeping another id: moved between two customers
    # that both keep their ids (neither merged nor split, yet these records' CustomerId changed).
    kept = np.zeros(max(n_ids, 1), dtype=bool)  # a slot even without previous ids: np.maximum(code, 0) reads it
    kept[keeper_c] = True
    shifted = known & kept[np.maximum(code, 0)] & (id_of_label[label_pos] >= 0) & (id_of_label[label_pos] != code)
    moved_c, moved_l, moved_n = _pair_counts(code[shifted], label_pos[shifted], n_labels)
    # Known records of a retired id in a cluster keeping an id: merged into that id (its home cluster, and any other
    # keeping one); those in clusters with a new id are logged as split above.
    retired = np.zeros(max(n_ids, 1), dtype=bool)
    retired[retired_c] = True
    merging = known & retired[np.maximum(code, 0)] & (id_of_label[label_pos] >= 0)
    merged_c, merged_l, merged_n = _pair_counts(code[merging], label_pos[merging], n_labels)
    brand_new = need[~isin(need, split_l)]
    gone = np.flatnonzero(moved == 0)
    total = np.bincount(prev_code[has], minlength=n_ids)
    changes = [
        ("split", id_text.take(split_c), label_id.take(split_l), split_n),
        ("new", pa.nulls(len(brand_new), pa.string()), label_id.take(brand_new), counts[brand_new]),
        ("merged", id_text.take(merged_c), label_id.take(merged_l), merged_n),
        ("moved", id_text.take(moved_c), label_id.take(moved_l), moved_n),
        ("removed", id_text.take(gone), pa.nulls(len(gone), pa.string()), total[gone]),
    ]
    log = _change_log(changes, run, run_id)
    cumulative = pd.concat([history, log], ignore_index=True)[ID_CHANGE_COLUMNS] if len(log) else history

    identity = _identity_map(membership, label_pos, label_id, label_issued, run)
    ids = pd.Series(pandas_strings(label_id), index=pd.Index(labels, name="label"))
    return IdentityResult(ids=ids, identity_map=identity, id_change=cumulative.reset_index(drop=True), run=run)


def previous_positions(records: pd.DataFrame, previous: pd.DataFrame | None) -> np.ndarray | None:
    """Per record (``source, table, key``), its row in the identity map ``previous`` (-1: a record it does not
    hold); None without one. A DuckDB join on the three columns (:func:`~ci_pipeline.unify.incremental.
    previous_rows`)."""
    if previous is None or not len(previous):
        return None
    last = previous[["DataSourceName", "EntityName", "AlternateValue"]].set_axis(IDENTITY, axis=1)
    return previous_rows(records, last)


def _member_seeds(membership: pd.DataFrame, label_pos: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, pa.Array]:
    """The clusters of the ``wanted`` records (a mask per record), sorted, and the seed of each one's new id: its
    members' identifiers, sorted, so that it does not depend on row order. Only these records' identifiers are
    made (after a first run, the few of new and split customers)."""
    members = np.flatnonzero(wanted)
    ident = arrow_strings(identifiers(*(membership[c].iloc[members] for c in ("source", "table", "key"))))
    o = pc.sort_indices(
        pa.table({"l": label_pos[members], "i": ident}), sort_keys=[("l", "ascending"), ("i", "ascending")]
    ).to_numpy()
    sorted_labels = label_pos[members][o]
    starts = group_starts([sorted_labels])
    return sorted_labels[starts], concat_strings("customer|", join_runs(ident.take(o), starts, "\n"))


def _merges_undone(
    membership: pd.DataFrame,
    label_pos: np.ndarray,
    id_c: np.ndarray,
    id_l: np.ndarray,
    n: np.ndarray,
    id_text: pa.Array,
    history: pd.DataFrame,
) -> np.ndarray:
    """Per (previous id, cluster) pair of :func:`_pair_counts`, whether it is a merge undone: the id's records are
    now in several clusters, this cluster's members are exactly those the id was issued to, and the cluster that
    holds most of its records can take back an id of its own that a merge retired (its members' id is in the
    change log and no customer holds it). Sending the id home by its records alone would give the parted customer's
    id to the other one (a person's id would name another person) and issue the parted one a new id; instead both
    get back the ids they had before the merge. Only the few clusters of split ids are hashed."""
    found = np.zeros(len(id_c), dtype=bool)
    spread = np.bincount(id_c, minlength=len(id_text))[id_c] > 1 if len(id_c) else found
    if not spread.any() or history.empty:
        return found
    wanted = np.zeros(int(label_pos.max()) + 1, dtype=bool)
    wanted[id_l[spread]] = True
    labels, seeds = _member_seeds(membership, label_pos, wanted[label_pos])
    own = uuid5_hexes(seeds.to_pylist())
    rows = np.flatnonzero(spread)
    own_of_pair = own.take(np.searchsorted(labels, id_l[rows]))
    origin = pc.equal(own_of_pair, id_text.take(id_c[rows]).cast(pa.string())).to_numpy(zero_copy_only=False)
    issued_before = pa.array(history["OldCustomerId"].dropna().unique().astype(str), pa.string())
    restorable = pc.is_in(own_of_pair, value_set=issued_before).to_numpy(zero_copy_only=False) & ~pc.is_in(
        own_of_pair, value_set=id_text.cast(pa.string())
    ).to_numpy(zero_copy_only=False)
    # The cluster each spread id would go home to by its records: most records, then the earlier cluster.
    o = np.lexsort((id_l[rows], -n[rows], id_c[rows]))
    first = o[group_starts([id_c[rows][o]])]
    majority_restorable = np.zeros(len(id_text), dtype=bool)
    majority_restorable[id_c[rows][first]] = restorable[first]
    found[rows] = origin & majority_restorable[id_c[rows]]
    return found


def _homes(
    id_c: np.ndarray, id_l: np.ndarray, n: np.ndarray, undone: np.ndarray, issued: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Which previous ids are kept, and by which cluster: ``(kept id, its cluster, retired id, its cluster)``, from
    the (id, cluster, records) pairs of :func:`_pair_counts`.

    Each previous id goes home to the cluster it was issued to where a merge is ``undone`` (:func:`_merges_undone`),
    else to the cluster holding most of its records (ties: the earlier cluster); a cluster that is home to several
    ids keeps the oldest (ties: the smallest id) and the others are retired.
    """
    o = np.lexsort((id_l, -n, ~undone, id_c))
    first = group_starts([id_c[o]])
    home_c, home_l = id_c[o][first], id_l[o][first]
    o = np.lexsort((home_c, issued[home_c], home_l))
    home_c, home_l = home_c[o], home_l[o]
    keep = np.zeros(len(home_l), dtype=bool)
    keep[group_starts([home_l])] = True
    return home_c[keep], home_l[keep], home_c[~keep], home_l[~keep]


def _change_log(changes: list[tuple], run: int, run_id: str) -> pd.DataFrame:
    """This run's id changes (``ID_CHANGE_COLUMNS``) from ``(reason, old ids, new ids, records)`` per reason,
    sorted by reason, old id and new id (missing ids first)."""
    no_id = pa.nulls(0, pa.string())
    log = pa.table(
        {
            "OldCustomerId": pa.concat_arrays([c[1].cast(pa.string()) for c in changes] or [no_id]),
            "NewCustomerId": pa.concat_arrays([c[2].cast(pa.string()) for c in changes] or [no_id]),
            "Reason": pa.array(np.repeat([c[0] for c in changes], [len(c[3]) for c in changes]), pa.string()),
            "Records": pa.array(np.concatenate([np.asarray(c[3], np.int64) for c in changes]), pa.int64()),
        }
    )
    log = log.take(
        pc.sort_indices(
            log,
            sort_keys=[(c, "ascending", "at_start") for c in ("Reason", "OldCustomerId", "NewCustomerId")],
        )
    )
    return pd.DataFrame(
        {
            "Run": pd.array([run] * log.num_rows, dtype="Int64"),
            "RunId": pd.array([run_id] * log.num_rows, dtype="string"),
            "OldCustomerId": pandas_strings(log["OldCustomerId"]),
            "NewCustomerId": pandas_strings(log["NewCustomerId"]),
            "Reason": pandas_strings(log["Reason"]),
            "Records": pd.array(log["Records"].to_numpy(), dtype="Int64"),
        }
    )


def _identity_map(
    membership: pd.DataFrame, label_pos: np.ndarray, label_id: pa.Array, label_issued: np.ndarray, run: int
) -> pd.DataFrame:
    """The identity map (``IDENTITY_COLUMNS``): each record's CustomerId and the run it was issued in (those of
    its cluster, ``label_pos``), sorted by source, table and key."""
    source, table, key = (arrow_strings(membership[c]) for c in ("source", "table", "key"))
    o = pc.sort_indices(
        pa.table({"s": source, "t": table, "k": key}),
        sort_keys=[("s", "ascending"), ("t", "ascending"), ("k", "ascending")],
    ).to_numpy()
    return pd.DataFrame(
        {
            "DataSourceName": pandas_strings(source.take(o)),
            "EntityName": pandas_strings(table.take(o)),
            "AlternateValue": pandas_strings(key.take(o)),
            "CustomerId": pandas_strings(label_id.take(label_pos[o])),
            "IdIssuedRun": pd.Series(label_issued[label_pos[o]]).replace(np.inf, np.nan).astype("Int64").array,
            "Run": pd.array(np.full(len(o), run, dtype=np.int64), dtype="Int64"),
        }
    )


def _fresh_ids(seeds: pa.Array, id_text: pa.Array) -> pa.Array:
    """uuid5 of each seed (a cluster's members, sorted). An id that a customer of the last run holds (one that has
    gained or lost records since it was issued) is replaced via :func:`_new_id_from_seed`; a retired one is issued
    again, since it was issued to exactly these records: a merge undone (a wrong link mended, the match method
    switched back) gives the parted customer its id back rather than a new one."""
    fresh = uuid5_hexes(seeds.to_pylist())
    live = id_text.cast(pa.string())
    clash = np.flatnonzero(pc.is_in(fresh, value_set=live).to_numpy(zero_copy_only=False))
    if not len(clash):
        return fresh
    values = fresh.to_pylist()
    used = set(live.to_pylist()) | set(values)
    for i in clash:
        values[i] = _new_id_from_seed(seeds[int(i)].as_py(), used)
        used.add(values[i])
    return pa.array(values, pa.string())


def uuid5_hexes(names: list[str]) -> pa.Array:
    """:func:`uuid5_hex` of many names, in bulk (:func:`ci_pipeline.outputs.uuid5_hex_digits`)."""
    if not names:
        return pa.array([], pa.string())
    return pa.array(uuid5_hex_digits(names).view("S32").ravel(), type=pa.binary(32)).cast(pa.string())


def _pair_counts(codes: np.ndarray, label_pos: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (code, label) pairs, sorted, with how many records each has."""
    pairs, n = np.unique(codes.astype(np.int64) * max(n_labels, 1) + label_pos, return_counts=True)
    return pairs // max(n_labels, 1), pairs % max(n_labels, 1), n


def previous_ids(id_change: pd.DataFrame, current: pd.Series) -> pd.Series:
    """``PreviousCustomerId`` per current id: every id that was merged into it or split from it, transitively,
    semicolon-separated and sorted. Only ids with such a history are visited: a few among millions."""
    links = id_change[id_change["Reason"].isin(["merged", "split"])][["OldCustomerId", "NewCustomerId"]].dropna()
    out = pd.Series(pd.NA, index=current.index, dtype="string")
    if links.empty:
        return out
    preds: dict[str, set[str]] = {}
    for old, new in zip(links["OldCustomerId"], links["NewCustomerId"], strict=True):
        preds.setdefault(new, set()).add(old)
    hit = np.flatnonzero(current.astype("string").isin(list(preds)).to_numpy(bool))
    values = []
    for cid in current.iloc[hit]:
        seen, stack = set(), list(preds[cid])
        while stack:
            x = stack.pop()
            if x in seen or x == cid:
                continue
            seen.add(x)
            stack.extend(preds.get(x, ()))
        values.append(";".join(sorted(seen)) or pd.NA)
    out.iloc[hit] = pd.array(values, dtype="string")
    return out
