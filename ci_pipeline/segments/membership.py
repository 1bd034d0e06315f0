"""SegmentMembership rows, member-count history, and static segment state."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ci_pipeline.arrow_text import text_isin
from ci_pipeline.outputs import SEGMENT_MEMBERSHIP_COLUMNS, with_ids

HISTORY_COLUMNS = ["RunTime", "Segment", "Members", "Added", "Removed"]
#: ``CustomerId`` is the member now; ``FrozenCustomerId`` the id it was frozen under (see :func:`follow_retired_ids`).
STATIC_COLUMNS = ["Segment", "CustomerId", "FrozenAt", "FrozenCustomerId"]


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


def run_sizes(history: pd.DataFrame) -> pd.DataFrame:
    """Per segment of the latest run in ``history`` (:data:`HISTORY_COLUMNS`): ``Segment``, ``Members``, ``Added``,
    ``Removed`` and ``Change``, the members since the run before (a segment it did not have grew from 0; null when
    there was no run before).

    Examples:
        >>> t1, t2 = pd.Timestamp("2026-06-01", tz="UTC"), pd.Timestamp("2026-06-02", tz="UTC")
        >>> history = pd.DataFrame(
        ...     [(t1, "a", 5, 5, 0), (t2, "a", 7, 3, 1), (t2, "b", 2, 2, 0)], columns=HISTORY_COLUMNS
        ... )
        >>> run_sizes(history)["Change"].tolist()
        [2, 2]
    """
    runs = np.sort(history["RunTime"].unique())
    if not len(runs):
        return pd.DataFrame(columns=["Segment", "Members", "Added", "Removed", "Change"])
    latest = history[history["RunTime"] == runs[-1]].reset_index(drop=True)
    before = history[history["RunTime"] == runs[-2]] if len(runs) > 1 else history.iloc[:0]
    earlier = pd.Series(before["Members"].to_numpy(), index=before["Segment"].astype(str).to_numpy())
    previous = earlier.reindex(latest["Segment"].astype(str).to_numpy())
    previous = pd.array(previous.fillna(0).to_numpy() if len(runs) > 1 else previous.to_numpy(), dtype="Int64")
    change = pd.array(latest["Members"].to_numpy(), dtype="Int64") - previous
    return latest[["Segment", "Members", "Added", "Removed"]].assign(Change=change)


def frozen_members(state: pd.DataFrame | None) -> dict[str, pd.Series]:
    """Static segment name -> kept CustomerIds, from the static state table."""
    if state is None or state.empty:
        return {}
    # Two members frozen apart may be one customer now (a merge): a member once.
    groups = state.groupby("Segment", sort=True)
    return {name: group["CustomerId"].astype("string").drop_duplicates() for name, group in groups}


def follow_retired_ids(
    state: pd.DataFrame | None, id_change: pd.DataFrame | None, current: pd.Series
) -> pd.DataFrame | None:
    """The kept members of static segments, each under the CustomerId that holds their records now.

    A member is kept by the id it was frozen under (``FrozenCustomerId``). While that id is a customer, it is the
    member. When unification retired it (``unify/id_change``), the person is still there: the member is the id that
    took most of its records in the run that retired it (``merged`` into another customer or ``split`` off into a new
    one; ties: the smallest id), followed the same way if that one was retired in turn. An id whose last change was
    ``removed`` stays as it is and drops out with its customer. Resolved from the frozen id every run, a merge undone
    (the frozen id given back to its records) gives the membership back to them, not to the other person.
    """
    if state is None or state.empty:
        return state
    out = state.copy()
    frozen = out["FrozenCustomerId"] if "FrozenCustomerId" in out else out["CustomerId"]
    out["FrozenCustomerId"] = frozen.astype("string")
    gone = ~np.asarray(text_isin(out["FrozenCustomerId"], current.astype("string")), dtype=bool)
    successor = _last_successors(id_change) if gone.any() and id_change is not None else {}
    followed = []
    # Only the members whose frozen id is gone: a few among the kept members.
    for cid in out.loc[gone, "FrozenCustomerId"].astype(str):
        seen = {cid}
        while successor.get(cid) and successor[cid] not in seen:
            cid = successor[cid]
            seen.add(cid)
        followed.append(cid)
    out["CustomerId"] = out["FrozenCustomerId"]
    out.loc[gone, "CustomerId"] = followed
    out["CustomerId"] = out["CustomerId"].astype("string")
    return out.sort_values(["Segment", "CustomerId", "FrozenCustomerId"], kind="stable").reset_index(drop=True)[
        STATIC_COLUMNS
    ]


def read_retired_ids(lake, path: str) -> pd.DataFrame | None:
    """The rows of unification's id log (``unify/id_change`` at ``path``) that retired an id, with what
    :func:`follow_retired_ids` reads; None before unification logged any."""
    import pyarrow.compute as pc

    if not lake.exists(path):
        return None
    columns = ["Run", "OldCustomerId", "NewCustomerId", "Reason", "Records"]
    retired = pc.field("Reason").isin(["merged", "split", "removed"])
    return lake.dataset(path).to_table(columns=columns, filter=retired).to_pandas()


def _last_successors(id_change: pd.DataFrame) -> dict[str, str | None]:
    """Retired id -> the id that took most of its records in the last run that changed it (None: removed then)."""
    log = id_change[id_change["Reason"].isin(["merged", "split", "removed"])]
    if log.empty:
        return {}
    last = log.groupby("OldCustomerId", sort=False)["Run"].transform("max")
    log = log[log["Run"] == last].sort_values(
        ["OldCustomerId", "Records", "NewCustomerId"], ascending=[True, False, True], kind="stable", na_position="last"
    )
    # A removed row has no new id: it wins only where nothing of the id lives on.
    log = log.drop_duplicates("OldCustomerId")
    new = log["NewCustomerId"].astype(object).where(log["NewCustomerId"].notna(), None)
    return dict(zip(log["OldCustomerId"].astype(str), new, strict=True))


def static_state(
    customers: pd.Index, masks: dict[str, np.ndarray], static: list[str], previous: pd.DataFrame | None, now
) -> pd.DataFrame:
    """The kept members of static segments: earlier state for segments already frozen (as :func:`follow_retired_ids`
    resolved it), today's for new ones."""
    kept = previous[previous["Segment"].isin(static)] if previous is not None and not previous.empty else None
    frozen_names = set() if kept is None else set(kept["Segment"])
    parts = [] if kept is None else [kept]
    for name in sorted(set(static) - frozen_names):
        ids = customers[masks[name]]
        parts.append(pd.DataFrame({"Segment": name, "CustomerId": ids, "FrozenAt": now, "FrozenCustomerId": ids}))
    if not parts:
        return pd.DataFrame(
            {
                "Segment": pd.Series(dtype="string"),
                "CustomerId": pd.Series(dtype="string"),
                "FrozenAt": pd.Series(dtype="datetime64[ns, UTC]"),
                "FrozenCustomerId": pd.Series(dtype="string"),
            }
        )
    state = pd.concat(parts, ignore_index=True)
    for column in ("Segment", "CustomerId", "FrozenCustomerId"):
        # A state written before FrozenCustomerId was kept: its members were frozen under the ids it holds.
        state[column] = (state[column] if column in state else state["CustomerId"]).astype("string")
    state["FrozenCustomerId"] = state["FrozenCustomerId"].fillna(state["CustomerId"])
    state["FrozenAt"] = pd.to_datetime(state["FrozenAt"], utc=True)
    order = ["Segment", "CustomerId", "FrozenCustomerId"]
    return state.sort_values(order, kind="stable").reset_index(drop=True)[STATIC_COLUMNS]
