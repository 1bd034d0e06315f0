"""Brand and interest affinity from first-party purchases (docs/enrichment.md, "Affinity").

Each customer's recency-weighted spend (or quantity) per brand or interest, plus a prior (what customers like
them, of the same gender, age band and postal area where the profile has them, spend on it on average), is scored
0-100 as its percentile among all customers: an affinity relative to peers. The prior decides for customers with
little or no history and hardly moves those with much. Everything runs on integer codes with ``bincount`` and
sorted arrays, and the Values JSON is joined column-wise by Arrow: no Python per customer or per line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError
from scipy.stats import rankdata

from ci_pipeline.config.enrich import AFFINITY_PROVIDERS, AffinityParams, PriorFields
from ci_pipeline.enrich.provider import EnrichmentFailed, EnrichmentInputs, EnrichmentResult, ProviderContext

#: Provider -> the EnrichmentType it publishes by default.
TYPES = {"brand_affinity": "BrandAffinity", "interest_affinity": "InterestAffinity"}
#: Levels by score, as the reference defines them (a score of 0, no purchases anywhere, has no level).
LEVELS = ((85, "Very high"), (70, "High"), (35, "Medium"), (1, "Low"))
#: Age bands of the prior groups, by lower bound in years.
AGE_BANDS = ((0, "<25"), (25, "25-34"), (35, "35-44"), (45, "45-54"), (55, "55-64"), (65, "65+"))
DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class AffinityModel:
    """Own shares and group priors of every customer; :meth:`shares` gives the blended shares of any names.

    Attributes:
        customers: every CustomerId of the profile, sorted; rows of every per-customer array.
        names: the brands or interests, sorted; ``name`` codes index it.
        pair_customer, pair_name, pair_spend: the customer's own recency-weighted spend per name bought (sparse,
            sorted by customer then name).
        lines: purchase lines per customer.
        group: the prior group of each customer (row of ``prior``).
        prior: groups x names: the average recency-weighted spend of customers like them.
        group_labels: a readable label per group (``Gender=f, AgeBand=35-44, PostalArea=021``).
        strength: how many such average customers' spend the prior adds.
    """

    customers: pd.Index
    names: np.ndarray
    pair_customer: np.ndarray
    pair_name: np.ndarray
    pair_spend: np.ndarray
    lines: np.ndarray
    group: np.ndarray
    prior: np.ndarray
    group_labels: np.ndarray
    strength: float

    def own_spend(self, columns: np.ndarray) -> np.ndarray:
        """customers x ``columns``: each customer's own recency-weighted spend (0 where none)."""
        out = np.zeros((len(self.customers), len(columns)))
        position = np.full(len(self.names), -1)
        position[columns] = np.arange(len(columns))
        keep = position[self.pair_name] >= 0
        out[self.pair_customer[keep], position[self.pair_name[keep]]] = self.pair_spend[keep]
        return out

    def affinity(self, columns: np.ndarray) -> np.ndarray:
        """customers x ``columns``: own recency-weighted spend plus ``strength`` times the group prior."""
        return self.own_spend(columns) + self.strength * self.prior[self.group][:, columns]

    def top(self) -> np.ndarray:
        """Each customer's name code with the highest affinity (ties: the first name in sort order)."""
        prior_top = self.prior.argmax(axis=1)[self.group]
        best = self.strength * self.prior.max(axis=1)[self.group]
        choice = prior_top.copy()
        if len(self.pair_spend):
            c = self.pair_customer
            blended = self.pair_spend + self.strength * self.prior[self.group[c], self.pair_name]
            # The pairs are sorted by customer, then name: each customer's highest affinity comes from one
            # maximum.reduceat, and its first pair holding it is the first such name.
            starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
            highest = np.maximum.reduceat(blended, starts)
            at_max = np.flatnonzero(blended == np.repeat(highest, np.diff(np.r_[starts, len(c)])))
            first = at_max[np.r_[True, c[at_max][1:] != c[at_max][:-1]]]
            owner = c[first]
            better = blended[first] > best[owner]
            tie = (blended[first] == best[owner]) & (self.pair_name[first] < prior_top[owner])
            take = better | tie
            choice[owner[take]] = self.pair_name[first][take]
        return choice


def settings_from(params: Mapping, provider: str, enrichment: str = "") -> AffinityParams:
    """The affinity parameters of one configured enrichment; bad ones are an :class:`EnrichmentFailed`."""
    try:
        settings = AffinityParams.model_validate(dict(params))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise EnrichmentFailed(f"enrich.enrichments.{enrichment}.params: {problems}") from None
    return settings if settings.field else settings.model_copy(update={"field": AFFINITY_PROVIDERS[provider]})


def purchase_lines(
    facts: pd.DataFrame | None,
    settings: AffinityParams,
    enrichment: str,
    catalog: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """CustomerId, Time, Name, Value of the purchase lines (Value: spend or quantity; returns negative).

    Raises:
        EnrichmentFailed: the activity is not on the timeline or maps no brand/category or weight field.
    """
    where = f"enrich.enrichments.{enrichment}.params"
    if facts is None or "Activity" not in facts.columns:
        raise EnrichmentFailed(f"{where}: affinities need the activity timeline; configure activities.tables")
    needed = ["CustomerId", "ActivityTimeStamp", settings.field, settings.amount, settings.quantity, "product"]
    rows = facts.loc[facts["Activity"] == settings.activity, [c for c in dict.fromkeys(needed) if c in facts.columns]]
    weight = settings.amount if settings.weight == "spend" else settings.quantity
    names = rows[settings.field] if settings.field in rows.columns else None
    if catalog is not None and settings.catalog is not None:
        names = _from_catalog(rows, catalog, settings, where)
    if names is None:
        raise EnrichmentFailed(
            f"{where}.field: activity {settings.activity!r} has no field {settings.field!r}; map the product's "
            f"{'brand' if settings.field == 'brand' else settings.field} column under "
            f"activities.tables.{settings.activity}.fields ({settings.field}: <column>), or read it from a product "
            "table with params.catalog"
        )
    if weight not in rows.columns:
        raise EnrichmentFailed(
            f"{where}: activity {settings.activity!r} has no {weight!r} field; map it under "
            f"activities.tables.{settings.activity}.fields or set params.weight"
        )
    # Columns stay pandas arrays: a numpy copy of text or zoned timestamps is one Python object per row.
    return pd.DataFrame(
        {
            "CustomerId": rows["CustomerId"].astype("string").reset_index(drop=True),
            "Time": pd.to_datetime(rows["ActivityTimeStamp"], utc=True).dt.as_unit("ns").reset_index(drop=True),
            "Name": _names(names),
            "Value": pd.to_numeric(rows[weight], errors="coerce").astype("float64").reset_index(drop=True),
        }
    )


def _names(values) -> pd.Categorical:
    """Brand or category names with surrounding blanks removed (an empty one is missing), as categories: the
    distinct names are cleaned once, not every row."""
    codes, uniques = pd.factorize(pd.Series(values, dtype="string"))
    cleaned = pd.Series(uniques, dtype="string").str.strip().replace("", pd.NA)
    final, names = pd.factorize(cleaned, sort=True)
    codes = np.where(codes >= 0, np.append(final, -1)[codes], -1)
    return pd.Categorical.from_codes(codes, categories=pd.Index(names, dtype="string"))


def _from_catalog(rows: pd.DataFrame, catalog: pd.DataFrame, settings: AffinityParams, where: str) -> pd.Series:
    spec = settings.catalog
    column = next((c for c, n in spec.columns.items() if n == settings.field), None)
    if column is None:
        return rows[settings.field] if settings.field in rows.columns else None
    missing = [c for c in (spec.key, column) if c not in catalog.columns]
    if missing:
        raise EnrichmentFailed(
            f"{where}.catalog: {spec.source}.{spec.table} has no column {', '.join(missing)}; "
            f"it has {', '.join(map(str, catalog.columns))}"
        )
    if "product" not in rows.columns:
        raise EnrichmentFailed(
            f"{where}.catalog: activity {settings.activity!r} has no 'product' field to look up in the catalog; "
            f"map it under activities.tables.{settings.activity}.fields (product: <column>)"
        )
    lookup = catalog.drop_duplicates(spec.key).set_index(catalog[spec.key].drop_duplicates().astype("string"))
    return lookup[column].reindex(rows["product"].astype("string").to_numpy()).to_numpy()


def fit_affinity(
    lines: pd.DataFrame, profile: pd.DataFrame, settings: AffinityParams, as_of: pd.Timestamp
) -> tuple[AffinityModel, dict[str, int]]:
    """Own shares and group priors of every profile customer from purchase lines before ``as_of`` (exclusive).

    Returns the model and counts of the lines: used, without a name, after ``as_of``, of unknown customers.
    """
    customers = pd.Index(profile["CustomerId"].astype("string").dropna().unique(), dtype="string").sort_values()
    # Each distinct id is looked up once: hashing every line's id against the profile is the slow part.
    line_codes, line_ids = pd.factorize(lines["CustomerId"])
    code = np.where(line_codes >= 0, np.append(customers.get_indexer(line_ids), -1)[line_codes], -1)
    stamps = pd.to_datetime(lines["Time"], utc=True).dt.as_unit("ns")
    time = stamps.array.asi8
    cutoff = as_of.tz_convert("UTC").as_unit("ns").value
    named = lines["Name"].notna().to_numpy()
    known, before = code >= 0, stamps.notna().to_numpy() & (time < cutoff)
    use = known & before & named & np.isfinite(lines["Value"].to_numpy())
    counts = {
        "lines_used": int(use.sum()),
        "lines_without_name": int((known & before & ~named).sum()),
        "lines_after_as_of": int((known & ~before).sum()),
        "lines_of_unknown_customers": int((~known).sum()),
    }
    name_codes, names = _used_names(lines["Name"], use)
    c, value = code[use], lines["Value"].to_numpy()[use]
    decay = np.exp2(-((cutoff - time[use]) / DAY_NS) / settings.half_life_days)
    n, k = len(customers), max(len(names), 1)
    # A dense customers x names sum (at most 512 MB) is much faster than sorting the lines, which many names need.
    spend = np.bincount(c * k + name_codes, weights=value * decay, minlength=n * k) if n * k <= 2**26 else None
    pair_customer, pair_name, pair_value = _pairs(c, name_codes, value * decay, k, spend)
    pair_value = np.clip(pair_value, 0, None)
    keep = pair_value > 0
    pair_customer, pair_name = pair_customer[keep], pair_name[keep]
    bought = value > 0
    line_count = np.bincount(c[bought], minlength=n)
    pair_spend = pair_value[keep]
    group, prior, labels = _group_priors(customers, profile, settings, as_of, pair_customer, pair_name, pair_spend, k)
    model = AffinityModel(
        customers, names, pair_customer, pair_name, pair_spend, line_count, group, prior, labels,
        settings.prior_strength,
    )  # fmt: skip
    return model, counts


def _used_names(names, use: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes (into the sorted names bought) of the lines used, and those names; names only bought after the
    reference date are left out."""
    if not isinstance(names.dtype, pd.CategoricalDtype):
        codes, uniques = pd.factorize(names[use], sort=True)
        return codes, np.asarray(uniques, dtype=object)
    codes = names.cat.codes.to_numpy()[use]
    present = np.bincount(codes, minlength=len(names.cat.categories)) > 0
    position = np.cumsum(present) - 1
    return position[codes], np.asarray(names.cat.categories[present], dtype=object)


def _pairs(c: np.ndarray, name: np.ndarray, weight: np.ndarray, k: int, dense: np.ndarray | None):
    """(customer, name, summed weight) per pair bought, sorted by customer then name."""
    if dense is not None:
        # Pairs whose lines sum to 0 (a purchase and its return) are dropped by the caller anyway.
        flat = np.flatnonzero(dense)
        return flat // k, flat % k, dense[flat]
    keys, inverse = np.unique(c.astype(np.int64) * k + name, return_inverse=True)
    return keys // k, keys % k, np.bincount(inverse, weights=weight)


def _attributes(customers: pd.Index, profile: pd.DataFrame, fields: PriorFields, as_of: pd.Timestamp) -> list:
    """(label, codes, values) per prior attribute the profile has: gender, age band, postal area (or city)."""
    wanted = [c for c in (fields.gender, fields.birth_date, fields.postal_code, fields.city) if c in profile.columns]
    frame = profile.drop_duplicates("CustomerId")
    frame = frame[wanted].set_index(frame["CustomerId"].astype("string")).reindex(customers)

    def column(name: str | None) -> pd.Series | None:
        if name is None or name not in frame.columns:
            return None
        values = frame[name].astype("string").str.strip().str.casefold().replace("", pd.NA)
        return values if values.notna().any() else None

    found = []
    gender = column(fields.gender)
    if gender is not None:
        found.append(("Gender", gender))
    birth = column(fields.birth_date)
    if birth is not None:
        born = pd.to_datetime(birth, errors="coerce", format="mixed", utc=True)
        age = (as_of - born).dt.days / 365.25
        bounds = [b for b, _ in AGE_BANDS]
        band = pd.Series(np.searchsorted(bounds, age.to_numpy(dtype=float, na_value=np.nan), side="right") - 1)
        labels = np.array([label for _, label in AGE_BANDS] + [None], dtype=object)
        band = band.where(age.notna().to_numpy() & (age.to_numpy(dtype=float, na_value=-1) >= 0), len(AGE_BANDS))
        found.append(("AgeBand", pd.Series(labels[band.to_numpy()], index=customers, dtype="string")))
    postal, city = column(fields.postal_code), column(fields.city)
    if postal is not None or city is not None:
        area = pd.Series(pd.NA, index=customers, dtype="string")
        if postal is not None:
            area = postal.str.replace(r"\s+", "", regex=True).str[: fields.postal_prefix]
        if city is not None:
            area = area.fillna("city " + city)
        found.append(("PostalArea", area))
    return found


def _group_priors(customers, profile, settings, as_of, pair_customer, pair_name, pair_spend, k):
    """Each customer's finest group, the groups' average spend per name (each shrunk towards its parent group's:
    ``min_group`` customers' worth) and readable labels."""
    n = len(customers)
    has_history = np.bincount(pair_customer, minlength=n) > 0
    if not has_history.any():
        raise EnrichmentFailed("no purchase with a positive value and a name before the reference date")
    m = float(settings.min_group)
    group = np.zeros(n, dtype=np.int64)
    prior = np.bincount(pair_name, weights=pair_spend, minlength=k)[None, :] / n
    labels = np.array(["all customers"], dtype=object)
    for label, values in _attributes(customers, profile, settings.prior_fields, as_of):
        value_codes, uniques = pd.factorize(values, sort=True)
        text = np.append(np.asarray(uniques, dtype=object), "unknown")
        value_codes = np.where(value_codes < 0, len(uniques), value_codes)
        group, parent = _refine(group, value_codes, len(uniques) + 1)
        groups = len(parent)
        sums = np.bincount(group[pair_customer] * k + pair_name, weights=pair_spend, minlength=groups * k)
        members = np.bincount(group, minlength=groups).astype(float)
        prior = (sums.reshape(groups, k) + m * prior[parent]) / (members + m)[:, None]
        first = np.unique(group, return_index=True)[1]
        part = np.array([f"{label}={v}" for v in text], dtype=object)[value_codes[first]]
        labels = np.where(labels[parent] == "all customers", part, labels[parent] + ", " + part)
    return group, prior, labels


def _refine(group: np.ndarray, values: np.ndarray, cardinality: int) -> tuple[np.ndarray, np.ndarray]:
    """Split each group by one more attribute: the new group codes and each new group's parent."""
    keys, inverse = np.unique(group * cardinality + values, return_inverse=True)
    return inverse.astype(np.int64), keys // cardinality


def scores(shares: np.ndarray) -> np.ndarray:
    """customers x names: the 1-100 percentile of each share among all customers (0 where the share is 0)."""
    if not len(shares):
        return np.zeros(shares.shape, dtype=np.int64)
    ranks = rankdata(shares, method="average", axis=0)
    # Average ranks: tied customers share a score, and the one customer with the highest share scores 100.
    out = np.clip(np.ceil(100 * ranks / len(shares)), 1, 100).astype(np.int64)
    return np.where(shares > 0, out, 0)


def levels(score: np.ndarray) -> np.ndarray:
    """The reference's level per score (None for 0)."""
    out = np.full(score.shape, None, dtype=object)
    for bound, label in reversed(LEVELS):
        out[score >= bound] = label
    return out


def share_of_voice(shares: np.ndarray) -> np.ndarray:
    """Whole percentages of each row's shares, summing to 100 (largest remainders round up); 0 for an empty row."""
    total = shares.sum(axis=1, keepdims=True)
    exact = np.divide(100 * shares, total, out=np.zeros_like(shares), where=total > 0)
    floor = np.floor(exact)
    short = np.where(total[:, 0] > 0, 100 - floor.sum(axis=1), 0).astype(np.int64)
    # Columns ordered by remainder (largest first, then position): the first `short` of each row get one more.
    order = np.lexsort((np.broadcast_to(np.arange(shares.shape[1]), shares.shape), -(exact - floor)), axis=1)
    bump = np.zeros(shares.shape, dtype=bool)
    np.put_along_axis(bump, order, np.arange(shares.shape[1])[None, :] < short[:, None], axis=1)
    return (floor + bump).astype(np.int64)


def chosen_names(model: AffinityModel, settings: AffinityParams) -> tuple[np.ndarray, list[str]]:
    """The codes of the names scored (configured, else the ``top`` most bought by weighted share) and warnings."""
    if settings.chosen:
        lookup = {str(name): i for i, name in enumerate(model.names)}
        unknown = [name for name in settings.chosen if name not in lookup]
        warnings = [
            f"{name!r} was never bought ({settings.field}); it scores 0 for everyone. Check its spelling"
            for name in unknown
        ]
        # A name never bought gets a column of its own, after the known names, with no share anywhere.
        codes = [lookup.get(name, len(model.names) + i) for i, name in enumerate(settings.chosen)]
        return np.array(codes, dtype=np.int64), warnings
    weight = np.bincount(model.pair_name, weights=model.pair_spend, minlength=len(model.names))
    order = np.lexsort((np.arange(len(weight)), -weight))
    return order[: settings.top].astype(np.int64), []


def _json_str(values) -> np.ndarray:
    return np.array([json.dumps(str(v), ensure_ascii=False) for v in values], dtype=object)


def _values_json(model, labels, score, level, voice, top, prior_flag) -> pa.Array:
    """The Values JSON per customer, key-sorted and compact, joined column-wise by Arrow (no Python per row)."""
    names = _json_str(labels)
    parts: list = ['{"Affinity":{']
    for i, j in enumerate(np.argsort(np.array(labels, dtype=str), kind="stable")):
        text = pa.array(level[:, j], type=pa.string())
        quoted = pc.if_else(pc.is_null(text), "null", pc.binary_join_element_wise('"', text, '"', ""))
        parts += [
            ("," if i else "") + names[j] + ':{"Level":',
            quoted,
            ',"Score":',
            pa.array(score[:, j]).cast(pa.string()),
        ]
        parts += [',"ShareOfVoice":', pa.array(voice[:, j]).cast(pa.string()), "}"]
    top_names = pa.array(_json_str(model.names) if len(model.names) else ["null"], type=pa.string()).take(top)
    group = pa.array(_json_str(model.group_labels), type=pa.string()).take(model.group)
    flag = pc.if_else(pa.array(prior_flag, type=pa.bool_()), "true", "false")
    parts += ['},"Prior":', flag, ',"PriorGroup":', group, ',"Top":', top_names, "}"]
    return pc.binary_join_element_wise(*parts, "")


def affinity_result(model: AffinityModel, settings: AffinityParams, provider: str, counts: Mapping[str, int]):
    """The enrichment's values (one row per profile customer) and its flat segment fields."""
    codes, warnings = chosen_names(model, settings)
    known = codes < len(model.names)
    shares = np.zeros((len(model.customers), len(codes)))
    if known.any():
        shares[:, known] = model.affinity(codes[known])
    labels = [str(model.names[c]) if c < len(model.names) else settings.chosen[i] for i, c in enumerate(codes)]
    score = scores(shares)
    level = levels(score)
    voice = share_of_voice(shares)
    top = model.top()
    prior_flag = model.lines < settings.min_lines
    enrichment_type = settings.type or TYPES[provider]
    values = pd.DataFrame(
        {
            "CustomerId": model.customers.astype("string"),
            "EnrichmentType": pd.array([enrichment_type] * len(model.customers), dtype="string"),
            "Values": pd.arrays.ArrowStringArray(_values_json(model, labels, score, level, voice, top, prior_flag)),
        }
    )
    fields = {"CustomerId": model.customers.astype("string")}
    fields["Top"] = pd.array(model.names[top] if len(model.names) else [None] * len(top), dtype="string")
    fields["Prior"] = pd.array(prior_flag, dtype="boolean")
    for j, label in enumerate(labels):
        fields[f"Affinity.{label}.Score"] = score[:, j].astype("float64")
        fields[f"Affinity.{label}.Level"] = pd.array(level[:, j], dtype="string")
        fields[f"Affinity.{label}.ShareOfVoice"] = voice[:, j].astype("float64")
    report_counts = dict(counts) | {
        "customers": len(model.customers),
        "customers_with_history": int((model.lines > 0).sum()),
        "customers_on_prior": int(prior_flag.sum()),
        "names": len(model.names),
        "prior_groups": len(model.group_labels),
    }
    report = {"scored": ", ".join(labels)}
    return EnrichmentResult(values, report_counts, tuple(warnings), report, pd.DataFrame(fields))


class AffinityProvider:
    """Brand (``brand_affinity``) or interest (``interest_affinity``) affinity of every profile customer.

    Its rows are published with the project name as EnrichmentProvider: the values are first-party.
    """

    needs = frozenset({"activities"})

    def __init__(self, provider: str, settings: AffinityParams, context: ProviderContext):
        self.provider, self.settings, self.enrichment = provider, settings, context.enrichment
        self.name = context.project

    @property
    def tables(self) -> tuple[tuple[str, str], ...]:
        """Source tables the provider reads besides the timeline (its catalog)."""
        catalog = self.settings.catalog
        return ((catalog.source, catalog.table),) if catalog is not None else ()

    def enrich(self, inputs: EnrichmentInputs) -> EnrichmentResult:
        """The affinity values of every customer in ``inputs.profiles``."""
        catalog = None
        if self.settings.catalog is not None:
            catalog = inputs.tables.get(f"{self.settings.catalog.source}.{self.settings.catalog.table}")
        lines = purchase_lines(inputs.activities, self.settings, self.enrichment, catalog)
        as_of = inputs.as_of if inputs.as_of is not None else lines["Time"].max() + pd.Timedelta(1, "ns")
        if pd.isna(as_of):
            raise EnrichmentFailed(
                f"enrich.enrichments.{self.enrichment}: activity {self.settings.activity!r} has no purchases; "
                "affinities need purchase history"
            )
        try:
            model, counts = fit_affinity(lines, inputs.profiles, self.settings, pd.Timestamp(as_of))
        except EnrichmentFailed as exc:
            raise EnrichmentFailed(
                f"enrich.enrichments.{self.enrichment}: activity {self.settings.activity!r}: {exc}"
            ) from None
        return affinity_result(model, self.settings, self.provider, counts)


def build_brand(params: Mapping, context: ProviderContext) -> AffinityProvider:
    """The ``brand_affinity`` provider."""
    return AffinityProvider("brand_affinity", settings_from(params, "brand_affinity", context.enrichment), context)


def build_interest(params: Mapping, context: ProviderContext) -> AffinityProvider:
    """The ``interest_affinity`` provider."""
    return AffinityProvider(
        "interest_affinity", settings_from(params, "interest_affinity", context.enrichment), context
    )
