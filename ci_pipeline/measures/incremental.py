"""Record-level reuse of the measures between runs: only the customers whose activity rows changed are computed again.

A customer's attribute and customer measures depend on nothing but its own activity rows in table order (the
windows end on the run date), so a run keeps, per customer, those values (:class:`CustomerValues`) and a digest of
the activity rows the measures read. The next run computes the digests again (one DuckDB aggregation over the
stored facts, reading only those columns), and computes the measures of the affected customers only: customers new
to the profile, and customers whose rows were added, changed or deleted, or moved to or from them by a merge or a
split of customers. The others keep their stored values; customers gone from the profile are dropped.

What depends on all customers is computed over the merged values every run, as a full run does: scores (ranks
across customers), expressions, business measures of other measures. Business measures aggregated from the facts
are recomputed in full from the facts of their activities alone (a sum adds in table order; adding a change to a
kept sum would not give the same last bits). A changed measures configuration, run date, package version, facts
schema or state format, a missing or damaged state, or a full refresh computes every customer, and says why.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import tempfile
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

import ci_pipeline
from ci_pipeline.config.measures import MeasuresConfig
from ci_pipeline.measures.compute import (
    CustomerValues,
    MeasureResults,
    collect_measures,
    customer_ids,
    fact_columns,
    finish_measures,
)
from ci_pipeline.measures.facts import StoredFacts, run_end
from ci_pipeline.measures.filters import FilterCheck
from ci_pipeline.run_state import META, read_run_state, write_run_state
from ci_pipeline.sql_text import quoted

#: Raised when what a state holds changes meaning: an older state is then not reused.
STATE_FORMAT = 1
STATE_DIR = "ci_pipeline/_state/measures"
#: Written last (:mod:`ci_pipeline.run_state`): a state without it (a run killed while writing) is no state.
META_FILE = f"{STATE_DIR}/{META}"
#: The columns of a digest table: per CustomerId, a digest of its activity rows and how many there are.
DIGEST_COLUMNS = ["CustomerId", "digest", "rows"]
#: What DuckDB may hold while it sums the digests (one small group per customer).
MEMORY_LIMIT = "1GB"
#: Digests are summed modulo this prime, so that a customer's digest does not depend on its rows' order.
_MODULUS = 9223372036854775783


def _table_name(position: int) -> str:
    """The stored table of the customer measure at ``position`` of the meta's list (names may not suit a path)."""
    return f"customer_measure_{position}"


@dataclass
class MeasuresState:
    """What one run keeps for the next: every customer's values, the digests of their activity rows, and the
    fingerprint of what the values depend on besides the rows (``meta``)."""

    values: CustomerValues
    digests: pd.DataFrame
    meta: dict


def fingerprint(config: MeasuresConfig, as_of: dt.date, schema: pa.Schema) -> str:
    """What a customer's values depend on besides its activity rows: the measures, the run date, the package and
    DuckDB versions (DuckDB computes the digests) and the facts' columns and types."""
    columns = [[f.name, str(f.type)] for f in schema]
    parts = [STATE_FORMAT, ci_pipeline.__version__, duckdb.__version__, config.model_dump(mode="json"), as_of, columns]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def digest_columns(config: MeasuresConfig, schema: pa.Schema) -> list[str]:
    """The fact columns a customer's digest covers: those the measures read, and the activity id (it orders them)."""
    return [c for c in dict.fromkeys(["ActivityId", *fact_columns(config)]) if c in schema.names]


def fact_digests(dataset: ds.Dataset, columns: list[str]) -> pd.DataFrame:
    """Per CustomerId of the facts, a digest of its rows' ``columns`` and its row count (:data:`DIGEST_COLUMNS`,
    sorted by CustomerId): one DuckDB aggregation, out of pandas. A dictionary encoded column is hashed as text,
    since its codes differ from file to file."""
    types = {f.name: f.type for f in dataset.schema}

    def hashed(name: str) -> str:
        return f"CAST({quoted(name)} AS VARCHAR)" if pa.types.is_dictionary(types[name]) else quoted(name)

    customer = hashed("CustomerId")
    query = (
        f"SELECT CAST({customer} AS VARCHAR) AS CustomerId, "
        f"CAST(sum(hash({', '.join(hashed(c) for c in columns)})) % {_MODULUS} AS BIGINT) AS digest, "
        f"count(*) AS rows FROM facts WHERE {customer} IS NOT NULL GROUP BY 1 ORDER BY 1"
    )
    with tempfile.TemporaryDirectory(prefix="ci-pipeline-digests-") as spill, duckdb.connect() as con:
        # Bounded like the stage's other DuckDB work: past the limit the aggregation spills to disk.
        con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'; SET preserve_insertion_order = false")
        con.execute("SET temp_directory = ?", [spill])
        con.register("facts", dataset)
        found = con.sql(query).df()
    found["CustomerId"] = found["CustomerId"].astype("string")
    return found.astype({"digest": "int64", "rows": "int64"})[DIGEST_COLUMNS]


def affected_customers(
    customers: pd.Index, now: pd.DataFrame, before: pd.DataFrame, known: pd.Index | pd.Series
) -> pd.Index:
    """The customers (sorted ``customers``) whose results may differ from their stored values: customers the
    stored values do not have (``known``), and customers whose digests differ (``now`` against ``before``: a
    ``CustomerId`` column and integer digest columns, e.g. :data:`DIGEST_COLUMNS`; a customer with no rows has no
    row there). For activity rows: rows added, changed or deleted, or moved to or from the customer when customers
    merged or split.

    Examples:
        >>> ids = pd.Index(["a", "b", "c", "d"], dtype="string")
        >>> now = pd.DataFrame({"CustomerId": ["a", "b", "d"], "digest": [1, 2, 4], "rows": [1, 1, 1]})
        >>> before = pd.DataFrame({"CustomerId": ["a", "b", "c"], "digest": [1, 5, 3], "rows": [1, 1, 1]})
        >>> list(affected_customers(ids, now, before, pd.Index(["a", "b", "c", "d"])))
        ['b', 'c', 'd']
    """

    def aligned(frame: pd.DataFrame) -> np.ndarray:
        # Looked up by position, never reindexed: a customer missing from one side must not turn the digests into
        # floats, which would lose their low bits. -1 stands for no rows.
        values = np.vstack([frame[columns].to_numpy(np.int64), np.full((1, len(columns)), -1, dtype=np.int64)])
        return values[_plain(frame["CustomerId"]).get_indexer(_plain(customers))]

    columns = [c for c in now.columns if c != "CustomerId"]
    if sorted(columns) != sorted(c for c in before.columns if c != "CustomerId"):
        return customers
    differ = (aligned(now) != aligned(before)).any(axis=1)
    unknown = _plain(known).get_indexer(_plain(customers)) < 0
    return customers[differ | unknown]


def _plain(values) -> pd.Index:
    """Ids as an index of Python strings, for fast hash lookups."""
    return pd.Index(np.asarray(values, dtype=object))


def merge_rows(
    stored: pd.DataFrame, fresh: pd.DataFrame, customers: pd.Index, affected: pd.Index, keys: list[str]
) -> pd.DataFrame:
    """The stored rows of the customers still in ``customers`` and not ``affected``, and ``fresh`` (the rows
    computed for the affected customers), in order of ``keys``. The two are put end to end as a full run puts its
    parts of customers (a column takes the type that holds both).

    Examples:
        >>> stored = pd.DataFrame({"CustomerId": ["a", "b", "c"], "Value": [1.0, 2.0, 3.0]})
        >>> fresh = pd.DataFrame({"CustomerId": ["d"], "Value": [4.0]})
        >>> ids = pd.Index(["a", "b", "d"])
        >>> merge_rows(stored, fresh, ids, pd.Index(["b", "d"]), ["CustomerId"])["CustomerId"].tolist()
        ['a', 'd']
    """
    # One hash lookup of the stored ids among the customers, on Python strings: pandas' isin on Arrow-backed text
    # is many times slower.
    at = _plain(customers).get_indexer(_plain(stored["CustomerId"]))
    recomputed = np.zeros(len(customers) + 1, dtype=bool)
    recomputed[_plain(customers).get_indexer(_plain(affected))] = True
    kept = stored[(at >= 0) & ~recomputed[at]]
    if not len(fresh):
        both = kept
    elif not len(kept):
        both = fresh
    else:
        both = pd.concat([kept, fresh[kept.columns]], ignore_index=True)
    return both.sort_values(keys, kind="stable").reset_index(drop=True)


def _merged(
    state: MeasuresState, fresh: CustomerValues, ids: pd.Index, affected: pd.Index, config: MeasuresConfig
) -> CustomerValues:
    raw = merge_rows(state.values.raw, fresh.raw, ids, affected, ["CustomerId"])
    tables = {
        name: merge_rows(
            state.values.customer[name], fresh.customer[name], ids, affected, ["CustomerId", *spec.dimensions]
        )
        for name, spec in sorted(config.customer.items())
    }
    return CustomerValues(raw, tables)


def _refusal(state: MeasuresState | None, absent: str, meta: dict) -> str:
    """Why the stored values cannot be reused ('' when they can)."""
    if state is None:
        return absent
    if state.meta.get("fingerprint") != meta["fingerprint"]:
        return "the measures configuration, the run date, the package version or the facts' columns changed"
    return ""


def compute_incremental(
    config: MeasuresConfig,
    customers: pd.Series,
    facts: StoredFacts,
    as_of: dt.date,
    state: MeasuresState | None,
    absent: str = "no state of an earlier run",
) -> tuple[MeasureResults, MeasuresState, dict]:
    """Every measure, computed again only for the affected customers when the last run's ``state`` can be reused
    (``absent``: why there is none). Returns the results (equal to :func:`compute_measures`'s), the state to keep,
    and a report: incremental or not, why, and how many customers were computed."""
    ids = customer_ids(customers)
    dataset = facts.dataset
    digests = fact_digests(dataset, digest_columns(config, dataset.schema))
    meta = {"format": STATE_FORMAT, "fingerprint": fingerprint(config, as_of, dataset.schema)}
    why = _refusal(state, absent, meta)
    report = {"incremental": not why, "reason": why, "customers": len(ids)}
    check = FilterCheck()
    if why:
        values, business = collect_measures(config, ids, facts, as_of, check=check)
        report["customers_computed"] = len(ids)
    else:
        affected = affected_customers(ids, digests, state.digests, state.values.raw["CustomerId"])
        own = config.model_copy(update={"business": {}})
        mine = dataclasses.replace(facts, where=pc.field("CustomerId").isin(pa.array(affected.to_numpy(), pa.string())))
        fresh, _ = collect_measures(own, affected, mine, as_of, check=check)
        values = _merged(state, fresh, _plain(ids), _plain(affected), config)
        business = _business_rows(config, ids, facts, as_of, check)
        # The changed customers' rows may match none of a filter that others' rows match: judged on the whole table.
        check.confirm(dataset, ids, run_end(as_of))
        report["customers_computed"] = len(affected)
    meta["customers"] = len(values.raw)
    meta["tables"] = sorted(values.customer)
    # What the run that kept the state did, for whoever wonders why a run took as long as it did.
    meta["run"] = report
    results = finish_measures(config, values, business, as_of, check.warnings())
    return results, MeasuresState(values, digests, meta), report


def _business_rows(
    config: MeasuresConfig, ids: pd.Index, facts: StoredFacts, as_of: dt.date, check: FilterCheck
) -> dict[str, list[pd.DataFrame]]:
    """The deciding rows of the business measures aggregated from the facts, read from the rows of their
    activities only (the rows of a measure keep their order in the table)."""
    business = config.model_copy(update={"attributes": {}, "customer": {}})
    named = sorted(
        {a for s in business.business.values() if s.expression is None and not s.of_measure for a in s.activity}
    )
    if not named:
        return {}
    schema = facts.dataset.schema.names
    keep = [pc.field(c).isin(pa.array(named, pa.string())) for c in ("Activity", "ActivityType") if c in schema]
    where = keep[0] | keep[1] if len(keep) == 2 else keep[0]
    _, rows = collect_measures(business, ids, dataclasses.replace(facts, where=where), as_of, check=check)
    return rows


def write_state(lake, state: MeasuresState) -> None:
    """Store the state in the lake (:mod:`ci_pipeline.run_state`)."""
    tables = {"customer_values": state.values.raw, "digests": state.digests}
    for position, name in enumerate(state.meta["tables"]):
        tables[_table_name(position)] = state.values.customer[name]
    write_run_state(lake, STATE_DIR, tables, state.meta)


def read_state(lake) -> tuple[MeasuresState | None, str]:
    """The last run's state, or None and why it cannot be used (then every customer is computed)."""
    found = read_run_state(
        lake,
        STATE_DIR,
        lambda meta: ["customer_values", "digests", *map(_table_name, range(len(meta["tables"])))],
    )
    if isinstance(found, str):
        return None, found
    meta, stored = found
    raw, digests = stored["customer_values"], stored["digests"]
    tables = {name: stored[_table_name(i)] for i, name in enumerate(meta["tables"])}
    if meta.get("format") != STATE_FORMAT or len(raw) != meta.get("customers"):
        return None, f"the state at {lake.url(STATE_DIR)} has another format or is incomplete"
    raw["CustomerId"] = raw["CustomerId"].astype("string")
    for table in [raw, *tables.values()]:
        for column in table.select_dtypes(include="object").columns:
            # Parquet gives a missing value of a column of Python objects back as None; computing gives NaN.
            table[column] = table[column].where(table[column].notna(), np.nan)
    digests["CustomerId"] = digests["CustomerId"].astype("string")
    return MeasuresState(CustomerValues(raw, tables), digests, meta), ""
