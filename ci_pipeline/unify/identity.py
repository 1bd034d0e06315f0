"""Stable CustomerIds carried forward from the identity map of the last run.

Rules (docs/config/unify.md, "CustomerId"):

- A new cluster's id is ``uuid5(NAMESPACE, "customer|" + "\\n".join(sorted member identifiers)).hex``, where a
  member identifier is ``source|table|key``: 32 hex digits that depend only on the members, never on row order.
  If that id was ever issued before (to another customer, or retired), ``"#1"``, ``"#2"``, ... is appended to the
  seed until it is unused, so an id is never reused for a different customer.
- Each previous id goes "home" to the new cluster holding most of its records (ties: the cluster whose first
  record comes first in table/key order).
- A cluster that is home to several previous ids keeps the oldest (issued in the earliest run; ties: smallest id);
  the others are retired with reason ``merged``.
- A cluster that is home to none gets a new id: reason ``split`` if it holds records of a previous customer (the
  biggest part of a split kept the old id), else ``new``.
- A previous id none of whose records remain is retired with reason ``removed``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ci_pipeline.outputs import NAMESPACE

IDENTITY_COLUMNS = ["DataSourceName", "EntityName", "AlternateValue", "CustomerId", "IdIssuedRun", "Run"]
ID_CHANGE_COLUMNS = ["Run", "RunId", "OldCustomerId", "NewCustomerId", "Reason", "Records"]


@dataclass(frozen=True)
class IdentityResult:
    """CustomerId per cluster label, the new identity map and the cumulative id change log."""

    ids: pd.Series  # label -> CustomerId
    identity_map: pd.DataFrame
    id_change: pd.DataFrame
    run: int


def new_customer_id(members: list[str], taken: set[str] | frozenset = frozenset()) -> str:
    """The deterministic id of a new cluster from its member identifiers (``source|table|key``)."""
    seed = "customer|" + "\n".join(sorted(members))
    candidate = uuid.uuid5(NAMESPACE, seed).hex
    n = 0
    while candidate in taken:
        n += 1
        candidate = uuid.uuid5(NAMESPACE, f"{seed}#{n}").hex
    return candidate


def empty_identity_map() -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype="Int64" if c in ("IdIssuedRun", "Run") else "string") for c in IDENTITY_COLUMNS}
    )


def empty_id_change() -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype="Int64" if c in ("Run", "Records") else "string") for c in ID_CHANGE_COLUMNS}
    )


def assign_ids(
    membership: pd.DataFrame,
    previous: pd.DataFrame | None,
    history: pd.DataFrame | None,
    run_id: str = "",
) -> IdentityResult:
    """Give every cluster a CustomerId, carrying ids forward from the previous identity map.

    Args:
        membership: one row per record: ``source, table, key, label`` (label = cluster, smaller = earlier).
        previous: the identity map of the last run (``IDENTITY_COLUMNS``), or None on the first run.
        history: the cumulative id change log so far (``ID_CHANGE_COLUMNS``), or None.
        run_id: the orchestrator's run id, written to the change log.
    """
    previous = empty_identity_map() if previous is None or previous.empty else previous
    history = empty_id_change() if history is None or history.empty else history
    run = int(previous["Run"].max()) + 1 if len(previous) else 1
    m = membership[["source", "table", "key", "label"]].copy()
    m["ident"] = m["source"].astype("string") + "|" + m["table"] + "|" + m["key"]
    prev = previous.assign(
        ident=previous["DataSourceName"] + "|" + previous["EntityName"] + "|" + previous["AlternateValue"]
    )[["ident", "CustomerId", "IdIssuedRun"]]
    m = m.merge(prev, on="ident", how="left")
    issued = prev.drop_duplicates("CustomerId").set_index("CustomerId")["IdIssuedRun"]

    known = m[m["CustomerId"].notna()]
    overlap = known.groupby(["CustomerId", "label"], sort=True).size().rename("n").reset_index()
    overlap = overlap.sort_values(["CustomerId", "n", "label"], ascending=[True, False, True], kind="stable")
    home = overlap.drop_duplicates("CustomerId")[["CustomerId", "label"]]
    home = home.assign(issued=home["CustomerId"].map(issued).astype("Int64"))
    home = home.sort_values(["label", "issued", "CustomerId"], kind="stable")
    keeper = home.drop_duplicates("label").set_index("label")["CustomerId"]
    retired = home[~home["CustomerId"].isin(keeper.values)]

    labels = np.unique(m["label"].to_numpy())
    ids = pd.Series(pd.NA, index=pd.Index(labels, name="label"), dtype="string")
    ids.loc[keeper.index] = keeper.astype("string")
    ids_issued = pd.Series(pd.NA, index=ids.index, dtype="Int64")
    ids_issued.loc[keeper.index] = keeper.map(issued).astype("Int64").to_numpy()

    need = ids.index[ids.isna()]
    changes = []
    if len(need):
        members = m[m["label"].isin(need)].sort_values(["label", "ident"])
        joined = members.groupby("label", sort=True)["ident"].agg(list)
        taken = (
            set(prev["CustomerId"].dropna())
            | set(history["OldCustomerId"].dropna())
            | set(history["NewCustomerId"].dropna())
        )
        fresh = []
        for idents in joined.to_numpy():
            new = new_customer_id(idents, taken)
            taken.add(new)
            fresh.append(new)
        ids.loc[joined.index] = fresh
        ids_issued.loc[joined.index] = run
        came_from = known[known["label"].isin(need)].groupby(["label", "CustomerId"], sort=True).size()
        for (label, old), n in came_from.items():
            changes.append((old, ids[label], "split", int(n)))
        split_labels = set(came_from.index.get_level_values(0)) if len(came_from) else set()
        counts = m.groupby("label").size()
        for label in need:
            if label not in split_labels:
                changes.append((pd.NA, ids[label], "new", int(counts[label])))
    moved = known.groupby("CustomerId").size()
    for old, label in zip(retired["CustomerId"], retired["label"], strict=True):
        changes.append((old, ids[label], "merged", int(moved[old])))
    gone = set(prev["CustomerId"].dropna()) - set(known["CustomerId"])
    gone_counts = prev.groupby("CustomerId").size()
    for old in sorted(gone):
        changes.append((old, pd.NA, "removed", int(gone_counts[old])))

    log = pd.DataFrame(changes, columns=["OldCustomerId", "NewCustomerId", "Reason", "Records"])
    log.insert(0, "RunId", run_id)
    log.insert(0, "Run", run)
    log = log.sort_values(["Reason", "OldCustomerId", "NewCustomerId"], kind="stable", na_position="first")
    log = log.astype({c: "string" for c in ("RunId", "OldCustomerId", "NewCustomerId", "Reason")})
    log = log.astype({"Run": "Int64", "Records": "Int64"})
    cumulative = pd.concat([history, log], ignore_index=True)[ID_CHANGE_COLUMNS] if len(log) else history

    identity = pd.DataFrame(
        {
            "DataSourceName": m["source"].astype("string"),
            "EntityName": m["table"].astype("string"),
            "AlternateValue": m["key"].astype("string"),
            "CustomerId": m["label"].map(ids).astype("string"),
            "IdIssuedRun": m["label"].map(ids_issued).astype("Int64"),
            "Run": pd.array([run] * len(m), dtype="Int64"),
        }
    ).sort_values(["DataSourceName", "EntityName", "AlternateValue"], kind="stable", ignore_index=True)
    return IdentityResult(ids=ids, identity_map=identity, id_change=cumulative.reset_index(drop=True), run=run)


def previous_ids(id_change: pd.DataFrame, current: pd.Series) -> pd.Series:
    """``PreviousCustomerId`` per current id: every id that was merged into it or split from it, transitively,
    semicolon-separated and sorted."""
    links = id_change[id_change["Reason"].isin(["merged", "split"])][["OldCustomerId", "NewCustomerId"]].dropna()
    result = {cid: set() for cid in current}
    if links.empty:
        return pd.Series(pd.NA, index=current.index, dtype="string")
    preds: dict[str, set[str]] = {}
    for old, new in zip(links["OldCustomerId"], links["NewCustomerId"], strict=True):
        preds.setdefault(new, set()).add(old)
    for cid in [c for c in result if c in preds]:
        seen, stack = set(), list(preds[cid])
        while stack:
            x = stack.pop()
            if x in seen or x == cid:
                continue
            seen.add(x)
            stack.extend(preds.get(x, ()))
        result[cid] = seen
    out = pd.Series([";".join(sorted(result[c])) for c in current], index=current.index, dtype="string")
    return out.where(out.str.len() > 0)
