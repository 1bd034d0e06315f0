"""Merge: one profile per cluster, each unified field chosen by its policy, field groups taken from one record."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import numpy as np
import pandas as pd

from ci_pipeline.arrays import unique
from ci_pipeline.config.unify import UnifyConfig, unified_fields
from ci_pipeline.side_by_side import each_named
from ci_pipeline.unify.normalize import placeholder_mask, squash_spaces
from ci_pipeline.unify.probabilistic.comparisons import date_parts
from ci_pipeline.unify.records import DATE_ATTRIBUTES


def record_order(records: pd.DataFrame, policy: str, priority: tuple[str, ...], n_tables: int) -> np.ndarray:
    """Record positions best-first for a policy (ties: table priority, dedup winner, most filled, highest key)."""
    if priority:
        refs = (records["source"] + "." + records["table"]).to_numpy(dtype=object)
        prio = pd.Series(refs).map({r: i for i, r in enumerate(priority)}).fillna(len(priority)).to_numpy()
        prio = prio * (n_tables + 1) + records["rank"].to_numpy()
    else:
        prio = records["rank"].to_numpy()
    keys = [
        -records["key_rank"].to_numpy(),
        -records["filled"].to_numpy(),
        -records["is_winner"].to_numpy().astype(np.int64),
        prio,
    ]
    if policy != "priority":
        t = records["recency"]
        ns = t.dt.tz_convert("UTC").astype("int64").to_numpy()
        ns = np.where(t.isna().to_numpy(), np.iinfo(np.int64).max, -ns if policy == "most_recent" else ns)
        keys.append(ns)
    return np.lexsort(keys)


def merge_profiles(
    records: pd.DataFrame, labels: np.ndarray, config: UnifyConfig, primary_keys: dict[tuple[str, str], str]
) -> pd.DataFrame:
    """One row per cluster label (index ``label``): the unified fields, then one key column per table.

    ``records`` must carry ``key_rank``, ``filled`` and ``is_winner`` (see :mod:`ci_pipeline.unify.engine`).
    The ``<source>_<table>_<primary key>`` column holds the key of that table's preferred record in the cluster
    (the dedup winner, else the most filled, else the highest key); every key is in AlternateKey.
    """
    fields = unified_fields(config, list(records.columns))
    n_tables = len(config.tables)
    values = pd.DataFrame(index=records.index)
    for f in fields:
        present = [c for c in f.columns if c in records.columns]
        # The first column as it is; each next one fills what is still missing.
        col = records[present[0]].astype("string") if present else pd.Series(pd.NA, index=records.index, dtype="string")
        for c in present[1:]:
            col = col.fillna(records[c].astype("string"))
        values[f.name] = col
    # Placeholders ("N/A", "unknown") never win a field over a real value; where a customer has none, the
    # placeholder as written is kept: the list holds real names too (Na, a Korean surname; Nil) and numbers ("0"),
    # which a profile must not lose. Values of nothing but whitespace are empty.
    bypass = tuple(config.normalize.bypass_values)
    # Two columns at a time: hashing and folding each column's text runs in Arrow, outside Python's lock.
    kept = each_named(
        {name: partial(_split_placeholders, values[name], bypass) for name in values.columns}, 2, "unify-merge"
    )
    fallback = pd.DataFrame(index=records.index)
    for name, (real, placeholders) in kept.items():
        values[name] = real
        if placeholders.notna().any():
            fallback[name] = placeholders
    values["label"] = labels
    fallback["label"] = labels
    out = pd.DataFrame(index=pd.Index(unique(labels), name="label"))
    grouped_names: set[str] = set()
    by_name = {f.name: f for f in fields}
    for group in config.merge.groups.values():
        members = [g for g in group if g in by_name]
        if not members:
            continue
        lead = by_name[members[0]]
        order = record_order(records, lead.policy, lead.priority, n_tables)
        # Only the group's columns are put in order, not every field's.
        chosen = _first_filled(values, members, order)
        if held := [m for m in members if m in fallback.columns]:
            # A customer none of whose records holds a real value of the group takes its placeholders together.
            lacking = _first_filled(fallback, held, order)
            chosen = pd.concat([chosen, lacking[~lacking.index.isin(chosen.index)]]).reindex(columns=members)
        out = out.join(chosen)
        grouped_names |= set(members)
    singles: dict[tuple, list[str]] = {}
    for f in fields:
        if f.name not in grouped_names:
            singles.setdefault((f.policy, f.priority), []).append(f.name)
    dates = {f.name for f in fields if set(f.columns) & DATE_ATTRIBUTES}
    for (policy, priority), names in singles.items():
        order = record_order(records, policy, priority, n_tables)
        ranked = values[names + ["label"]].iloc[order]
        chosen = ranked.groupby("label", sort=True).first()
        for name in dates & set(names):
            # A date that is no calendar date ('1857-88-14', a typo) is kept only where the customer has no other:
            # it never wins over another record's date that is one.
            sound = ranked[name].where(calendar_dates(ranked[name]))
            chosen[name] = sound.groupby(ranked["label"], sort=True).first().fillna(chosen[name])
        if held := [n for n in names if n in fallback.columns]:
            placeholders = fallback[held + ["label"]].iloc[order].groupby("label", sort=True).first()
            chosen[held] = chosen[held].fillna(placeholders)
        out = out.join(chosen)
    out = out[[f.name for f in fields]]
    # Per table, the customer's preferred record: the order of the priority policy without a table priority.
    best = record_order(records, "priority", (), n_tables)
    keyed = pd.DataFrame({"label": labels, "rank": records["rank"].to_numpy(), "key": records["key"].to_numpy()}).iloc[
        best
    ]
    keyed = keyed.drop_duplicates(["label", "rank"])
    for rank, t in enumerate(config.tables):
        column = f"{t.source}_{t.table}_{primary_keys[(t.source, t.table)]}"
        part = keyed[keyed["rank"] == rank].set_index("label")["key"].rename(column)
        out = out.join(part)
    out = out.rename(columns=config.merge.rename)
    return out.astype("string")


def calendar_dates(values: pd.Series) -> np.ndarray:
    """Whether each value is a day of the calendar in any era (``1634-08-01`` is, ``1857-88-14`` and
    ``1845-12-50`` are not); missing values are not. Judged once per distinct value."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    year, month, day = date_parts(np.asarray(uniques, dtype=object)).T
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    days = np.array(MONTH_DAYS)[np.clip(month - 1, 0, 11)] + (leap & (month == 2))
    sound = (year > 0) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= days)
    return np.append(sound, False)[codes]  # code -1 (missing) indexes the appended False


#: Days of each month in a common year.
MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def kept_placeholders(profiles: pd.DataFrame, config: UnifyConfig, attributes: list[str]) -> dict[str, int]:
    """Per unified field of the profiles (as renamed), the customers whose value is a placeholder, kept because none
    of their records holds a real one; fields without any are left out."""
    bypass = tuple(config.normalize.bypass_values)
    # Folding whitespace only shortens a value: one much longer than every placeholder is none (most are).
    longest = 2 * max((len(b) for b in bypass), default=0) + 2
    found = {}
    for f in unified_fields(config, attributes):
        name = config.merge.rename.get(f.name, f.name)
        if name not in profiles.columns:
            continue
        column = profiles[name].astype("string")
        short = column[(column.str.len() <= longest).fillna(False).to_numpy(bool)]
        if count := int((placeholder_mask(squash_spaces(short), bypass) & short.notna().to_numpy(bool)).sum()):
            found[name] = count
    return found


def _first_filled(values: pd.DataFrame, members: list[str], order: np.ndarray) -> pd.DataFrame:
    """Per label, ``members`` of the first record in ``order`` holding any of them (a group comes from one
    record)."""
    ranked = values[[*members, "label"]].iloc[order]
    has_any = ranked[members].notna().any(axis=1).to_numpy()
    return ranked[has_any].drop_duplicates("label").set_index("label")[members]


def _split_placeholders(column: pd.Series, bypass_values: Iterable[str]) -> tuple[pd.Series, pd.Series]:
    """The column's real values, and apart its placeholders that are text (decided once per distinct value);
    empty values and those of nothing but whitespace are in neither."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    # Raw values: one of nothing but whitespace is empty too (the normalizer strips its values before it asks).
    squashed = squash_spaces(pd.Series(uniques, dtype="string"))
    real = ~placeholder_mask(squashed, bypass_values)
    text = (squashed.str.len() > 0).to_numpy(bool, na_value=False) & ~real
    # Code -1 (missing) indexes the appended False.
    return column.where(np.append(real, False)[codes]), column.where(np.append(text, False)[codes])
