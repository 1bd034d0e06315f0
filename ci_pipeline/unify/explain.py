"""Explanations: which customer a record belongs to and why, and why two records did not match."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ci_pipeline.config.unify import UnifyConfig
from ci_pipeline.errors import UserError
from ci_pipeline.outputs import identifiers
from ci_pipeline.unify.cluster import WEAK_DENSITY, components, densities
from ci_pipeline.unify.compare import Prepared, passes, score
from ci_pipeline.unify.normalize import Normalizer, default_normalizations, shared_values
from ci_pipeline.unify.probabilistic import BlockingRule, Model, Settings
from ci_pipeline.unify.probabilistic.chart import waterfall_figure
from ci_pipeline.unify.probabilistic.table import Table
from ci_pipeline.unify.probabilistic_method import RULE_NAME, model_table, waterfall


def explain_record(
    source: str,
    table: str,
    key: str,
    alternate_key: pd.DataFrame,
    match_pairs: pd.DataFrame,
    customer_profile: pd.DataFrame,
) -> dict:
    """The customer of one record, every record in it, and each link (rule and scores) between them.

    Raises:
        UserError: the record did not take part in the last unification run.
    """
    ak = alternate_key
    hit = ak[(ak["DataSourceName"] == source) & (ak["EntityName"] == table) & (ak["AlternateValue"] == str(key))]
    if hit.empty:
        raise UserError(
            f"record {source}.{table} key {key!r} is not in the last unification run; check the key, or run "
            "`ci-pipeline run` first"
        )
    cid = hit["CustomerId"].iloc[0]
    members = ak[ak["CustomerId"] == cid]
    idents = set(members["msdynci_identifier"])
    mp = match_pairs
    left, right = pair_sides(mp)
    inside = left.isin(idents) & right.isin(idents)
    touching = left.isin(idents) | right.isin(idents)
    # An attach rule pairs a record with itself to say why it was not attached when there was nobody to list.
    alone = inside & (left == right)
    profile = customer_profile[customer_profile["CustomerId"] == cid]
    return {
        "record": f"{source}|{table}|{key}",
        "customer_id": cid,
        "density": _density(
            left[inside & ~alone & mp["Linked"]], right[inside & ~alone & mp["Linked"]], sorted(idents)
        ),
        "bridges": _bridges(mp[inside & ~alone & mp["Linked"]], sorted(idents)),
        "profile": {k: v for k, v in profile.iloc[0].items() if pd.notna(v)} if len(profile) else {},
        "records": sorted(idents),
        "links": _pairs(mp[inside & mp["Accepted"]]),
        "rejected": _pairs(mp[touching & ~alone & ~mp["Accepted"]])[:20],
        "not_attached": [{"record": p["left"], "rule": p["rule"], "note": p["note"]} for p in _pairs(mp[alone])],
        "outside_links": _pairs(mp[touching & ~inside & mp["Accepted"]]),
    }


def pair_sides(match_pairs: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """The ``source|table|key`` identifiers of the left and the right record of each ``match_pairs`` row."""
    mp = match_pairs
    return (
        identifiers(mp["LeftSource"], mp["LeftTable"], mp["LeftKey"]),
        identifiers(mp["RightSource"], mp["RightTable"], mp["RightKey"]),
    )


def _pairs(frame: pd.DataFrame) -> list[dict]:
    return [
        {
            "left": f"{r.LeftSource}|{r.LeftTable}|{r.LeftKey}",
            "right": f"{r.RightSource}|{r.RightTable}|{r.RightKey}",
            "stage": r.Stage,
            "rule": r.Rule,
            "scores": json.loads(r.Scores) if isinstance(r.Scores, str) and r.Scores else {},
            "accepted": bool(r.Accepted),
            "linked": bool(r.Linked),
            "note": r.Note if isinstance(r.Note, str) else "",
        }
        for r in frame.itertuples(index=False)
    ]


def explain_pair(
    records: pd.DataFrame,
    config: UnifyConfig,
    normalizer: Normalizer,
    a: tuple[str, str, str],
    b: tuple[str, str, str],
    alternate_key: pd.DataFrame | None = None,
    match_pairs: pd.DataFrame | None = None,
    model: Model | None = None,
) -> dict:
    """Why two records did (not) match: per rule, blocking and each condition's values, score and threshold, and
    (given the last run's ``match_pairs``) whether the run linked them or the over-merge guard kept them apart.

    Args:
        records: the record frame of every customer table (:func:`ci_pipeline.unify.records.build_records`),
            so that value-frequency limits are judged as in the run.
        a, b: ``(source, table, key)`` of the two records.
        model: the stored match model (``unify.match.method: probabilistic``): adds ``probabilistic``, the model's
            waterfall (per comparison the values, level and weight; prior, total weight and probability) and what
            the run did with such a pair (:func:`model_evidence`).
    """
    i, j = _positions(records, a, b)
    if model is not None:
        # The model scores pairs within and across tables alike; the rules below are those of the pair's stage.
        waterfall_info = model_evidence(config, records, normalizer, model, i, j)
    if records["rank"].iloc[i] == records["rank"].iloc[j]:
        rules = config.tables[int(records["rank"].iloc[i])].dedup.rules
        # Without dedup rules, a model's pair of one table is a match pair, as the run publishes it.
        stage = "dedup" if rules or model is None else "match"
    else:
        rules = config.match.rules
        stage = "match"
    prep = _pair_prepared(records, config, normalizer, rules, i, j)
    out_rules = [_rule_verdict(prep, rule) for rule in rules]
    result = {
        "records": ["|".join(a), "|".join(b)],
        "stage": stage,
        "rules": out_rules,
        "matched_by": next((r["rule"] for r in out_rules if r["matched"]), None),
    }
    if model is not None:
        result["probabilistic"] = waterfall_info
    overrides = {
        kind: any({tuple(p.left), tuple(p.right)} == {tuple(a), tuple(b)} for p in getattr(config.match, kind))
        for kind in ("never_match", "always_match")
    }
    result["overrides"] = [k for k, v in overrides.items() if v]
    if alternate_key is not None:
        ak = alternate_key.set_index("msdynci_identifier")["CustomerId"]
        ids = [ak.get("|".join(a)), ak.get("|".join(b))]
        result["customer_ids"] = ids
        result["same_customer"] = ids[0] is not None and ids[0] == ids[1]
    if match_pairs is not None:
        left, right = pair_sides(match_pairs)
        pair = {"|".join(a), "|".join(b)}
        hit = match_pairs[left.isin(pair) & right.isin(pair) & (left != right)]
        # Refused attach proposals are kept too: they say why a name-only record did not join this customer.
        result["last_run"] = [link for link in _pairs(hit) if link["accepted"] or link["stage"] == "attach"]
    return result


def model_evidence(
    config: UnifyConfig, records: pd.DataFrame, normalizer: Normalizer, model: Model, i: int, j: int
) -> dict:
    """The model's waterfall of the records at positions ``i`` and ``j`` (:func:`waterfall`) with what the run did
    with such a pair: ``blocking``, per blocking rule whether the two share its block (``compared``: whether any
    does; the run scores no other pair, whatever the model would say), ``stratum``, the keys of the stratum whose
    fit weighs the pair (None: the main fit; ``strata`` lists them all), and swapped names labelled ``swapped``
    with the ``crossed`` values."""
    info, settings = waterfall(config, records, normalizer, model, i, j)
    # Block keys, strata and swaps compare the two records' own normalized values: only they are normalized.
    columns = dict.fromkeys([*settings.columns, *model.settings.columns])
    table = model_table(config, records.iloc[[i, j]], normalizer, columns, frequent=info["too_frequent"])
    info["blocking"] = [_block_verdict(table, rule) for rule in settings.blocking]
    info["compared"] = any(b["together"] for b in info["blocking"])
    pair = np.array([0]), np.array([1])
    # The first stratum holding the pair weighs it, as in scoring.
    info["stratum"] = next(([list(k) for k in s.keys] for s in model.strata if s.members(table, *pair)[0]), None)
    info["strata"] = [[list(k) for k in s.keys] for s in model.strata]
    _label_swaps(model.settings, table, info["comparisons"])
    return info


def _block_verdict(table: Table, rule: BlockingRule) -> dict:
    """Whether the two records of ``table`` share the block of ``rule``: ``one block``, ``different keys`` or
    ``missing key`` (a key unknown on either side puts a record in no block of the rule), with the values of the
    columns its keys read."""
    codes = [key.codes(table) for key in rule.keys]
    if any(c[0] < 0 or c[1] < 0 for c in codes):
        state = "missing key"
    else:
        state = "one block" if all(c[0] == c[1] for c in codes) else "different keys"
    return {
        "rule": rule.to_list(),
        "together": state == "one block",
        "state": state,
        "values": [[_table_value(table, column, p) for column in rule.columns] for p in (0, 1)],
        # What blocking compared, per column: the key's value ("eva" of prefix(last_name, 3)) where a function
        # makes one.
        "keys": [[_key_text(table, rule, column, p) for column in rule.columns] for p in (0, 1)],
    }


def _key_text(table: Table, rule: BlockingRule, column: str, position: int) -> str | None:
    """The value the first key of ``rule`` reading ``column`` blocks the record at ``position`` on (None: missing)."""
    value = _table_value(table, column, position)
    key = next(k for k in rule.keys if column in k.columns)
    if value is None or key.function in (None, "nickname", "unordered"):
        return value
    text = key.texts(np.asarray([value], dtype=object)).iloc[0]
    return None if pd.isna(text) else str(text)


def _table_value(table: Table, column: str, position: int) -> str | None:
    """The normalized value of ``column`` of the record at ``position`` (None: missing)."""
    col = table.column(column)
    code = col.codes[position]
    return None if code < 0 else str(col.values[code])


def _label_swaps(settings: Settings, table: Table, comparisons: list[dict]) -> None:
    """Give a name swap its level in ``comparisons`` (waterfall rows): the comparison weighing the swap reads
    ``swapped`` and gets the ``crossed`` values; the other one, nulled so the swap counts once, reads ``swapped``
    too (not ``null``: both values are there) with the comparison it is ``weighed_under``."""
    names = {c.column: c.name for c in settings.comparisons}
    for row, comparison in zip(comparisons, settings.comparisons, strict=True):
        other = getattr(comparison, "swap_with", None)
        if other is None or row["level"] not in ("swapped", "null"):
            continue
        mine = [_table_value(table, comparison.column, p) for p in (0, 1)]
        theirs = [_table_value(table, other, p) for p in (0, 1)]
        crossed = None not in mine + theirs and mine[0] == theirs[1] and mine[1] == theirs[0] and mine[0] != mine[1]
        if not crossed:
            continue
        if row["level"] == "swapped":
            row["crossed"] = {comparison.column: mine, other: theirs}
        else:
            row["level"], row["weighed_under"] = "swapped", names.get(other, other)


def _positions(records: pd.DataFrame, a: tuple[str, str, str], b: tuple[str, str, str]) -> tuple[int, int]:
    """The positions of the two records in the record frame; a clear error for one that is not there."""
    ident = identifiers(records["source"], records["table"], records["key"])
    found = []
    for ref in (a, b):
        hit = np.flatnonzero((ident == "|".join(ref)).to_numpy())
        if len(hit) == 0:
            raise UserError(f"record {'|'.join(ref)} is not in the customer tables; check source, table and key")
        found.append(int(hit[0]))
    return found[0], found[1]


def _pair_prepared(
    records: pd.DataFrame, config: UnifyConfig, normalizer: Normalizer, rules: list, i: int, j: int
) -> Prepared:
    """The two records (positions 0 and 1) normalized, with shared and too frequent values masked as in the run."""
    # Only the two records are normalized; a value-frequency limit is judged by counting, over the whole table set,
    # just the records that can hold the same normalized value (so a million records cost a scan, not a
    # normalization).
    prep = Prepared(
        records.iloc[[i, j]].reset_index(drop=True),
        normalizer,
        config.guard.max_value_frequency,
        (),
        config.guard.max_block_size,
        judge_shared=False,
    )
    for rule in rules:
        for cond in [*rule.blocking_fields(), *rule.conditions]:
            if "personal_phone" in prep.steps(cond):
                _judge_shared(prep, records, cond)
            if cond.field in config.guard.frequency_fields:
                _judge_frequency(prep, records, cond, config.guard.max_value_frequency)
    return prep


def _rule_verdict(prep: Prepared, rule) -> dict:
    """One rule on the pair: whether blocking puts them together, and each condition's values, score and verdict."""
    i, j = 0, 1
    blocking = []
    for cond in rule.blocking_fields():
        codes = prep.codes(cond)
        blocking.append({"field": cond.field, "equal": bool(codes[i] >= 0 and codes[i] == codes[j])})
    conds = [_condition_verdict(prep, cond) for cond in rule.conditions]
    return {
        "rule": rule.name,
        "blocked_together": all(b["equal"] for b in blocking),
        "blocking": blocking,
        "conditions": conds,
        "matched": all(b["equal"] for b in blocking) and all(c["passed"] for c in conds),
    }


def _condition_verdict(prep: Prepared, cond) -> dict:
    """One condition on the pair: raw and normalized values, ignored values, score, threshold and verdict."""
    i, j = 0, 1
    records = prep.records
    values = prep.normalized(cond)
    raw_score = score(prep, cond, np.array([i]), np.array([j]))
    s = float(raw_score[0])
    raw_i = records[cond.field].iloc[i] if cond.field in records.columns else None
    raw_j = records[cond.field].iloc[j] if cond.field in records.columns else None
    return {
        "field": cond.field,
        "values": [_text(raw_i), _text(raw_j)],
        "normalized": [_text(values.iloc[i]), _text(values.iloc[j])],
        "too_frequent": list(prep.frequent.get((cond.field, prep.steps(cond)), {})),
        "shared": list(prep.shared.get((cond.field, prep.steps(cond)), {})),
        "score": None if np.isnan(s) else round(s, 3),
        "threshold": cond.threshold,
        "passed": bool(passes(cond, raw_score)[0]),
    }


def _judge_shared(prep: Prepared, records: pd.DataFrame, cond) -> None:
    """Mask the pair's values of a ``personal_phone`` condition that records of two or more first names hold, as
    the run does (judged over all records, not just the two)."""
    key = (cond.field, prep.steps(cond))
    if key in prep.shared:
        return
    found = {}
    for v in prep.normalized(cond).dropna().unique() if "first_name" in records.columns else []:
        holders = records[holding(records, prep.normalizer, cond.field, key[1], str(v))]
        names = prep.normalizer.apply(holders["first_name"], default_normalizations("first_name"))
        found.update(shared_values(pd.Series(str(v), index=holders.index), names).to_dict())
    prep.shared[key] = found
    prep.mask(cond, list(found))


def _judge_frequency(prep: Prepared, records: pd.DataFrame, cond, limit: int) -> None:
    """Mask the pair's normalized values of ``cond`` that more than ``limit`` records hold, as the run does."""
    key = (cond.field, prep.steps(cond))
    if key in prep.frequent:
        return
    counts = {
        str(v): count_value(records, prep.normalizer, cond.field, key[1], str(v))
        for v in prep.normalized(cond).dropna().unique()
    }
    prep.ignore(cond, {v: n for v, n in counts.items() if n > limit})


#: Steps that only fold case, accents, blanks and symbols, or fix an e-mail domain: the letters and digits of a
#: normalized value's first part survive them in order.
_FOLDING = {"ascii", "case", "whitespace", "symbols", "email"}


def count_value(records: pd.DataFrame, normalizer: Normalizer, field: str, steps: tuple, value: str) -> int:
    """How many records' ``field`` normalizes (by ``steps``) to ``value``."""
    return int(holding(records, normalizer, field, steps, value).sum())


def holding(records: pd.DataFrame, normalizer: Normalizer, field: str, steps: tuple, value: str) -> np.ndarray:
    """Per record, whether its ``field`` normalizes (by ``steps``) to ``value``.

    Only candidates are normalized: for a phone, raw values whose digits contain the number's last seven digits (the
    phone step only drops a prefix and an extension); for folding steps, raw values whose letters and digits contain
    those of the value's local part. Other step lists normalize the whole column.
    """
    if field not in records.columns:
        return np.zeros(len(records), dtype=bool)
    raw = records[field].astype("string")
    if "phone" in steps and steps[-1] in ("phone", "personal_phone"):
        hay = raw.str.replace(r"\D+", "", regex=True)
        candidates = raw[hay.str.contains(value[-7:], regex=False).fillna(False).to_numpy(bool)]
    elif set(steps) <= _FOLDING:
        core = "".join(ch for ch in value.split("@")[0] if ch.isalnum())
        hay = raw.str.lower().str.replace(r"[^0-9a-z]+", "", regex=True)
        # Accented letters become ASCII ones only in the ascii step: such values are always candidates.
        keep = hay.str.contains(core, regex=False) | raw.str.contains(r"[^\x00-\x7f]", regex=True)
        candidates = raw[keep.fillna(False).to_numpy(bool)]
    else:
        candidates = raw
    found = np.zeros(len(records), dtype=bool)
    hit = (normalizer.apply(candidates, steps) == value).fillna(False).to_numpy(bool)
    found[records.index.get_indexer(candidates.index[hit])] = True
    return found


def _density(left: pd.Series, right: pd.Series, records: list[str]) -> dict | None:
    """The customer's links (distinct pairs of its ``records``, identifiers of both sides of each link in ``left``
    and ``right``) over its possible pairs, as :func:`ci_pipeline.unify.cluster.densities` counts them in a run;
    None for a single record."""
    n = len(records)
    if n < 2:
        return None
    index = pd.Index(records)
    found = densities(np.zeros(n, np.int64), index.get_indexer(left), index.get_indexer(right)).iloc[0]
    return {"links": int(found["links"]), "possible": n * (n - 1) // 2, "density": round(float(found["density"]), 3)}


def _bridges(links: pd.DataFrame, records: list[str]) -> list[dict]:
    """The links that alone hold the customer together: without one of them its records fall into two parts (their
    sizes in ``parts``), so a wrong one there is what joins two people. The most even splits first; none for a
    customer of more than :data:`BRIDGE_LINKS` links (each link is taken out in turn)."""
    left, right = pair_sides(links)
    first = {}
    for pair, row in zip(zip(left, right, strict=True), _pairs(links), strict=True):
        first.setdefault(tuple(sorted(pair)), row)
    if len(records) < 3 or not first or len(first) > BRIDGE_LINKS:
        return []
    index = {r: i for i, r in enumerate(records)}
    a = np.array([index[x] for x, _ in first])
    b = np.array([index[y] for _, y in first])
    found = []
    for k, row in enumerate(first.values()):
        others = np.arange(len(a)) != k
        label = components(len(records), a[others], b[others])
        if label[a[k]] != label[b[k]]:
            parts = sorted((int((label == label[a[k]]).sum()), int((label == label[b[k]]).sum())), reverse=True)
            found.append(row | {"parts": parts})
    return sorted(found, key=lambda f: (-f["parts"][1], f["left"], f["right"]))


#: A customer with more links is not searched for the links that alone hold it together (``explain`` only).
BRIDGE_LINKS = 5_000
#: Those links shown in plain text, the most even splits first (``--json`` has every one).
BRIDGES_SHOWN = 5


def _text(v) -> str | None:
    return None if v is None or pd.isna(v) else str(v)


def render_record(info: dict) -> str:
    """Plain-text form of :func:`explain_record`."""
    lines = [f"{info['record']} belongs to customer {info['customer_id']} ({len(info['records'])} record(s))"]
    prev = info["profile"].get("PreviousCustomerId")
    if prev:
        lines.append(f"  previous ids: {prev}")
    lines.append("records:")
    values = info.get("values", {})
    for r in info["records"]:
        held = ", ".join(f"{column} {value}" for column, value in values.get(r, {}).items())
        lines.append(f"  - {r}" + (f": {held}" if held else ""))
    density = info.get("density")
    if density and len(info["records"]) >= 3:
        weak = " (weakly held: a chain of single links; one wrong link in it joins two people)"
        held = weak if density["density"] < WEAK_DENSITY else ""
        lines.append(f"density: {density['links']} of {density['possible']} record pairs linked{held}")
    bridges = info.get("bridges") or []
    if bridges:
        lines.append(
            f"held by single links: {len(bridges)} link(s) each alone join two parts of this customer (a wrong one "
            "joins two people); the most even splits:"
        )
        for link in bridges[:BRIDGES_SHOWN]:
            big, small = link["parts"]
            lines.append(
                f"  {link['left']} <-> {link['right']}: {link['stage']} rule {link['rule']} {_fmt(link['scores'])} "
                f"joins {big} and {small} record(s)"
            )
    lines.append("links (why these records are one customer):")
    outside = info.get("outside_links") or []
    if not info["links"] and not outside:
        lines.append("  (none: the record matched nothing and is a customer of its own)")
    elif not info["links"]:
        lines.append("  (none: what it matched was not linked, below; it is a customer of its own)")
    for link in info["links"]:
        note = link["note"] if link["linked"] else f"not used: {link['note']}"
        state = f"  [{note}]" if note else ""
        lines.append(
            f"  {link['left']} <-> {link['right']}: {link['stage']} rule {link['rule']} {_fmt(link['scores'])}{state}"
        )
    for row in info.get("not_attached", []):
        lines.append(f"  {row['record']}: attach rule {row['rule']}: {row['note']}")
    if outside:
        lines.append("matched, but not linked (the records stay in other customers):")
        for link in outside:
            note = f" [not linked: {link['note']}]" if link["note"] else ""
            rule = f"{link['stage']} rule {link['rule']} {_fmt(link['scores'])}"
            lines.append(f"  {link['left']} <-> {link['right']}: {rule}{note}")
    if info["rejected"]:
        lines.append("candidates compared and rejected:")
        for link in info["rejected"]:
            note = f" [{link['note']}]" if link["note"] else ""
            lines.append(f"  {link['left']} <-> {link['right']}: rule {link['rule']} {_fmt(link['scores'])}{note}")
    lines.append("profile:")
    lines += [f"  {k}: {v}" for k, v in info["profile"].items()]
    return "\n".join(lines)


def render_pair(info: dict) -> str:
    """Plain-text form of :func:`explain_pair`."""
    a, b = info["records"]
    model = info.get("probabilistic")
    # With the model, rules are shown only where some are configured: the model alone may decide the pair.
    parts = [f"{info['stage']} rules"] if info["rules"] or model is None else []
    parts += ["the probabilistic model"] if model is not None else []
    lines = [f"{a} vs {b} ({' and '.join(parts)})"]
    if "customer_ids" in info:
        same = "the same customer" if info["same_customer"] else "different customers"
        lines.append(f"  last run: {same} ({info['customer_ids'][0]} / {info['customer_ids'][1]})")
    if info["overrides"]:
        lines.append(f"  override: {', '.join(info['overrides'])}")
    lines += [_last_run_line(link) for link in info.get("last_run", [])]
    for rule in info["rules"]:
        verdict = "MATCH" if rule["matched"] else "no match"
        lines.append(f"rule {rule['rule']}: {verdict}")
        if not rule["blocked_together"]:
            unequal = [b["field"] for b in rule["blocking"] if not b["equal"]]
            lines.append(f"  never compared: blocking field(s) {', '.join(unequal)} differ or are missing")
        for c in rule["conditions"]:
            mark = "ok " if c["passed"] else "NO "
            extra = f"  (ignored: value shared by too many records: {c['too_frequent']})" if c["too_frequent"] else ""
            if c.get("shared"):
                extra += f"  (ignored: number held by records of several first names: {c['shared']})"
            lines.append(
                f"  {mark} {c['field']}: {c['values'][0]!r} vs {c['values'][1]!r} -> {c['normalized'][0]!r} vs "
                f"{c['normalized'][1]!r}: {_score_text(c)} (needs {c['threshold']}){extra}"
            )
    if model is None and not info["rules"]:
        lines.append("  no rules apply to this pair of tables")
    if model is None or info["rules"]:
        lines.append(f"verdict: matched by {info['matched_by']}" if info["matched_by"] else "verdict: no rule matches")
    if model is not None:
        lines += render_waterfall(model)
    return "\n".join(lines)


def _last_run_line(link: dict) -> str:
    """What the last run did with the pair: a rule's or the model's verdict, and whether the link was kept."""
    probability = link["scores"].get("match_probability")
    if link["rule"] == RULE_NAME and link["stage"] == "match" and probability is not None:
        chance = f"(match probability {probability:.4f})"
        if link["linked"]:
            return f"  last run: the model linked them {chance}"
        return f"  last run: the model accepted them {chance}, not linked: {link['note']}"
    if not link["accepted"]:
        return f"  last run: {link['stage']} rule {link['rule']}: {link['note']}"
    state = "linked" if link["linked"] else f"not linked: {link['note']}"
    return f"  last run: accepted by {link['stage']} rule {link['rule']}, {state}"


def render_waterfall(info: dict) -> list[str]:
    """Plain-text lines of a model's waterfall: whether a blocking rule brought the pair to the model in the run,
    the prior weight of the fit weighing it, each comparison's values, level and weight (log2 Bayes factor), then
    the total weight and the probability against the threshold."""
    blocks = info.get("blocking", [])
    together = [b for b in blocks if b["together"]]
    # A compared pair shows the rules that found it; one never compared shows why each rule did not.
    lines = [_block_line(b) for b in (together or blocks)]
    if together and len(blocks) > len(together):
        lines.append(f"  ({len(blocks) - len(together)} other blocking rule(s) do not put the two in one block)")
    compared = info.get("compared", True)
    if not compared:
        lines.append(
            "  never compared: no blocking rule puts the two records in one block; add a blocking rule on a field "
            "they share to compare such pairs"
        )
    lines.append(f"model: prior weight {info['prior_weight']:+.2f}{_fit_text(info)}")
    for c in info["comparisons"]:
        lines.append(f"  {c['weight']:+7.2f}  {c['comparison']}: {_comparison_text(c)}")
    for column, values in info.get("too_frequent", {}).items():
        held = ", ".join(f"{v!r} ({n:,} records)" for v, n in values.items())
        lines.append(
            f"  {column} {held}: ignored (missing) as held by more than guard.max_value_frequency "
            f"({info['max_value_frequency']}) records"
        )
    verdict = "LINK" if info["link"] else "no link"
    if not compared:
        # The model's verdict on a pair the run never scored is only what it would have said.
        verdict += (
            " had the run compared the pair; it never did, so this verdict did not apply"
            if info["link"]
            else " (the run never compared the pair)"
        )
    lines.append(
        f"  total weight {info['match_weight']:+.2f} -> probability {info['match_probability']:.4f} "
        f"(threshold {info['threshold']}): {verdict}"
    )
    steps = [("prior", info["prior_weight"])]
    steps += [(f"{c['comparison']} {c['level']}", c["weight"]) for c in info["comparisons"]]
    lines.append("  waterfall (each step's weight and the running total):")
    lines += [f"    {line}" for line in waterfall_figure(steps, "total weight")]
    return lines


def _block_line(block: dict) -> str:
    """``blocking [first_name, birth_date]: different keys ('anna'|'19800102' vs 'ana'|'19800102')``; a key made
    by a function shows what blocking compared beside the value (``'eva' of 'evans'``)."""
    sides = [
        "|".join(repr(v) if k == v or k is None else f"{k!r} of {v!r}" for v, k in zip(values, keys, strict=True))
        for values, keys in zip(block["values"], block["keys"], strict=True)
    ]
    # Keys made by a function (soundex, prefix, year) put unequal values in one block: then both are shown.
    left, right = sides
    values = left if left == right else f"{left} vs {right}"
    return f"blocking [{', '.join(block['rule'])}]: {block['state']} ({values})"


def _fit_text(info: dict) -> str:
    """Which fit weighs the pair: its prior (and every weight) differs between a stratum and the main fit."""
    if info.get("stratum"):
        keys = " or ".join(f"[{', '.join(key)}]" for key in info["stratum"])
        return f" (pairs agreeing on {keys}, fitted apart)"
    return " (pairs in no stratum: the main fit)" if info.get("strata") else ""


def _comparison_text(c: dict) -> str:
    """One comparison's values and level: ``'smith' vs 'smith': exact``."""
    text = f"{_text(c['left_value'])!r} vs {_text(c['right_value'])!r}: {c['level']}"
    if c.get("values_of"):
        text = f"{c['values_of']} {text}"
    if c.get("crossed"):
        # Each record's value of one name column is the other record's value of the other column.
        (one, mine), (other, theirs) = c["crossed"].items()
        return f"{text} ({one}|{other} {mine[0]!r}|{theirs[0]!r} vs {mine[1]!r}|{theirs[1]!r})"
    if c.get("weighed_under"):
        return f"{text} (counted once, under {c['weighed_under']})"
    rarity = c.get("term_frequency")
    # The exact level's weight is that of an average value; a rare one counts for more, a common one for less.
    return text if rarity is None else f"{text} ({rarity:+.2f} of it for how rare the value is)"


def _fmt(scores: dict) -> str:
    shown = ", ".join(f"{k} {'n/a' if v is None else v}" for k, v in scores.items())
    return f"({shown})" if scores else ""


def _score_text(c: dict) -> str:
    return "score " + ("n/a (missing value allowed)" if c["score"] is None else str(c["score"]))
