"""The provider interface of the enrichment stage: what every enrichment receives and what it returns.

A provider turns customer profiles (and, where it needs them, activities and measures) into values per customer.
The stage writes each provider's values to the Enrichment output table as one row per customer and enrichment
type (``EnrichmentProvider``, ``EnrichmentType``, ``Values`` as JSON), so segments, exports and ``explain`` read
every provider the same way. Providers never import dagster; the stage's Dagster glue calls :meth:`enrich`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

#: The columns of :attr:`EnrichmentResult.values`, in order.
VALUE_COLUMNS = ("CustomerId", "EnrichmentType", "Values")


class EnrichmentFailed(Exception):
    """A provider could not produce its values (unreachable service, unusable response, missing input).

    The message is what the user reads: it names the enrichment and the fix, and never carries a secret. The
    stage fails that enrichment only and keeps its previous output.
    """


@dataclass(frozen=True)
class EnrichmentInputs:
    """What a provider may read.

    Attributes:
        profiles: the unified customer profiles, one row per ``CustomerId`` (the customer_profile asset's columns).
        activities: the unified activity facts (``CustomerId``, ``ActivityType``, ``EventDate``, the mapped fields),
            or None when the provider declared it does not need them.
        measures: customer measures, one row per ``CustomerId``, or None.
        as_of: the reference time of the run (recency weighting, time splits); timezone-aware UTC.
        tables: source tables a provider asked for (a product catalog), by ``<source>.<table>``.
        activity_dataset: the stored activity facts as a ``pyarrow.dataset.Dataset`` (for a provider that declared
            ``activity_dataset`` in ``needs``): scanned by chosen columns and in batches instead of loaded.
        shared: a memo the enrichments of one run share, so work two providers need is done once (brand and
            interest affinity sum the same purchase lines in one scan).
    """

    profiles: pd.DataFrame
    activities: pd.DataFrame | None = None
    measures: pd.DataFrame | None = None
    as_of: pd.Timestamp | None = None
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    activity_dataset: object | None = None
    shared: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EnrichmentResult:
    """What a provider returns.

    Attributes:
        values: one row per customer and enrichment type: ``CustomerId`` (string), ``EnrichmentType`` (string) and
            ``Values`` (a dict per row, JSON-serialisable; the stage writes it as compact, key-sorted JSON; or the
            JSON text already, which a provider over millions of customers builds column-wise).
            Customers the provider has nothing for are absent, and counted in ``counts``.
        counts: the provider's status counts for the asset metadata (for example ``processed_changed``,
            ``processed_unchanged``, ``not_processed``); plain ints so Dagster plots them over runs.
        warnings: sentences for the run log (counted problems that did not fail the enrichment).
        report: any further figures for the asset metadata (floats, short strings), e.g. a benchmark's AUC.
        fields: optional: ``CustomerId`` plus one flat column per field segments read (``Affinity.Voltix.Score``);
            when None the stage flattens the scalar members of ``Values`` (nested objects joined with dots).
    """

    values: pd.DataFrame
    counts: Mapping[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    report: Mapping[str, float | str] = field(default_factory=dict)
    fields: pd.DataFrame | None = None


def _no_connections(name: str) -> dict:
    raise EnrichmentFailed(f"connection {name!r} cannot be resolved here: no connections are available to this run")


@dataclass(frozen=True)
class ProviderContext:
    """What a provider may need from the run besides its inputs.

    Attributes:
        enrichment: the configured enrichment's name (``enrich.enrichments.<name>``), for messages.
        project: the project name (``name:``), the EnrichmentProvider of first-party enrichments.
        connection: the configured connection name, or None.
        resolve_connection: ``resolve_connection(name) -> dict`` gives a connection's settings with its secrets
            resolved; a provider keeps them to itself (never in values, messages or metadata).
        cache_dir: a folder of the run's lake a provider may keep caches in (``<lake>/ci_pipeline/enrich/cache``),
            or None when there is no local lake.
        lake: the run's :class:`ci_pipeline.lake.Lake`, or None.
    """

    enrichment: str = ""
    project: str = "ci_pipeline"
    connection: str | None = None
    resolve_connection: Callable[[str], dict] = _no_connections
    cache_dir: str | None = None
    lake: object | None = None


class EnrichmentProvider(Protocol):
    """One kind of enrichment. ``name`` is the ``EnrichmentProvider`` value published for its rows; ``needs``
    says which optional inputs it reads (``activities``, ``activity_dataset``, ``measures``) so the stage loads
    only those."""

    name: str
    needs: frozenset[str]

    def enrich(self, inputs: EnrichmentInputs) -> EnrichmentResult:
        """Values per customer for ``inputs``; raise :class:`EnrichmentFailed` with a user-facing message."""
        ...


#: ``build(params, context) -> provider``: how the registry makes a provider from its configured parameters.
ProviderFactory = Callable[[Mapping, ProviderContext], EnrichmentProvider]


def enrichment_name(context: ProviderContext | None) -> str:
    """The configured enrichment's name, or "" when a provider is built without a context."""
    return context.enrichment if context is not None else ""


def params_path(
    params: Mapping, known: Sequence[str], context: ProviderContext | None, provider: str, label: str
) -> str:
    """The key path of an enrichment's parameters (``enrich.enrichments.<name>.params``; the provider's name stands
    in for the enrichment's when there is no context), after refusing a parameter the provider does not take.
    ``label`` names the provider in the message (``e-mail``)."""
    where = f"enrich.enrichments.{enrichment_name(context) or provider}.params"
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise EnrichmentFailed(
            f"{where}.{unknown[0]}: not a parameter of the {label} provider; it takes {', '.join(known)}"
        )
    return where


def empty_values() -> pd.DataFrame:
    """A values frame with no rows and the right columns and dtypes."""
    return pd.DataFrame(
        {
            "CustomerId": pd.Series([], dtype="string"),
            "EnrichmentType": pd.Series([], dtype="string"),
            "Values": pd.Series([], dtype=object),
        }
    )


def arrow_strings(values: pd.Series) -> pa.Array:
    """``values`` as one Arrow large-string array (missing values null), for the Arrow compute kernels."""
    array = pa.array(values.astype("string"), type=pa.large_string())
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def value_records(values: pd.DataFrame) -> list[dict]:
    """One dict per row, missing values as None (JSON null); built from column lists, which is many times faster
    than ``DataFrame.to_dict`` on a million rows."""
    keys = list(values.columns)
    columns = [values[k].to_numpy(dtype=object, na_value=None).tolist() for k in keys]
    return [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]


#: Characters JSON writes escaped inside a string: the quote, the backslash and the control characters.
_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'


def json_strings(values: pa.Array) -> pa.Array:
    """Each value as a JSON literal, exactly as ``json.dumps(value, ensure_ascii=False)`` writes it (``null`` for a
    missing value). Quoted by Arrow kernels; only the rare values with a character to escape go through ``json``."""
    values = values.cast(pa.large_string())
    quoted = pc.binary_join_element_wise(_text('"'), values, _text('"'), _text(""))
    escape = pc.fill_null(pc.match_substring_regex(values, _NEEDS_ESCAPE), False)
    if pc.any(escape).as_py():
        text = [json.dumps(v, ensure_ascii=False) for v in values.filter(escape).to_pylist()]
        quoted = pc.replace_with_mask(quoted, escape, pa.array(text, pa.large_string()))
    return pc.fill_null(quoted, _text("null"))


def json_objects(values: pd.DataFrame) -> pd.arrays.ArrowStringArray:
    """One JSON object per row of ``values`` (text or boolean columns; missing values null), exactly as
    ``json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` writes the row's dict, joined
    column-wise by Arrow: no dict and no Python call per row."""
    parts: list = []
    for i, key in enumerate(sorted(values.columns)):
        column = values[key]
        if pd.api.types.is_bool_dtype(column.dtype):
            flags = pa.array(column.astype("boolean"))
            literal = pc.fill_null(pc.if_else(flags, _text("true"), _text("false")), _text("null"))
        else:
            literal = json_strings(arrow_strings(column))
        parts += [_text(("{" if i == 0 else ",") + json.dumps(key, ensure_ascii=False) + ":"), literal]
    if not parts:
        return pd.arrays.ArrowStringArray(pa.array(["{}"] * len(values), pa.large_string()))
    return pd.arrays.ArrowStringArray(pc.binary_join_element_wise(*parts, _text("}"), _text("")))


def customer_values(ids: pd.Series, enrichment_type: str, values: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of a provider with one value record per customer: ``values`` (text and boolean columns, one row per
    customer, aligned with ``ids``) as the values frame (sorted by CustomerId, ``Values`` as JSON text) and as the
    flat fields segments read (the same keys as columns), so nobody parses the JSON again."""
    ids = ids.astype("string")
    order = pc.sort_indices(arrow_strings(ids)).to_numpy()
    customers = text_array(arrow_strings(ids).take(order))
    ordered = values.iloc[order].reset_index(drop=True)
    frame = pd.DataFrame(
        {
            "CustomerId": customers,
            "EnrichmentType": constant_text(enrichment_type, len(ids)),
            "Values": json_objects(ordered),
        }
    )
    fields = {"CustomerId": customers}
    for key in sorted(ordered.columns):
        column = ordered[key]
        fields[key] = column if pd.api.types.is_bool_dtype(column.dtype) else column.astype("string")
    return frame, pd.DataFrame(fields)


def text_array(values: pa.Array | pa.ChunkedArray) -> pd.arrays.ArrowStringArray:
    """Arrow strings as a pandas ``string`` array, wrapped as they are (``pd.array`` would convert value by value)."""
    return pd.arrays.ArrowStringArray(values.cast(pa.large_string()))


def constant_text(value: str, length: int) -> pd.arrays.ArrowStringArray:
    """``length`` times ``value`` as a pandas ``string`` array."""
    return pd.arrays.ArrowStringArray(pa.repeat(_text(value), length))


def _text(value: str) -> pa.Scalar:
    return pa.scalar(value, pa.large_string())
