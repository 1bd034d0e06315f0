"""SegmentMembership rows, member-count history, and static segment state."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ci_pipeline.arrow_text import text_isin
from ci_pipeline.outputs import SEGMENT_MEMBERSHIP_COLUMNS, with_ids

HISTORY_COLUMNS = ["RunTime", "Segment", "Members", "Added", "Removed"]
STATIC_COLUMNS = ["Segment", "CustomerId", "FrozenAt"]


def membership_table(
    customers: pd.Index, masks: dict[str, np.ndarray], provider: str, membership_type: str, list_name: str
) -> pd.DataFrame:
    """One row per customer in at least one segment; ``Segments`` is the sorted JSON list of segment names.

    The JSON text is built once per distinct combination of segments (usually far fewer than customers).
    The identifier and GUID come from the output contract (:func:`ci_pipeline.outputs.with_ids`).
    """
    names = sorted(masks)
    matrix = np.column_stack([np.asarray(masks[n], dtype=bool) for n in names]) if names else None
    members = matrix.any(axis=1) if matrix is not None else None
    # No segment, no customer, or segments that all selected no one (their rules read fields nobody has yet).
    if members is None or not members.any():
        return pd.DataFrame({c: pd.Series(dtype="string") for c in SEGMENT_MEMBERSHIP_COLUMNS})
    packed = np.packbits(matrix[members], axis=1)
    inverse, patterns = pd.factorize(np.array([row.tobytes() for row in packed], dtype=object))
    # The contract's JSON text: compact, non-ASCII kept (what json.dumps(sorted names, separators=(",", ":"),
    # ensure_ascii=False) gives).
    quoted = np.array([json.dumps(n, ensure_ascii=False) for n in names], dtype=object)
    bits = np.unpackbits(np.frombuffer(b"".join(patterns), dtype=np.uint8).reshape(len(patterns), -1), axis=1)
    # The names are sorted and quoted once.
    texts = ["[" + ",".join(quoted[np.flatnonzero(row)]) + "]" for row in bits[:, : len(names)]]
    ids = pd.Series(customers[members], dtype="string").reset_index(drop=True)
    content = pd.DataFrame(
        {
            "CustomerId": ids,
            "SegmentProvider": pd.Series(provider, index=ids.index, dtype="string"),
            "SegmentMembershipType": pd.Series(membership_type, index=ids.index, dtype="string"),
            "Segments": pd.Series(np.asarray(texts, dtype=object)[inverse.ravel()], dtype="string"),
        }
    )
    table = with_ids("SegmentMembership", content, Name=list_name)
    return table.sort_values("CustomerId", kind="stable").reset_index(drop=True)


def members_by_segment(membership: pd.DataFrame | None) -> dict[str, pd.Index]:
    """Segment name -> CustomerIds, read back from a SegmentMembership table."""
    if membership is None or membership.empty:
        return {}
    codes, uniques = pd.factorize(membership["Segments"])
    out: dict[str, list[np.ndarray]] = {}
    ids = membership["CustomerId"].astype("string").to_numpy()
    for code, text in enumerate(uniques):
        rows = ids[codes == code]
        for name in json.loads(text):
            out.setdefault(name, []).append(rows)
    return {name: pd.Index(np.concatenate(parts)) for name, parts in out.items()}


def history_rows(
    run_time: pd.Timestamp, customers: pd.Index, masks: dict[str, np.ndarray], previous: dict[str, pd.Index]
) -> pd.DataFrame:
    """Members, added and removed per segment since the previous run (removed counts vanished customers too)."""
    rows = []
    for name in sorted(set(masks) | set(previous)):
        now = customers[masks[name]] if name in masks else pd.Index([], dtype="string")
        before = previous.get(name, pd.Index([], dtype="string"))
        added = int((~text_isin(now, before)).sum())
        removed = int((~text_isin(before, now)).sum())
        rows.append((run_time, name, len(now), added, removed))
    frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    frame["RunTime"] = pd.to_datetime(frame["RunTime"], utc=True)
    frame["Segment"] = frame["Segment"].astype("string")
    return frame.astype({"Members": "int64", "Added": "int64", "Removed": "int64"})


def frozen_members(state: pd.DataFrame | None) -> dict[str, pd.Series]:
    """Static segment name -> kept CustomerIds, from the static state table."""
    if state is None or state.empty:
        return {}
    return {name: group["CustomerId"].astype("string") for name, group in state.groupby("Segment", sort=True)}


def follow_merges(
    state: pd.DataFrame | None, id_change: pd.DataFrame | None, current: pd.Series
) -> pd.DataFrame | None:
    """The kept members of static segments, each whose CustomerId a merge retired under the id its records joined.

    A merge (reason ``merged`` in ``unify/id_change``) retires an id and carries its records on under another, so the
    person is still there: a frozen segment keeps them under that id (the one that took most of the retired id's
    records; ties: the smallest), through any chain of merges since the segment was frozen. Ids whose customer is
    gone otherwise (``removed``) stay as they are and drop out with their customer. A survivor that is a member
    already is kept once.
    """
    if state is None or state.empty or id_change is None or id_change.empty:
        return state
    ids = state["CustomerId"].astype("string")
    gone = ~np.asarray(text_isin(ids, current.astype("string")), dtype=bool)
    if not gone.any():
        return state
    merged = id_change[id_change["Reason"] == "merged"].dropna(subset=["OldCustomerId", "NewCustomerId"])
    merged = merged.sort_values(
        ["OldCustomerId", "Records", "NewCustomerId"], ascending=[True, False, True], kind="stable"
    ).drop_duplicates("OldCustomerId")
    successor = dict(zip(merged["OldCustomerId"].astype(str), merged["NewCustomerId"].astype(str), strict=True))
    followed = []
    # Only the members whose id is gone: a few among the kept members.
    for cid in ids[gone].astype(str):
        seen = {cid}
        while cid in successor and successor[cid] not in seen:
            cid = successor[cid]
            seen.add(cid)
        followed.append(cid)
    out = state.copy()
    out.loc[gone, "CustomerId"] = followed
    out["CustomerId"] = out["CustomerId"].astype("string")
    out = out.drop_duplicates(["Segment", "CustomerId"], keep="first")
    return out.sort_values(["Segment", "CustomerId"], kind="stable").reset_index(drop=True)


def static_state(
    customers: pd.Index, masks: dict[str, np.ndarray], static: list[str], previous: pd.DataFrame | None, now
) -> pd.DataFrame:
    """The kept members of static segments: earlier state for segments already frozen, today's for new ones."""
    kept = previous[previous["Segment"].isin(static)] if previous is not None and not previous.empty else None
    frozen_names = set() if kept is None else set(kept["Segment"])
    parts = [] if kept is None else [kept]
    for name in sorted(set(static) - frozen_names):
        ids = customers[masks[name]]
        parts.append(pd.DataFrame({"Segment": name, "CustomerId": ids, "FrozenAt": now}))
    if not parts:
        return pd.DataFrame(
            {
                "Segment": pd.Series(dtype="string"),
                "CustomerId": pd.Series(dtype="string"),
                "FrozenAt": pd.Series(dtype="datetime64[ns, UTC]"),
            }
        )
    state = pd.concat(parts, ignore_index=True)
    state["Segment"] = state["Segment"].astype("string")
    state["CustomerId"] = state["CustomerId"].astype("string")
    state["FrozenAt"] = pd.to_datetime(state["FrozenAt"], utc=True)
    return state.sort_values(["Segment", "CustomerId"], kind="stable").reset_index(drop=True)[STATIC_COLUMNS]
