"""What the enrich stage publishes: each enrichment's rows, the Enrichment output table and the flat fields that
segment rules read as ``enrichment.<name>.<field>``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from ci_pipeline import outputs
from ci_pipeline.arrow_text import value_bytes
from ci_pipeline.enrich.provider import (
    VALUE_COLUMNS,
    EnrichmentFailed,
    EnrichmentInputs,
    EnrichmentProvider,
    arrow_strings,
    constant_text,
    text_array,
)
from ci_pipeline.enrich.provider import EnrichmentResult as Result

#: Columns of one enrichment's own table (``enrich/<name>``): the Enrichment table's content columns.
ROW_COLUMNS = ["CustomerId", "EnrichmentProvider", "EnrichmentType", "Values"]


def run_provider(provider: EnrichmentProvider, inputs: EnrichmentInputs, enrichment: str) -> Result:
    """Run one provider; anything it raises becomes an :class:`EnrichmentFailed` naming the enrichment."""
    try:
        result = provider.enrich(inputs)
    except EnrichmentFailed:
        raise
    except Exception as exc:  # a provider's own bug or a library error: fail this enrichment only, say what it was
        raise EnrichmentFailed(
            f"enrich.enrichments.{enrichment}: provider {getattr(provider, 'name', '?')!r} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    missing = [c for c in VALUE_COLUMNS if c not in result.values.columns]
    if missing:
        raise EnrichmentFailed(
            f"enrich.enrichments.{enrichment}: the provider returned no column {', '.join(missing)}; a provider "
            f"returns {', '.join(VALUE_COLUMNS)}"
        )
    return result


def enrichment_rows(
    result: Result, provider_name: str, customers: pd.Series, enrichment: str
) -> tuple[pd.DataFrame, dict[str, int]]:
    """One enrichment's rows (:data:`ROW_COLUMNS`, Values as JSON text) for the current customers.

    Rows for a customer the profile does not hold are left out and counted (``unknown_customers``); a customer
    and type given twice is an error (the provider must decide which value holds).
    """
    values = result.values
    ids = arrow_strings(values["CustomerId"])
    # Arrow kernels: pandas' isin and multi-column sort on string columns go through Python objects per value.
    known = pc.is_in(ids, value_set=arrow_strings(customers), skip_nulls=True).to_numpy(zero_copy_only=False)
    types = arrow_strings(values["EnrichmentType"]).filter(known)
    text = pa.array(outputs.json_text(values["Values"][known]).astype("string"), pa.large_string())
    table = pa.table({"CustomerId": ids.filter(known), "EnrichmentType": types, "Values": text})
    untyped = pc.sum(pc.or_(types.is_null(), text.is_null())).as_py() or 0
    if untyped:
        raise EnrichmentFailed(
            f"enrich.enrichments.{enrichment}: {untyped} rows have no EnrichmentType or Values; the provider must "
            "fill both"
        )
    order = pc.sort_indices(table, [("CustomerId", "ascending"), ("EnrichmentType", "ascending")]).to_numpy()
    if (np.diff(order) != 1).any():  # providers return their rows sorted: then no row is moved
        table = table.take(order)
    # Sorted, a customer and type given twice are neighbours.
    customer, kind = table["CustomerId"], table["EnrichmentType"]
    same = pc.and_(pc.equal(customer[1:], customer[:-1]), pc.equal(kind[1:], kind[:-1]))
    if len(table) > 1 and pc.any(same).as_py():
        same = same.to_numpy()
        doubled = np.append(same, False) | np.insert(same, 0, False)
        sample = pd.unique(np.asarray(customer.filter(doubled)))[:3].tolist()
        raise EnrichmentFailed(
            f"enrich.enrichments.{enrichment}: {int(doubled.sum())} rows give a customer the same EnrichmentType "
            f"twice (e.g. {sample}); the provider must return one row per customer and type"
        )
    rows = pd.DataFrame(
        {
            "CustomerId": text_array(customer),
            "EnrichmentProvider": constant_text(provider_name, len(table)),
            "EnrichmentType": text_array(kind),
            "Values": text_array(table["Values"]),
        }
    )
    return rows, {"unknown_customers": int((~known).sum())}


def enrichment_table(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The Enrichment output table from every enrichment's rows (their Values are JSON text already)."""
    frames = [p[ROW_COLUMNS] for p in parts if len(p)]
    if not frames:
        return outputs.build("Enrichment", pd.DataFrame(columns=ROW_COLUMNS, dtype="string"))
    # The parts stay chunks of each column: the contract orders the rows by their GUID, and Arrow takes them from
    # the chunks in less time than copying the chunks into one would take first.
    return outputs.build("Enrichment", pd.concat(frames, ignore_index=True))


def flat_fields(rows: pd.DataFrame) -> pd.DataFrame:
    """CustomerId plus one column per scalar member of the Values (nested objects joined with dots).

    With several EnrichmentTypes the fields carry the type first (``EnhancedAddress.City``).
    """
    if rows.empty:
        return pd.DataFrame({"CustomerId": pd.Series(dtype="string")})
    several = rows["EnrichmentType"].nunique() > 1
    frame = _parsed_in_arrow(rows, several)
    if frame is None:
        records = [
            _flatten(json.loads(text), f"{kind}." if several else "")
            for kind, text in zip(rows["EnrichmentType"].to_numpy(), rows["Values"].to_numpy(), strict=True)
        ]
        frame = pd.DataFrame.from_records(records)
    frame.insert(0, "CustomerId", rows["CustomerId"].astype("string").to_numpy())
    ids = arrow_strings(frame["CustomerId"])
    if ids.null_count or not pc.all(pc.less(ids[:-1], ids[1:])).as_py():
        return frame.groupby("CustomerId", sort=True).first().reset_index()
    # One row per customer in order already (how enrichments are stored): as the grouping would give it, whose
    # first value of a column of Python objects is None where there is none.
    for column in frame.select_dtypes(object).columns:
        frame[column] = frame[column].where(frame[column].notna(), None)
    return frame


def _parsed_in_arrow(rows: pd.DataFrame, several: bool) -> pd.DataFrame | None:
    """The flat fields of one enrichment type's rows as :func:`_flatten` gives them, parsed by Arrow's JSON reader
    (a million rows in about a second, against ten in Python); None when Arrow cannot say the same: several types,
    a value that is no object or spans lines, a member whose type differs between rows, or an empty object."""
    if several:
        return None
    text = arrow_strings(rows["Values"])
    if text.null_count or pc.any(pc.match_substring(text, "\n")).as_py():
        return None
    # One value per line: the data buffer of the values each followed by a line break.
    lines = pc.binary_join_element_wise(text, pa.scalar("", pa.large_string()), pa.scalar("\n", pa.large_string()))
    try:
        table = pa_json.read_json(pa.BufferReader(value_bytes(lines)))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(rows):
        return None
    while any(pa.types.is_struct(f.type) for f in table.schema):
        if any(pa.types.is_struct(f.type) and f.type.num_fields == 0 for f in table.schema):
            return None
        table = table.flatten()
    keep = [f.name for f in table.schema if not pa.types.is_list(f.type) and not pa.types.is_large_list(f.type)]
    return table.select(keep).to_pandas()


def _flatten(value: dict, prefix: str) -> dict:
    out: dict = {}
    for key, item in value.items():
        if isinstance(item, dict):
            out.update(_flatten(item, f"{prefix}{key}."))
        elif not isinstance(item, list):
            out[f"{prefix}{key}"] = item
    return out


def segment_fields(fields: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """CustomerId plus ``<enrichment>.<field>`` columns of every enrichment, one row per customer with any.

    Numbers stay numbers, true/false booleans, the rest text, so segment rules compare them as they read.
    """
    parts = {name: _first_per_customer(f) for name, f in sorted(fields.items()) if f is not None and not f.empty}
    if not parts:
        return pd.DataFrame({"CustomerId": pd.Series(dtype="string")})
    everyone, rows = _customer_rows({name: arrow_strings(part["CustomerId"]) for name, part in parts.items()})
    # Each enrichment's columns put in the rows of its customers among everyone's (an outer merge of each
    # enrichment on text ids cost seconds at a million customers).
    out = {"CustomerId": text_array(everyone)}
    for name, part in parts.items():
        at = np.full(len(everyone), -1, dtype=np.int64)
        at[rows[name]] = np.arange(len(part))
        for column in part.columns.drop("CustomerId"):
            values = pd.api.extensions.take(part[column].array, at, allow_fill=True)
            out[f"{name}.{column}"] = _typed(pd.Series(values, copy=False))
    return pd.DataFrame(out)


def _first_per_customer(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame's first row per CustomerId, its rows in CustomerId order."""
    ids = arrow_strings(frame["CustomerId"])
    if len(ids) < 2 or pc.all(pc.less(ids[:-1], ids[1:])).as_py():
        return frame
    return frame.drop_duplicates("CustomerId").sort_values("CustomerId", kind="stable")


def _customer_rows(ids: dict[str, pa.Array]) -> tuple[pa.Array, dict[str, np.ndarray]]:
    """Every CustomerId of the parts (``ids``: each part's, ascending) in order, and per part the row of each of its
    customers among them. Usually one enrichment covers every customer the others have (each enriches the
    profile): then its ids are everyone's and the others' rows are found in them, without a union of all."""
    widest = max(ids, key=lambda name: len(ids[name]))
    everyone, rows = ids[widest], {}
    for name, own in ids.items():
        if len(own) == len(everyone) and pc.all(pc.equal(own, everyone)).as_py():
            rows[name] = np.arange(len(own))
            continue
        found = pc.index_in(own, value_set=everyone)
        if found.null_count:
            break
        rows[name] = found.to_numpy()
    else:
        return everyone, rows
    everyone = pa.chunked_array(list(ids.values()), pa.large_string()).unique()
    everyone = everyone.take(pc.sort_indices(everyone))
    return everyone, {name: pc.index_in(own, value_set=everyone).to_numpy() for name, own in ids.items()}


def _typed(values: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values) or isinstance(values.dtype, pd.BooleanDtype):
        return values.astype("boolean")
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    # One pass in C over the values, not a Python call per value.
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind == "boolean":
        return values.astype("boolean")
    if kind in ("integer", "floating", "mixed-integer-float"):
        return pd.to_numeric(values).astype("float64")
    return values.astype("string")
