"""Transitive clusters (connected components) over accepted links, with the over-merge guard.

The guard: a component that would hold more than ``max_cluster_size`` records, or that would join two records
declared never-match, is rebuilt greedily from its strongest links: links are taken in order of strength (stage
dedup before match, then rule order, then mean condition score, then record order) and a link is skipped when it
would make the cluster exceed the size cap or join a never-match pair. Skipped links are reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected-component label (smallest member position) for each of ``n`` nodes.

    Vectorised hooking + pointer jumping: each round hooks every edge's larger root under the smaller one and
    then compresses paths; it ends in O(log n) rounds on the shapes record linkage produces.
    """
    parent = np.arange(n, dtype=np.int64)
    if len(left) == 0:
        return parent
    a, b = np.asarray(left, np.int64), np.asarray(right, np.int64)
    while True:
        pa, pb = parent[a], parent[b]
        differ = pa != pb
        if not differ.any():
            return parent
        pa, pb = pa[differ], pb[differ]
        low, high = np.minimum(pa, pb), np.maximum(pa, pb)
        np.minimum.at(parent, high, low)
        while True:
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt


def guarded_clusters(
    n: int,
    links: pd.DataFrame,
    never: tuple[np.ndarray, np.ndarray],
    max_cluster_size: int,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Clusters over ``links`` with the over-merge guard.

    Args:
        n: number of records.
        links: accepted links with ``left, right`` (positions) and ``order`` (lower = stronger, unique per link).
        never: positions of never-match pairs.
        max_cluster_size: the size cap.

    Returns:
        ``(labels, used, events)``: the cluster label of each record, a bool per link telling whether it joined
        two parts, and one event per guarded component (records, size before, parts after, reason).
    """
    left = links["left"].to_numpy(np.int64)
    right = links["right"].to_numpy(np.int64)
    labels = components(n, left, right)
    used = np.ones(len(links), dtype=bool)
    sizes = np.bincount(labels, minlength=n)
    flagged = set(np.flatnonzero(sizes > max_cluster_size).tolist())
    nl, nr = never
    if len(nl):
        same = labels[nl] == labels[nr]
        flagged |= set(labels[nl][same].tolist())
    events: list[dict] = []
    if not flagged:
        return labels, used, events
    never_of: dict[int, set[int]] = {}
    for x, y in zip(nl.tolist(), nr.tolist(), strict=True):
        never_of.setdefault(x, set()).add(y)
        never_of.setdefault(y, set()).add(x)
    labels = labels.copy()
    link_label = labels[left]
    for comp in sorted(flagged):
        members = np.flatnonzero(labels == comp)
        sel = np.flatnonzero(link_label == comp)
        sel = sel[np.argsort(links["order"].to_numpy()[sel], kind="stable")]
        parent = {int(m): int(m) for m in members}
        size = {int(m): 1 for m in members}
        member_sets = {int(m): {int(m)} for m in members}

        skipped_size = skipped_never = 0
        for e in sel.tolist():
            ra, rb = _find(parent, int(left[e])), _find(parent, int(right[e]))
            if ra == rb:
                continue
            if size[ra] + size[rb] > max_cluster_size:
                used[e] = False
                skipped_size += 1
                continue
            small, big = (ra, rb) if size[ra] <= size[rb] else (rb, ra)
            if any(p in member_sets[big] for m in member_sets[small] for p in never_of.get(m, ())):
                used[e] = False
                skipped_never += 1
                continue
            parent[small] = big
            size[big] += size[small]
            member_sets[big] |= member_sets.pop(small)
        roots = np.array([_find(parent, int(m)) for m in members])
        # relabel each part by its smallest member so labels stay canonical
        for root in np.unique(roots):
            part = members[roots == root]
            labels[part] = part.min()
        events.append(
            {
                "records": int(len(members)),
                "parts": int(len(np.unique(roots))),
                "reason": "size cap" if len(members) > max_cluster_size else "never-match pair",
                "links_skipped_size": skipped_size,
                "links_skipped_never_match": skipped_never,
            }
        )
    return labels, used, events


def _find(parent: dict[int, int], x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x
