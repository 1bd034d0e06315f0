"""Brand and interest affinity from first-party purchases (docs/enrichment.md, "Affinity").

Each customer's recency-weighted spend (or quantity) per brand or interest, plus a prior (what customers like
them, of the same gender, age band and postal area where the profile has them, spend on it on average), is scored
0-100 as its percentile among all customers: an affinity relative to peers. The prior decides for customers with
little or no history and hardly moves those with much. Everything runs on integer codes with ``bincount`` and
sorted arrays, and the Values JSON is joined column-wise by Arrow: no Python per customer or per line.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from pydantic import ValidationError
from scipy import sparse
from scipy.stats import rankdata

from ci_pipeline.config.enrich import AFFINITY_PROVIDERS, AffinityParams, PriorFields
from ci_pipeline.config.messages import describe_errors
from ci_pipeline.config.unify import DATE_TEXT_SUFFIX
from ci_pipeline.enrich.provider import (
    EnrichmentFailed,
    EnrichmentInputs,
    EnrichmentResult,
    ProviderContext,
    constant_text,
    json_strings,
)
from ci_pipeline.sql_text import literal

#: Provider -> the EnrichmentType it publishes by default.
TYPES = {"brand_affinity": "BrandAffinity", "interest_affinity": "InterestAffinity"}
#: Levels by score, as the reference defines them (a score of 0, no purchases anywhere, has no level).
LEVELS = ((85, "Very high"), (70, "High"), (35, "Medium"), (1, "Low"))
#: Age bands of the prior groups, by lower bound in years.
AGE_BANDS = ((0, "<25"), (25, "25-34"), (35, "35-44"), (45, "45-54"), (55, "55-64"), (65, "65+"))
DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class AffinityModel:
    """Own spend, spend on related names and group priors of every customer; :meth:`affinity` blends them.

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
        related: names x names, sparse: ``related[a, b]`` is the share of a's buyers who also bought b (1 for
            ``a == b``): how much spend on a says about b.
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
    related: sparse.csr_matrix

    @cached_property
    def spend(self) -> sparse.csr_matrix:
        """customers x names, sparse: each customer's own recency-weighted spend."""
        shape = (len(self.customers), max(len(self.names), 1))
        return sparse.csr_matrix((self.pair_spend, (self.pair_customer, self.pair_name)), shape=shape)

    def affinity(self, columns: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
        """``rows`` of customers x ``columns``. A customer with purchases: own spend plus the expected spend (own
        total plus ``strength`` average customers like them) spread by the names their purchases relate to. One
        without: ``strength`` times the group prior (what customers like them spend on it)."""
        own = self.spend[rows]
        total = np.asarray(own.sum(axis=1)).ravel()
        shares = sparse.diags(np.divide(1.0, total, out=np.zeros_like(total), where=total > 0)) @ own
        # Each name's share spread over the names its buyers also buy, normalised to sum to 1 per customer.
        spread = np.asarray((shares @ self.related[:, columns]).todense())
        reach = np.asarray(shares @ np.asarray(self.related.sum(axis=1)).ravel()).ravel()
        prior = self.prior[self.group[rows]]
        expected = total + self.strength * prior.sum(axis=1)
        related = spread * np.divide(expected, reach, out=np.zeros_like(reach), where=reach > 0)[:, None]
        return np.where((total > 0)[:, None], own[:, columns].toarray() + related, self.strength * prior[:, columns])

    def scored(self, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(customers x ``columns`` affinity, each customer's name code with the highest affinity; ties: the first
        name in sort order), from one computation of every name's affinity."""
        n, k = len(self.customers), len(self.names)
        shares = np.zeros((n, len(columns)))
        top = np.zeros(n, dtype=np.int64)
        if not k:
            return shares, top
        # By blocks of customers, so the customers x names affinity is never held whole.
        step = max(1, 2**22 // k)
        for start in range(0, n, step):
            block = slice(start, min(start + step, n))
            every = self.affinity(np.arange(k), block)
            top[block] = every.argmax(axis=1)
            shares[block] = every[:, columns]
        return shares, top


def related_names(pair_customer: np.ndarray, pair_name: np.ndarray, customers: int, k: int) -> sparse.csr_matrix:
    """names x names: the share of each name's buyers who also bought each other name (1 on the diagonal)."""
    bought = sparse.csr_matrix(
        (np.ones(len(pair_name)), (pair_customer, pair_name)), shape=(customers, k), dtype=np.float64
    )
    both = (bought.T @ bought).tocsr()
    buyers = both.diagonal()
    return sparse.diags(np.divide(1.0, buyers, out=np.zeros(k), where=buyers > 0)) @ both


def settings_from(params: Mapping, provider: str, enrichment: str = "") -> AffinityParams:
    """The affinity parameters of one configured enrichment; bad ones are an :class:`EnrichmentFailed`."""
    try:
        settings = AffinityParams.model_validate(dict(params))
    except ValidationError as exc:
        problems = describe_errors(exc, AffinityParams, f"enrich.enrichments.{enrichment}.params")
        raise EnrichmentFailed("; ".join(problems)) from None
    return settings if settings.field else settings.model_copy(update={"field": AFFINITY_PROVIDERS[provider]})


#: Characters stripped around a brand or category name (the ASCII blanks ``str.strip`` strips).
_BLANKS = "' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13)"
#: Memory DuckDB may use while summing the lines; beyond it, it spills to disk, so the scan's memory stays bounded
#: whatever the number of lines.
SCAN_MEMORY = "2GB"
#: The type each line's weighted value is summed in: fixed point, so that a sum is exact and the same whatever order
#: DuckDB's threads add the lines in (a sum of doubles is not); a value that is not a finite number below 10^18 is
#: not used.
_EXACT = "DECIMAL(30, 12)"
#: The memo key under which :func:`shared_memo` lists the configured affinities (so one scan serves them all).
PLAN = "affinity_plan"


@dataclass(frozen=True)
class PurchasePairs:
    """The purchase lines before the reference date of one name field, summed per customer and name.

    Attributes:
        customer, name: per pair with a positive sum, codes into the profile's sorted customers and into
            ``names``; sorted by customer, then name.
        spend: the pair's recency-weighted spend (or quantity), returns subtracted.
        lines: per customer: purchase lines with a name and a positive value.
        names: the names of the lines used, sorted.
        counts: lines used, without a name, after the reference date, of customers the profile does not hold.
    """

    customer: np.ndarray
    name: np.ndarray
    spend: np.ndarray
    lines: np.ndarray
    names: np.ndarray
    counts: dict[str, int]


def _columns(source) -> list[str]:
    return list(source.columns) if isinstance(source, pd.DataFrame) else list(source.schema.names)


def _weight(settings: AffinityParams) -> str:
    return settings.amount if settings.weight == "spend" else settings.quantity


def _from_catalog(settings: AffinityParams) -> str | None:
    """The catalog column holding the name field, when the name is read from a product table."""
    if settings.catalog is None:
        return None
    return next((c for c, n in settings.catalog.columns.items() if n == settings.field), None)


def check_source(source, settings: AffinityParams, where: str) -> None:
    """Refuse a timeline without the activity's name (or product) and weight fields, naming what to map."""
    columns = _columns(source) if source is not None else []
    if "Activity" not in columns:
        raise EnrichmentFailed(f"{where}: affinities need the activity timeline; configure activities.tables")
    if _from_catalog(settings) is not None:
        if "product" not in columns:
            raise EnrichmentFailed(
                f"{where}.catalog: activity {settings.activity!r} has no 'product' field to look up in the "
                f"catalog; map it under activities.tables.{settings.activity}.fields (product: <column>)"
            )
    elif settings.field not in columns:
        raise EnrichmentFailed(
            f"{where}.field: activity {settings.activity!r} has no field {settings.field!r}; map the product's "
            f"{'brand' if settings.field == 'brand' else settings.field} column under "
            f"activities.tables.{settings.activity}.fields ({settings.field}: <column>), or read it from a product "
            "table with params.catalog"
        )
    if _weight(settings) not in columns:
        raise EnrichmentFailed(
            f"{where}: activity {settings.activity!r} has no {_weight(settings)!r} field; map it under "
            f"activities.tables.{settings.activity}.fields or set params.weight"
        )


def check_catalog(catalog: pd.DataFrame | None, settings: AffinityParams, where: str) -> None:
    """Refuse a catalog without its key or name column."""
    spec, column = settings.catalog, _from_catalog(settings)
    if column is None:
        return
    if catalog is None:
        raise EnrichmentFailed(f"{where}.catalog: the product table {spec.source}.{spec.table} was not read")
    missing = [c for c in (spec.key, column) if c not in catalog.columns]
    if missing:
        raise EnrichmentFailed(
            f"{where}.catalog: {spec.source}.{spec.table} has no column {', '.join(missing)}; "
            f"it has {', '.join(map(str, catalog.columns))}"
        )


def shared_memo(enrichments: Mapping) -> dict:
    """A memo for one run's enrichments, listing the affinities configured (``EnrichmentSpec`` by name), so that
    the first affinity to read the purchase lines sums them for every affinity over the same lines in one pass."""
    plan = []
    for name, spec in enrichments.items():
        if spec.provider in AFFINITY_PROVIDERS and spec.active:
            try:
                plan.append(settings_from(spec.params, spec.provider, name))
            except EnrichmentFailed:
                continue  # that enrichment fails with its own message when it runs
    return {PLAN: plan}


def _scan_key(settings: AffinityParams) -> tuple:
    """Affinities with the same key sum the same lines with the same weights: one scan serves them all."""
    return settings.activity, _weight(settings), settings.half_life_days


def _request(settings: AffinityParams) -> tuple[str, str, str | None]:
    """(timeline column grouped by, name field, catalog JSON): what one affinity's pairs depend on besides the key."""
    if _from_catalog(settings) is None:
        return settings.field, settings.field, None
    return "product", settings.field, settings.catalog.model_dump_json()


def latest_purchase(source, settings: AffinityParams) -> pd.Timestamp | None:
    """The time of the activity's last line, or None when it has none."""
    with _connect() as con:
        _register_facts(con, source)
        found = con.execute(
            'SELECT max(epoch_ns("ActivityTimeStamp")) FROM facts WHERE "Activity" = ?', [settings.activity]
        ).fetchone()[0]
    return None if found is None else pd.Timestamp(found, unit="ns", tz="UTC")


def name_sql(column: str) -> str:
    """DuckDB SQL of a brand or category name as the affinities read it: blanks around it removed, empty missing."""
    return f"NULLIF(trim(CAST(\"{column}\" AS VARCHAR), {_BLANKS}), '')"


def _register_facts(con, source) -> None:
    """The timeline as the view ``facts``: a local Parquet dataset through DuckDB's own reader (in parallel by row
    group, with less work per row than through Arrow's scanner), anything else as it is."""
    local = isinstance(source, ds.FileSystemDataset) and isinstance(source.filesystem, pafs.LocalFileSystem)
    if local and source.files:
        files = ", ".join(map(literal, source.files))
        con.execute(f"CREATE TEMP VIEW facts AS SELECT * FROM read_parquet([{files}])")
    else:
        con.register("facts", source)


@contextmanager
def _connect():
    """A DuckDB connection of bounded memory that spills to a temporary folder of its own (not the working one)."""
    import duckdb

    with tempfile.TemporaryDirectory(prefix="ci-affinity-") as spill, duckdb.connect() as con:
        con.execute(
            f"SET memory_limit = '{SCAN_MEMORY}'; SET preserve_insertion_order = false; SET enable_progress_bar = false"
        )
        con.execute("SET temp_directory = ?", [spill])
        yield con


def purchase_pairs(
    source,
    customers: pd.Index,
    settings: AffinityParams,
    as_of: pd.Timestamp,
    tables: Mapping[str, pd.DataFrame],
    memo: dict,
) -> PurchasePairs:
    """The pairs of ``settings``' name field, from the lines of ``source`` (the activity timeline: a DataFrame or
    an Arrow dataset) before ``as_of``. The lines are summed by DuckDB, out of core and reading only the columns
    used, for every affinity of the run over the same lines at once (``memo[PLAN]``); the others find theirs in
    ``memo``."""
    cutoff = as_of.tz_convert("UTC").as_unit("ns").value
    key = (id(source), id(customers), _scan_key(settings), cutoff)
    found = memo.get(key, {}).get(_request(settings))
    if found is not None:
        return found
    group = [settings]
    for other in memo.get(PLAN, ()):
        try:
            check_source(source, other, "")
        except EnrichmentFailed:
            continue  # that enrichment fails with its own message when it runs
        if _scan_key(other) == _scan_key(settings) and _request(other) not in {_request(s) for s in group}:
            group.append(other)
    memo[key] = _scan(source, customers, group, cutoff, tables)
    return memo[key][_request(settings)]


def _scan(source, customers: pd.Index, group: list[AffinityParams], cutoff: int, tables) -> dict:
    """Sum the lines once, grouped by every column the affinities of ``group`` name, and split the sums."""
    columns = list(dict.fromkeys(_request(s)[0] for s in group))
    first = group[0]
    names = [f"n{i}" for i in range(len(columns))]
    selected = ", ".join(
        f'CAST("{c}" AS VARCHAR) AS n{i}' if c == "product" else f"{name_sql(c)} AS n{i}" for i, c in enumerate(columns)
    )
    which = "CASE " + " ".join(f"WHEN GROUPING(n{i}) = 0 THEN {i}" for i in range(len(columns))) + " END"
    sets = ", ".join(f"(cid, n{i})" for i in range(len(columns)))
    # An exponent literal (1.5e+16) is a DOUBLE in DuckDB; a plain product of literals would be a DECIMAL.
    scale = f"{float(DAY_NS * first.half_life_days):.17e}"
    decay = f'pow(2.0, (epoch_ns("ActivityTimeStamp") - {cutoff}) / {scale})'
    ids = pa.table({"cid": pa.array(customers.to_numpy(dtype=object), pa.string()), "code": np.arange(len(customers))})
    with _connect() as con:
        _register_facts(con, source)
        con.register("ids", ids)
        con.execute(
            f"""
            CREATE TEMP TABLE sums AS
            WITH lines AS (
                SELECT CAST("CustomerId" AS VARCHAR) AS cid, {selected},
                    TRY_CAST("{_weight(first)}" AS DOUBLE) AS v,
                    coalesce(epoch_ns("ActivityTimeStamp") < {cutoff}, false) AS before,
                    TRY_CAST(TRY_CAST("{_weight(first)}" AS DOUBLE) * {decay} AS {_EXACT}) AS w
                FROM facts WHERE "Activity" = $activity
            ), grouped AS (
                SELECT {which} AS f, cid, coalesce({", ".join(names)}) AS name,
                    sum(w) FILTER (WHERE before) AS spend,
                    count(*) FILTER (WHERE before AND v > 0) AS bought,
                    count(*) FILTER (WHERE before AND w IS NOT NULL) AS used,
                    count(*) FILTER (WHERE before) AS before_n,
                    count(*) FILTER (WHERE NOT before) AS after_n
                FROM lines GROUP BY GROUPING SETS ({sets})
            )
            SELECT f, code, name, spend, bought, used, before_n, after_n
            FROM grouped LEFT JOIN ids USING (cid)
            """,
            {"activity": first.activity},
        )
        distinct = con.execute("SELECT f, name FROM sums WHERE name IS NOT NULL GROUP BY f, name").df()
        out = {}
        for request, settings in {_request(s): s for s in group}.items():
            index = columns.index(request[0])
            raw = distinct.loc[distinct["f"] == index, "name"].astype("string")
            out[request] = _split(con, index, raw, settings, tables, len(customers))
    return out


def _split(con, index: int, raw: pd.Series, settings: AffinityParams, tables, customers: int) -> PurchasePairs:
    """The pairs of one affinity from the summed lines: names mapped (through its catalog), then summed again."""
    mapped = raw
    if _from_catalog(settings) is not None:
        spec = settings.catalog
        catalog = tables.get(f"{spec.source}.{spec.table}")
        lookup = catalog.drop_duplicates(spec.key)
        lookup = lookup[_from_catalog(settings)].set_axis(lookup[spec.key].astype("string"))
        mapped = lookup.reindex(raw.to_numpy()).astype("string").str.strip().replace("", pd.NA)
    final = pd.Series(mapped.to_numpy(), dtype="string")
    codes, names = pd.factorize(final, sort=True)
    mapping = pa.table(
        {
            "name": pa.array(raw.to_numpy(dtype=object), pa.string()),
            "ncode": pa.array(np.where(codes >= 0, codes, 0), mask=codes < 0),
        }
    )
    con.register("mapping", mapping)
    counts = con.execute(
        """SELECT code IS NULL AS unknown, ncode IS NULL AS unnamed, sum(used), sum(before_n), sum(after_n)
        FROM sums LEFT JOIN mapping USING (name) WHERE f = ? GROUP BY ALL""",
        [index],
    ).fetchall()
    tally = dict.fromkeys(("lines_used", "lines_without_name", "lines_after_as_of", "lines_of_unknown_customers"), 0)
    for unknown, unnamed, used, before_n, after_n in counts:
        if unknown:
            tally["lines_of_unknown_customers"] += int(before_n + after_n)
            continue
        tally["lines_after_as_of"] += int(after_n)
        tally["lines_without_name" if unnamed else "lines_used"] += int(used if not unnamed else before_n)
    # Names are summed again only where a catalog maps several products to one name; otherwise each pair is one
    # row already. Sorted: the pairs come in the same order on every run.
    query = (
        """SELECT code, ncode, CAST(coalesce(sum(spend), 0) AS DOUBLE) AS spend, sum(bought) AS bought,
        sum(used) AS used FROM sums JOIN mapping USING (name) WHERE f = ? AND code IS NOT NULL GROUP BY code, ncode
        ORDER BY code, ncode"""
        if _from_catalog(settings) is not None
        else """SELECT code, ncode, CAST(coalesce(spend, 0) AS DOUBLE) AS spend, bought, used
        FROM sums JOIN mapping USING (name) WHERE f = ? AND code IS NOT NULL ORDER BY code, ncode"""
    )
    pairs = con.execute(query, [index]).fetchnumpy()
    con.unregister("mapping")
    code, name = pairs["code"].astype(np.int64), pairs["ncode"].astype(np.int64)
    # Names only bought after the reference date (or only with unusable values) are left out.
    present = np.bincount(name[pairs["used"] > 0], minlength=len(names)) > 0
    position = np.cumsum(present) - 1
    lines = np.bincount(code, weights=pairs["bought"], minlength=customers).astype(np.int64)
    keep = pairs["spend"] > 0
    return PurchasePairs(
        code[keep], position[name[keep]], pairs["spend"][keep].astype(float), lines,
        np.asarray(names[present], dtype=object), tally,
    )  # fmt: skip


def fit_affinity(
    pairs: PurchasePairs,
    customers: pd.Index,
    profile: pd.DataFrame,
    settings: AffinityParams,
    as_of: pd.Timestamp,
    memo: dict | None = None,
) -> AffinityModel:
    """Own spend and group priors of every profile customer (``customers``, sorted) from their purchase pairs;
    ``memo`` (the run's shared memo) keeps the customers' prior attributes for the other affinities."""
    k = max(len(pairs.names), 1)
    key = ("prior attributes", id(profile), id(customers), settings.prior_fields.model_dump_json(), as_of.value)
    memo = {} if memo is None else memo
    if key not in memo:
        memo[key] = _attributes(customers, profile, settings.prior_fields, as_of)
    group, prior, labels = _group_priors(customers, memo[key], settings, pairs.customer, pairs.name, pairs.spend, k)
    related = related_names(pairs.customer, pairs.name, len(customers), k)
    return AffinityModel(
        customers, pairs.names, pairs.customer, pairs.name, pairs.spend, pairs.lines, group, prior, labels,
        settings.prior_strength, related.tocsr(),
    )  # fmt: skip


def profile_customers(profile: pd.DataFrame) -> pd.Index:
    """Every CustomerId of the profile, once, sorted: the rows of the affinity arrays."""
    return pd.Index(profile["CustomerId"].astype("string").dropna().unique(), dtype="string").sort_values()


def _attributes(customers: pd.Index, profile: pd.DataFrame, fields: PriorFields, as_of: pd.Timestamp) -> list:
    """(label, codes, values) per prior attribute the profile has: gender, age band, postal area (or city)."""
    wanted = [c for c in (fields.gender, fields.birth_date, fields.postal_code, fields.city) if c in profile.columns]
    # The profile types its birth dates; one known in part (1967, 1967-05) is the text beside it (BirthDateText).
    written = f"{fields.birth_date}{DATE_TEXT_SUFFIX}" if fields.birth_date in wanted else None
    held = [*wanted, written] if written in profile.columns else wanted
    frame = profile.drop_duplicates("CustomerId")
    frame = frame[held].set_index(frame["CustomerId"].astype("string")).reindex(customers)
    if held is not wanted:
        frame[fields.birth_date] = frame[fields.birth_date].astype("string").fillna(frame.pop(written))

    def column(name: str | None) -> pd.Series | None:
        if name is None or name not in frame.columns:
            return None
        values = _per_distinct(frame[name], lambda v: v.str.strip().str.casefold().replace("", pd.NA))
        return values if values.notna().any() else None

    found = []
    gender = column(fields.gender)
    if gender is not None:
        found.append(("Gender", gender))
    birth = column(fields.birth_date)
    if birth is not None:
        # A birth date known in part (1967 or 1967-00-00, 1967-05 or 1967-05-00) still gives an age band: the year
        # is enough.
        known = birth.str.replace(r"^(\d{4})(-00-00)?$", r"\1-07-01", regex=True)
        known = known.str.replace(r"^(\d{4}-\d{2})(-00)?$", r"\1-15", regex=True)
        born = pd.to_datetime(known, errors="coerce", format="mixed", utc=True)
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
            area = _per_distinct(postal, lambda p: p.str.replace(r"\s+", "", regex=True).str[: fields.postal_prefix])
        if city is not None:
            area = area.fillna("city " + city)
        found.append(("PostalArea", area))
    return found


def _per_distinct(values: pd.Series, fn) -> pd.Series:
    """``fn`` (text series -> text series) of the distinct values only, spread back onto ``values``: the profile's
    attributes repeat, and pandas runs these string methods in Python per value."""
    codes, uniques = pd.factorize(values.astype("string"))
    done = pd.array(fn(pd.Series(uniques, dtype="string")), dtype="string")
    return pd.Series(done.take(codes, allow_fill=True), index=values.index)


def _group_priors(customers, attributes, settings, pair_customer, pair_name, pair_spend, k):
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
    for label, values in attributes:
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


def _json_str(values) -> pa.Array:
    """Each value's text as a JSON string literal."""
    return json_strings(pa.array([str(v) for v in values], pa.large_string())).cast(pa.string())


def _values_json(model, labels, score, level, voice, top, prior_flag) -> pa.Array:
    """The Values JSON per customer, key-sorted and compact, joined column-wise by Arrow (no Python per row)."""
    names = _json_str(labels)
    parts: list = ['{"Affinity":{']
    for i, j in enumerate(np.argsort(np.array(labels, dtype=str), kind="stable")):
        text = pa.array(level[:, j], type=pa.string())
        quoted = pc.if_else(pc.is_null(text), "null", pc.binary_join_element_wise('"', text, '"', ""))
        parts += [
            ("," if i else "") + names[j].as_py() + ':{"Level":',
            quoted,
            ',"Score":',
            pa.array(score[:, j]).cast(pa.string()),
        ]
        parts += [',"ShareOfVoice":', pa.array(voice[:, j]).cast(pa.string()), "}"]
    top_names = (_json_str(model.names) if len(model.names) else pa.array(["null"], pa.string())).take(top)
    group = _json_str(model.group_labels).take(model.group)
    flag = pc.if_else(pa.array(prior_flag, type=pa.bool_()), "true", "false")
    parts += ['},"Prior":', flag, ',"PriorGroup":', group, ',"Top":', top_names, "}"]
    return pc.binary_join_element_wise(*parts, "")


def affinity_result(model: AffinityModel, settings: AffinityParams, provider: str, counts: Mapping[str, int]):
    """The enrichment's values (one row per profile customer) and its flat segment fields."""
    codes, warnings = chosen_names(model, settings)
    known = codes < len(model.names)
    shares = np.zeros((len(model.customers), len(codes)))
    shares[:, known], top = model.scored(codes[known])
    labels = [str(model.names[c]) if c < len(model.names) else settings.chosen[i] for i, c in enumerate(codes)]
    score = scores(shares)
    level = levels(score)
    voice = share_of_voice(shares)
    prior_flag = model.lines < settings.min_lines
    enrichment_type = settings.type or TYPES[provider]
    values = pd.DataFrame(
        {
            "CustomerId": model.customers.astype("string"),
            "EnrichmentType": constant_text(enrichment_type, len(model.customers)),
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

    # The timeline as a dataset: the purchase lines are summed by a scan of the columns used, never loaded.
    needs = frozenset({"activity_dataset"})

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
        where = f"enrich.enrichments.{self.enrichment}.params"
        source = inputs.activity_dataset if inputs.activity_dataset is not None else inputs.activities
        check_source(source, self.settings, where)
        if self.settings.catalog is not None:
            spec = self.settings.catalog
            check_catalog(inputs.tables.get(f"{spec.source}.{spec.table}"), self.settings, where)
        as_of = inputs.as_of
        if as_of is None:
            latest = latest_purchase(source, self.settings)
            as_of = None if latest is None else latest + pd.Timedelta(1, "ns")
        if as_of is None:
            raise EnrichmentFailed(
                f"enrich.enrichments.{self.enrichment}: activity {self.settings.activity!r} has no purchases; "
                "affinities need purchase history"
            )
        as_of = pd.Timestamp(as_of)
        memo = inputs.shared
        if ("customers", id(inputs.profiles)) not in memo:
            memo["customers", id(inputs.profiles)] = profile_customers(inputs.profiles)
        customers = memo["customers", id(inputs.profiles)]
        pairs = purchase_pairs(source, customers, self.settings, as_of, inputs.tables, memo)
        try:
            model = fit_affinity(pairs, customers, inputs.profiles, self.settings, as_of, memo)
        except EnrichmentFailed as exc:
            raise EnrichmentFailed(
                f"enrich.enrichments.{self.enrichment}: activity {self.settings.activity!r}: {exc}"
            ) from None
        return affinity_result(model, self.settings, self.provider, pairs.counts)


def build_brand(params: Mapping, context: ProviderContext) -> AffinityProvider:
    """The ``brand_affinity`` provider."""
    return AffinityProvider("brand_affinity", settings_from(params, "brand_affinity", context.enrichment), context)


def build_interest(params: Mapping, context: ProviderContext) -> AffinityProvider:
    """The ``interest_affinity`` provider."""
    return AffinityProvider(
        "interest_affinity", settings_from(params, "interest_affinity", context.enrichment), context
    )
