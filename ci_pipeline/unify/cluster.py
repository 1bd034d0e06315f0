"""Transitive clusters (connected components) over accepted links, with the over-merge guard.

The guard: a component that would hold more than ``max_cluster_size`` records, that would join two records
declared never-match, or that would hold two different known values of a conflict field (two birth dates: a father
and a son of the same name and address), is rebuilt greedily from its strongest links: links are taken in the order
the caller gives them (unification's is :func:`ci_pipeline.unify.engine._link_order`: by stage, rule, strength,
then records) and a link is skipped when it would make the cluster exceed the size cap, join a never-match pair or
join two parts whose known values of a conflict field differ. Skipped links are reported with their reason.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

import numpy as np
import pandas as pd

from ci_pipeline.arrays import pair_ids, unique
from ci_pipeline.unify.text import group_starts

#: A customer of three or more records fewer than this share of whose pairs are links is weakly held: a chain of
#: single links holds it together, so one wrong link in the chain would join two people. Reported, not refused.
WEAK_DENSITY = 0.5


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


def densities(labels: np.ndarray, left: np.ndarray, right: np.ndarray) -> pd.DataFrame:
    """Each customer of two or more records with its ``size``, ``links`` (distinct linked pairs of its records) and
    ``density`` = links / possible pairs: 1.0 when every two of its records are linked, near 0 when a chain of single
    links holds it together (so one wrong link in the chain joins two people).

    Args:
        labels: the customer label of each record (the smallest member position, as :func:`components` gives).
        left, right: record positions of the links used; a link between two customers (skipped) is not counted.
    """
    n = len(labels)
    left, right = np.asarray(left, np.int64), np.asarray(right, np.int64)
    inside = (labels[left] == labels[right]) & (left != right)
    pairs = unique(pair_ids(left[inside], right[inside], n))
    links = np.bincount(labels[pairs // n], minlength=n)
    sizes = np.bincount(labels, minlength=n)
    members = np.flatnonzero(sizes >= 2)
    size = sizes[members]
    return pd.DataFrame(
        {"cluster": members, "size": size, "links": links[members], "density": links[members] / (size * (size - 1) / 2)}
    )


class Guard:
    """The over-merge guard over one set of records (see the module docstring).

    Args:
        n: number of records.
        never: positions of never-match pairs.
        max_cluster_size: the size cap.
        conflicts: conflict field -> integer code of each record's normalized value (-1 = unknown); one customer
            never holds two different known codes of a field.

    Asked again with links added after the earlier ones (weaker: attachment), it rebuilds only the components those
    links reach. A component no added link reaches is one of the earlier components, with its links in the same
    order: the guard decides it as before.
    """

    def __init__(
        self,
        n: int,
        never: tuple[np.ndarray, np.ndarray],
        max_cluster_size: int,
        conflicts: dict[str, np.ndarray] | None = None,
    ):
        self.n, self.never, self.max_cluster_size = n, never, max_cluster_size
        self.conflicts = conflicts or {}
        self._never_by_record: dict[int, set[int]] | None = None
        self._last: _Decided | None = None

    def clusters(self, links: pd.DataFrame, added: int = 0) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """Clusters over ``links`` with the guard.

        Args:
            links: accepted links with ``left, right`` (positions) and ``order`` (lower = stronger, unique per link).
            added: how many of ``links``, at the end, the last call did not have (the others in the same order).

        Returns:
            ``(labels, skipped, events)``: the cluster label of each record; per link, 0 when it was used (or joined
            records already together) and otherwise why it was skipped (1 size cap, 2 never-match pair, 3 + k
            conflict on the k-th field of ``conflicts``; see :func:`skip_notes`); and one event per guarded
            component.
        """
        fields = list(self.conflicts)
        left = links["left"].to_numpy(np.int64)
        right = links["right"].to_numpy(np.int64)
        labels = components(self.n, left, right)
        skipped = np.zeros(len(links), dtype=np.int64)
        flagged = _flagged(labels, self.never, self.max_cluster_size, self.conflicts)
        last = self._last if added and self._last is not None and self._last.links == len(links) - added else None
        events: list[dict] = []
        decided: dict[int, dict] = {}
        if not flagged.any():
            self._last = _Decided(len(links), labels, skipped, decided)
            return labels, skipped, events
        never_of = self._never_of()
        # Members and links of the flagged components, grouped once (not one scan of all records per component).
        rec = np.flatnonzero(flagged[labels])
        rec = rec[np.argsort(labels[rec], kind="stable")]
        rec_starts = group_starts([labels[rec]])
        lk = np.flatnonzero(flagged[labels[left]])
        lk = lk[np.lexsort((links["order"].to_numpy()[lk], labels[left][lk]))]
        lk_comp = labels[left][lk]
        comps = labels[rec][rec_starts]
        lk_bounds = np.searchsorted(lk_comp, comps, side="left")
        lk_ends = np.searchsorted(lk_comp, comps, side="right")
        code_cols = [self.conflicts[f] for f in fields]
        labels = labels.copy()
        first_added = len(links) - added
        # A component has a handful of records and links, and thousands are guarded: Python ints and lists within one.
        left_of, right_of = left.tolist(), right.tolist()
        for g, (start, comp) in enumerate(zip(rec_starts.tolist(), comps.tolist(), strict=True)):
            end = rec_starts[g + 1] if g + 1 < len(rec_starts) else len(rec)
            members = rec[start:end]
            component_links = lk[lk_bounds[g] : lk_ends[g]]
            if last is not None and comp in last.events and not (component_links >= first_added).any():
                labels[members] = last.labels[members]
                skipped[component_links] = last.skipped[component_links]
                decided[comp] = last.events[comp]
                events.append(decided[comp])
                continue
            held = members.tolist()
            parts = _Parts(held, [c[members].tolist() for c in code_cols])
            for e in component_links.tolist():
                skipped[e] = parts.join(left_of[e], right_of[e], self.max_cluster_size, never_of)
            roots = [parts.find(m) for m in held]
            # relabel each part by its smallest member so labels stay canonical
            smallest: dict[int, int] = {}
            for m, root in zip(held, roots, strict=True):
                smallest[root] = min(smallest.get(root, m), m)
            labels[members] = [smallest[root] for root in roots]
            decided[comp] = _event(len(held), len(smallest), skipped[component_links], fields, self.max_cluster_size)
            events.append(decided[comp])
        self._last = _Decided(len(links), labels, skipped, decided)
        return labels, skipped, events

    def _never_of(self) -> dict[int, set[int]]:
        """Each record's never-match partners (built once, when a component is first guarded)."""
        if self._never_by_record is None:
            self._never_by_record = {}
            for x, y in zip(self.never[0].tolist(), self.never[1].tolist(), strict=True):
                self._never_by_record.setdefault(x, set()).add(y)
                self._never_by_record.setdefault(y, set()).add(x)
        return self._never_by_record


class _Decided(NamedTuple):
    """What a call of :meth:`Guard.clusters` decided: over how many links, the labels, the skipped links and the
    event of each guarded component (by its label)."""

    links: int
    labels: np.ndarray
    skipped: np.ndarray
    events: dict[int, dict]


def _flagged(
    labels: np.ndarray, never: tuple[np.ndarray, np.ndarray], max_cluster_size: int, conflicts: dict[str, np.ndarray]
) -> np.ndarray:
    """Per component label, True when the guard must rebuild it: too large, a never-match pair, a conflict."""
    n = len(labels)
    sizes = np.bincount(labels, minlength=n)
    flagged = np.zeros(n, dtype=bool)
    flagged[np.flatnonzero(sizes > max_cluster_size)] = True
    nl, nr = never
    if len(nl):
        same = labels[nl] == labels[nr]
        flagged[labels[nl][same]] = True
    for codes in conflicts.values():
        known = codes >= 0
        # Each distinct (label, value) as one integer (both below the record count): labels holding two values.
        width = np.int64(codes.max(initial=0)) + 1
        held = unique(labels[known].astype(np.int64) * width + codes[known]) // width
        flagged[held[np.bincount(held, minlength=n)[held] > 1]] = True
    return flagged


class _Parts:
    """Union-find over one flagged component's records, with each part's members and known conflict values."""

    def __init__(self, members: list[int], codes: list[list[int]]):
        """``codes[k][i]``: the code of ``members[i]``'s value of the k-th conflict field (-1 = unknown)."""
        self.parent = {m: m for m in members}
        self.size = dict.fromkeys(members, 1)
        self.members = {m: {m} for m in members}
        self.values = {m: [({c[i]} if c[i] >= 0 else set()) for c in codes] for i, m in enumerate(members)}

    def find(self, x: int) -> int:
        return _find(self.parent, x)

    def join(self, a: int, b: int, max_cluster_size: int, never_of: dict[int, set[int]]) -> int:
        """Join the parts of ``a`` and ``b`` unless the guard refuses; 0 when joined (or already together), else
        the reason code of :meth:`Guard.clusters`."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return 0
        if self.size[ra] + self.size[rb] > max_cluster_size:
            return 1
        small, big = (ra, rb) if self.size[ra] <= self.size[rb] else (rb, ra)
        if any(p in self.members[big] for m in self.members[small] for p in never_of.get(m, ())):
            return 2
        pairs = zip(self.values[small], self.values[big], strict=True)
        clash = [k for k, (x, y) in enumerate(pairs) if x and y and x != y]
        if clash:
            return 3 + clash[0]
        self.parent[small] = big
        self.size[big] += self.size[small]
        self.members[big] |= self.members.pop(small)
        merged = self.values.pop(small)
        self.values[big] = [x | y for x, y in zip(self.values[big], merged, strict=True)]
        return 0


def _event(records: int, parts: int, skips: np.ndarray, fields: list[str], max_cluster_size: int):
    """The report of one guarded component: its size, the customers made of it (``parts``), why, and the links
    skipped."""
    count = Counter(skips.tolist())
    reasons = []
    if records > max_cluster_size:
        reasons.append("size cap")
    if count[2]:
        reasons.append("never-match pair")
    reasons += [f"conflicting {f}" for k, f in enumerate(fields) if count[3 + k]]
    return {
        "records": records,
        "parts": parts,
        "reason": ", ".join(reasons),
        "links_skipped_size": count[1],
        "links_skipped_never_match": count[2],
        "links_skipped_conflict": sum(n for reason, n in count.items() if reason >= 3),
    }


def skip_notes(skipped: np.ndarray, fields: list[str]) -> np.ndarray:
    """The ``match_pairs`` note of each skipped link (``""`` where the link was used)."""
    names = ["", "over-merge guard: size cap", "over-merge guard: never-match pair"]
    names += [f"over-merge guard: conflicting {f}" for f in fields]
    return np.array(names, dtype=object)[skipped]


def _find(parent: dict[int, int], x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x
