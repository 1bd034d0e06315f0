"""The output-table contract (spec/output-tables.md): each table's columns, identifier format and GUID formula.

This module is the one place that knows the seven Dataverse-shaped tables. The stage that produces a table builds
it here once (:func:`build` from plain content, or :func:`with_ids` when the stage wrote the content itself);
publishing and exporting only :func:`finish` it: the columns are checked and the rows ordered by their key, and no
identifier or GUID is computed a second time.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ci_pipeline.arrays import holds_dates, take_rows
from ci_pipeline.arrow_text import text_array
from ci_pipeline.errors import UserError

#: The one fixed namespace of every GUID the project derives: uuid5(NAMESPACE, msdynci_identifier).
#: It is uuid5(NAMESPACE_URL, "https://ci-pipeline.dev/output-tables") and must never change: changing it
#: would give every published row a new GUID.
NAMESPACE = uuid.UUID("07e3607e-db94-5423-b773-540dff3be29c")

ALTERNATE_KEY_COLUMNS = [
    "DataSourceName",
    "EntityName",
    "AlternateValue",
    "KeyRing",
    "CustomerId",
    "AlternateKeyId",
    "msdynci_identifier",
]
UNIFIED_ACTIVITY_COLUMNS = [
    "CustomerId",
    "ActivityId",
    "SourceEntityName",
    "SourceActivityId",
    "ActivityType",
    "ActivityTimeStamp",
    "Title",
    "Description",
    "URL",
    "SemanticData",
    "RangeIndex",
    "msdynci_unifiedactivityid",
]
CUSTOMER_MEASURE_COLUMNS = ["CustomerId", "Measures", "msdynci_identifier", "msdynci_customermeasureid"]
ENRICHMENT_COLUMNS = [
    "CustomerId",
    "EnrichmentProvider",
    "EnrichmentType",
    "Values",
    "msdynci_enrichmentid",
    "msdynci_identifier",
]
PREDICTION_COLUMNS = [
    "CustomerId",
    "ModelProvider",
    "Model",
    "Values",
    "msdynci_predictionid",
    "msdynci_identifier",
]
SEGMENT_MEMBERSHIP_COLUMNS = [
    "CustomerId",
    "SegmentProvider",
    "SegmentMembershipType",
    "Segments",
    "msdynci_identifier",
    "msdynci_segmentmembershipid",
]


def guid(identifier: str) -> str:
    """The deterministic GUID of one msdynci_identifier string.

    Examples:
        >>> guid("crm|contacts|c-1") == guid("crm|contacts|c-1")
        True
    """
    return str(uuid.uuid5(NAMESPACE, identifier))


def uuid5_hex_digits(names: list[str]) -> np.ndarray:
    """The 32 hex digits of ``uuid.uuid5(NAMESPACE, name)`` for each name, as an ``(n, 32)`` array of ASCII bytes.

    uuid5 is SHA-1 of namespace + name with the version and variant bits set; only the hash runs per name, the
    bit-setting and formatting are vectorised (about 20x faster than building a ``uuid.UUID`` per name).
    """
    # The namespace is hashed once and each name continues a copy of that state: half the time of a new hash object
    # fed the namespace and the name per name.
    namespace = hashlib.sha1(NAMESPACE.bytes)
    digests = []
    for name in names:
        state = namespace.copy()
        state.update(name.encode("utf-8"))
        digests.append(state.digest()[:16])
    digest = b"".join(digests)
    raw = np.frombuffer(digest, dtype=np.uint8).reshape(-1, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x50
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    return np.frombuffer(raw.tobytes().hex().encode("ascii"), dtype="S1").reshape(-1, 32)


def uuid5_digest_sql(name: str) -> str:
    """SQL (DuckDB) of the SHA-1 (40 hex digits) that ``uuid.uuid5(NAMESPACE, name)`` takes: of the namespace's bytes
    followed by the UTF-8 of ``name`` (an SQL text expression)."""
    prefix = "".join(f"\\x{b:02X}" for b in NAMESPACE.bytes)
    return f"sha1('{prefix}'::BLOB || encode({name}))"


#: For each of the 36 characters of a GUID, the digest digit it shows; the dashes, the version digit (``5``) and
#: the variant digit (the 17th digest digit's value modulo 4, as one of ``89ab``) are set apart.
_DASH, _VERSION, _VARIANT = -1, -2, -3
_GUID_DIGITS = np.array(
    [*range(0, 8), _DASH, *range(8, 12), _DASH, _VERSION, *range(13, 16), _DASH, _VARIANT, *range(17, 20), _DASH]
    + [*range(20, 32)]
)
#: Each hex digit's (ASCII code's) value.
_HEX_VALUE = np.zeros(256, dtype=np.uint8)
_HEX_VALUE[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)
#: Each lowercase hex digit's value, every other character :data:`_NOT_A_DIGIT` (GUIDs ordered as numbers).
_NOT_A_DIGIT = 255
_DIGIT_OR_NOT = np.full(256, _NOT_A_DIGIT, dtype=np.uint8)
_DIGIT_OR_NOT[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)
#: Where a GUID's text has its dashes, and its 32 hex digits.
_GUID_DASHES = np.array([8, 13, 18, 23])
_GUID_HEX = np.setdiff1d(np.arange(36), _GUID_DASHES)


def guids_of_digests(digests: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """uuid5 GUIDs from their SHA-1 digests (40 lowercase hex digits each, as :func:`unified_activity_digest_sql`
    gives them), and the value of each GUID's first four hex digits (0 to 65535, for :func:`guid_buckets`).

    uuid5 cuts the digest to 16 bytes and sets the version nibble to 5 and the variant bits to ``10``; the
    characters are picked from the digests' bytes as one array, not a string per row.
    """
    n = len(digests)
    offsets = np.frombuffer(digests.buffers()[1], dtype=np.int64)[digests.offset : digests.offset + n + 1]
    digits = np.frombuffer(digests.buffers()[2], dtype=np.uint8, count=40 * n, offset=int(offsets[0])).reshape(n, 40)
    text = digits[:, np.maximum(_GUID_DIGITS, 0)]
    text[:, _GUID_DIGITS == _DASH] = ord("-")
    text[:, _GUID_DIGITS == _VERSION] = ord("5")
    text[:, _GUID_DIGITS == _VARIANT] = np.frombuffer(b"89ab", dtype=np.uint8)[_HEX_VALUE[digits[:, 16]] % 4, None]
    value = _HEX_VALUE[digits[:, :4]].astype(np.int64)
    heads = ((value[:, 0] * 16 + value[:, 1]) * 16 + value[:, 2]) * 16 + value[:, 3]
    guids = pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(np.arange(0, 36 * (n + 1), 36, dtype=np.int64)), pa.py_buffer(text.tobytes())
    )
    return guids, heads


def guids(identifiers: pd.Series, threads: int | None = None) -> pd.Series:
    """Deterministic GUIDs for a column of identifiers: exactly :func:`guid` of each value, computed in bulk (the
    SHA-1 of each by DuckDB, on its threads, or ``threads`` of them; the characters picked from the digests as one
    array)."""
    if len(identifiers) == 0:
        return pd.Series([], index=identifiers.index, dtype="string")
    import duckdb  # only the stages that derive GUIDs need it, not every command that reads the contract

    names = pa.array(identifiers.astype(str), type=pa.large_string())
    if names.null_count:
        raise ValueError("guids() got a missing identifier")
    con = duckdb.connect()
    try:
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        con.register("names", pa.table({"name": names}))
        # DuckDB keeps the rows in their order (preserve_insertion_order, its default) for a plain projection.
        found = con.sql(f"SELECT {uuid5_digest_sql('name')} FROM names").to_arrow_table()
    finally:
        con.close()
    text, _ = guids_of_digests(found.column(0).combine_chunks().cast(pa.large_string()))
    return pd.Series(pd.array(text.cast(pa.string()), dtype="string"), index=identifiers.index)


def identifiers(*parts: pd.Series | str) -> pd.Series:
    """Join columns (or constants) with ``|`` into msdynci_identifier strings."""
    series = [p for p in parts if isinstance(p, pd.Series)]
    if not series:
        raise ValueError("identifiers() needs at least one column")
    # Joined by one Arrow kernel (a missing part makes the identifier missing, as pandas' ``+`` does).
    columns = [
        pa.array(p.astype("string"), pa.large_string(), from_pandas=True)
        if isinstance(p, pd.Series)
        else pa.scalar(p, pa.large_string())
        for p in parts
    ]
    joined = pc.binary_join_element_wise(*columns, pa.scalar("|", pa.large_string()))
    return pd.Series(pd.array(joined, dtype="string"), index=series[0].index)


# -- the contract: one entry per output table ------------------------------------------------------------------
#: The ``Name`` part of a SegmentMembership identifier: the name of the membership list (one row per customer,
#: provider and membership type holds every segment of that customer in ``Segments``).
SEGMENT_MEMBERSHIP_NAME = "Segments"
#: The constant first part of a CustomerMeasure identifier.
CUSTOMER_MEASURE_PREFIX = "Customer_Measure"
#: GUID primary key of CustomerProfile rows: a deterministic GUID of CustomerId (the table has no GUID column).
CUSTOMER_PROFILE_KEY = "CustomerProfileId"


@dataclass(frozen=True)
class Const:
    """A constant part of an identifier (``Customer_Measure`` in ``Customer_Measure|CustomerId``)."""

    text: str


@dataclass(frozen=True)
class OutputTable:
    """One output table: its columns, what identifies a row, and how the identifier and GUID are derived.

    Attributes:
        name: the table name, e.g. ``AlternateKey``.
        row: what one row is (asset descriptions say "One row per <row>").
        columns: the exact columns in order; None for CustomerProfile, whose attributes come from the unify
            configuration (CustomerId first).
        key: the column that identifies a row and orders the table: its GUID (CustomerProfile: CustomerId).
        identifier: the parts of the identifier, joined with ``|``: column names, :class:`Const`, or names of
            values the producing stage passes (with a default in ``defaults``).
        identifier_column: the column that keeps the identifier (None: only its GUID is kept).
        identifying: content columns that may not be empty.
        json_columns: columns holding JSON text (a dict or list is serialised with sorted keys).
        timestamps: columns holding UTC timestamps.
        defaults: values of optional content columns that the input may leave out.
        computed: optional content columns derived from the others where the input leaves them out.
        rules: content normalisations :func:`build` applies before serialising.
        appended: rows are added and seldom changed once written (activities), rather than changed in place from
            run to run (a customer's profile, measures, scores): a sink may keep them in the order they arrive.
    """

    name: str
    row: str
    columns: tuple[str, ...] | None
    key: str
    identifier: tuple[str | Const, ...] = ()
    identifier_column: str | None = "msdynci_identifier"
    identifying: tuple[str, ...] = ()
    json_columns: tuple[str, ...] = ()
    timestamps: tuple[str, ...] = ()
    defaults: Mapping[str, str | None] = field(default_factory=dict)
    computed: Mapping[str, Callable[[pd.DataFrame], pd.Series]] = field(default_factory=dict)
    rules: Mapping[str, Callable[[pd.Series], pd.Series]] = field(default_factory=dict)
    appended: bool = False

    @property
    def content(self) -> tuple[str, ...]:
        """The columns the producing stage supplies; the identifier and the GUID are derived from them."""
        derived = {self.key, self.identifier_column}
        return tuple(c for c in self.columns or ("CustomerId",) if c not in derived)

    def identifiers(self, frame: pd.DataFrame, values: Mapping[str, str] | None = None) -> pd.Series:
        """The identifier of each row of ``frame``; parts that are not columns come from ``values`` or defaults."""
        given = {**self.defaults, **(values or {})}
        return identifiers(
            *[p.text if isinstance(p, Const) else frame[p] if p in frame.columns else given[p] for p in self.identifier]
        )


def _range_index(frame: pd.DataFrame) -> pd.Series:
    """RangeIndex of UnifiedActivity: the timestamp as Unix seconds, as text."""
    epoch = (frame["ActivityTimeStamp"] - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)
    return epoch.astype("Int64").astype("string")


def _sorted_names(series: pd.Series) -> pd.Series:
    """Segments as the sorted list of unique names (given as a list or a JSON list)."""

    def names(value):
        return sorted({str(n) for n in (json.loads(value) if isinstance(value, str) else list(value))})

    return series.map(names)


#: The seven output tables of spec/output-tables.md, in publishing order.
OUTPUT_TABLES: dict[str, OutputTable] = {
    t.name: t
    for t in (
        OutputTable("CustomerProfile", "unified customer", None, key="CustomerId", identifying=("CustomerId",)),
        OutputTable(
            "AlternateKey",
            "source record that took part in unification",
            tuple(ALTERNATE_KEY_COLUMNS),
            key="AlternateKeyId",
            identifier=("DataSourceName", "EntityName", "AlternateValue"),
            identifying=("DataSourceName", "EntityName", "AlternateValue", "CustomerId"),
            json_columns=("KeyRing",),
        ),
        OutputTable(
            "UnifiedActivity",
            "customer activity",
            tuple(UNIFIED_ACTIVITY_COLUMNS),
            key="msdynci_unifiedactivityid",
            identifier=(Const("UnifiedActivity"), "ActivityId"),
            identifier_column=None,
            identifying=("CustomerId", "ActivityId"),
            json_columns=("SemanticData",),
            timestamps=("ActivityTimeStamp",),
            defaults={"Title": None, "Description": None, "URL": None, "SemanticData": "{}"},
            computed={"RangeIndex": _range_index},
            appended=True,
        ),
        OutputTable(
            "CustomerMeasure",
            "customer with customer attribute measures",
            tuple(CUSTOMER_MEASURE_COLUMNS),
            key="msdynci_customermeasureid",
            identifier=(Const(CUSTOMER_MEASURE_PREFIX), "CustomerId"),
            identifying=("CustomerId",),
            json_columns=("Measures",),
        ),
        OutputTable(
            "Enrichment",
            "customer enrichment from one provider",
            tuple(ENRICHMENT_COLUMNS),
            key="msdynci_enrichmentid",
            identifier=("EnrichmentProvider", "EnrichmentType", "CustomerId"),
            identifying=("CustomerId", "EnrichmentProvider", "EnrichmentType"),
            json_columns=("Values",),
        ),
        OutputTable(
            "Prediction",
            "customer prediction of one model",
            tuple(PREDICTION_COLUMNS),
            key="msdynci_predictionid",
            identifier=("Model", "ModelProvider", "CustomerId"),
            identifying=("CustomerId", "ModelProvider", "Model"),
            json_columns=("Values",),
        ),
        OutputTable(
            "SegmentMembership",
            "customer with their segment memberships",
            tuple(SEGMENT_MEMBERSHIP_COLUMNS),
            key="msdynci_segmentmembershipid",
            # Name: the membership list's name (segments.membership_name).
            identifier=("CustomerId", "SegmentProvider", "SegmentMembershipType", "Name"),
            identifying=("CustomerId",),
            json_columns=("Segments",),
            defaults={
                "SegmentProvider": "ci_pipeline",
                "SegmentMembershipType": "Customer",
                "Name": SEGMENT_MEMBERSHIP_NAME,
            },
            rules={"Segments": _sorted_names},
        ),
    )
}


def contract(table: str) -> OutputTable:
    """The contract of one output table; an unknown name is a clear error."""
    if table not in OUTPUT_TABLES:
        raise UserError(f"{table!r} is not an output table; use one of {', '.join(OUTPUT_TABLES)}")
    return OUTPUT_TABLES[table]


def in_contract_order(spec: OutputTable, schema: pa.Schema) -> bool:
    """Whether a stored table's columns are the contract's, in its order (CustomerId first for tables whose columns
    the configuration decides)."""
    names = list(schema.names)
    expected = list(spec.columns) if spec.columns else ["CustomerId", *[c for c in names if c != "CustomerId"]]
    return names == expected


def is_text(data_type: pa.DataType) -> bool:
    """Whether an Arrow column type holds text."""
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type)


def _require(df: pd.DataFrame, table: str, columns) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(
            f"{table}: the input has no column(s) {', '.join(missing)} (it has {', '.join(map(str, df.columns))}); "
            "the producing stage must deliver them"
        )


def _no_nulls(df: pd.DataFrame, table: str, columns) -> None:
    for column in columns:
        missing = df[column].isna()
        if missing.any():
            raise UserError(
                f"{table}: {int(missing.sum())} row(s) have no {column} (e.g. row {int(missing.to_numpy().argmax())}); "
                "it identifies the row, so the producing stage must fill it"
            )


def json_text(series: pd.Series) -> pd.Series:
    """A JSON-string column: dicts and lists are serialised with sorted keys; strings are kept as they are."""
    if pd.api.types.is_string_dtype(series.dtype) and series.dtype != object:
        return series.astype("string")

    def dump(value):
        if value is None or (isinstance(value, float) and value != value):
            return None
        if isinstance(value, str):
            return value
        if hasattr(value, "tolist"):
            value = value.tolist()
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)

    return series.map(dump).astype("string")


def _typed(spec: OutputTable, column: str, series: pd.Series) -> pd.Series:
    if column in spec.timestamps:
        return pd.to_datetime(series, utc=True).astype("datetime64[us, UTC]")
    if column in spec.json_columns:
        return json_text(series)
    if holds_dates(series):
        # A date column (CustomerProfile's BirthDate) stays a date: CDM "date", a Dataverse date-only value.
        dates = pa.array(series.array) if isinstance(series.dtype, pd.ArrowDtype) else pa.array(series, pa.date32())
        return pd.Series(pd.arrays.ArrowExtensionArray(dates.cast(pa.date32())), index=series.index, name=series.name)
    return series if isinstance(series.dtype, pd.StringDtype) else series.astype("string")


def with_ids(table: str, content: pd.DataFrame, **values: str) -> pd.DataFrame:
    """The table's columns in order, with the identifier and GUID derived from ``content`` (the content columns,
    already typed by the producing stage) and ``values`` (identifier parts that are not columns). Rows keep their
    order.
    """
    spec = contract(table)
    _require(content, table, spec.content)
    derived = {}
    if spec.identifier:
        ident = spec.identifiers(content, values)
        if spec.identifier_column:
            derived[spec.identifier_column] = ident
        derived[spec.key] = guids(ident)
    return content.assign(**derived)[list(spec.columns or content.columns)]


def build(table: str, content: pd.DataFrame, **values: str) -> pd.DataFrame:
    """One output table from plain content, ready to publish: JSON columns serialised, timestamps in UTC, optional
    columns filled, identifier and GUID derived, rows ordered by the key.

    Args:
        table: the output table name.
        content: the content columns (:attr:`OutputTable.content`); dicts and lists for JSON columns are fine.
        values: constants for content columns the frame leaves out (e.g. ``SegmentProvider="contoso"``).

    Examples:
        >>> build("CustomerMeasure", pd.DataFrame({"CustomerId": ["A"], "Measures": [{"n": 1}]}))["Measures"][0]
        '{"n":1}'
    """
    spec = contract(table)
    if spec.columns is None:
        return finish(table, content)
    fixed = {**spec.defaults, **values}
    _require(content, table, [c for c in spec.content if c not in fixed and c not in spec.computed])
    _no_nulls(content, table, spec.identifying)
    out = pd.DataFrame(index=content.index)
    for column in spec.content:
        if column not in content.columns and column in spec.computed:
            continue
        given = content[column] if column in content.columns else pd.Series(fixed[column], index=content.index)
        if column in spec.rules:
            given = spec.rules[column](given)
        out[column] = _typed(spec, column, given)
    for column, compute in spec.computed.items():
        out[column] = out[column].fillna(compute(out)) if column in out.columns else compute(out)
    return finish(table, with_ids(table, out, **values))


def finish(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Check a table a stage built against the contract and order its rows by the key; nothing is recomputed.

    Publishing and exporting call this on the producing stage's frame: the columns must be exactly the contract's
    (CustomerProfile: CustomerId and the unified attributes), identifying columns filled, keys unique.
    """
    spec = contract(table)
    if spec.columns is None:
        _require(frame, table, ["CustomerId"])
        columns = ["CustomerId", *[c for c in frame.columns if c != "CustomerId"]]
    else:
        columns = list(spec.columns)
        if list(frame.columns) != columns:
            missing = [c for c in columns if c not in frame.columns]
            extra = [str(c) for c in frame.columns if c not in columns]
            raise UserError(
                f"{table}: the columns are not the output contract's (missing: {', '.join(missing) or 'none'}; "
                f"unexpected: {', '.join(extra) or 'none'}; expected in this order: {', '.join(columns)}); the "
                "producing stage must build the table with ci_pipeline.outputs.build or with_ids"
            )
    _no_nulls(frame, table, dict.fromkeys([spec.key, *spec.identifying]))
    # JSON columns the stage wrote as text stay as they are (json_text only serialises dicts and lists).
    out = pd.DataFrame({c: _typed(spec, c, frame[c]) for c in columns})
    text = text_array(out[spec.key])
    words = guid_words(text)
    if words is not None:
        return _in_guid_order(out, table, spec.key, words)
    if not _ascending(out[spec.key], text):
        if text is None:
            out = out.sort_values(spec.key, kind="stable")
        else:
            # Arrow's sort is stable too; the columns (millions of texts each) are gathered two at a time.
            out = take_rows(out, pc.sort_indices(text).to_numpy())
    return _unique_sorted(out.reset_index(drop=True), table, spec.key)


def guid_words(text: pa.Array | pa.ChunkedArray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Each GUID of ``text`` as two unsigned 64-bit numbers (its first and last 16 hex digits), which order the
    GUIDs as their texts do (the dashes stand at the same places in each); None unless every value is a GUID in
    lowercase. Sorting millions of GUIDs as numbers takes a third of the time of sorting them as texts."""
    if text is None or text.null_count or len(text) == 0:
        return None
    chunks = text.chunks if isinstance(text, pa.ChunkedArray) else [text]
    digits = []
    for chunk in chunks:
        if not len(chunk):
            continue
        wide = pa.types.is_large_string(chunk.type)
        if not (wide or pa.types.is_string(chunk.type)):
            return None
        offsets = np.frombuffer(chunk.buffers()[1], np.int64 if wide else np.int32)[chunk.offset :][: len(chunk) + 1]
        if not (np.diff(offsets) == 36).all():
            return None
        chars = np.frombuffer(chunk.buffers()[2], np.uint8, 36 * len(chunk), int(offsets[0])).reshape(-1, 36)
        if (chars[:, _GUID_DASHES] != ord("-")).any():
            return None
        digits.append(_DIGIT_OR_NOT[chars[:, _GUID_HEX]])
    every = np.concatenate(digits)
    if (every == _NOT_A_DIGIT).any():
        return None
    # Two digits a byte, read as big-endian words: the first digit is the most significant.
    words = np.ascontiguousarray((every[:, 0::2] << 4) | every[:, 1::2]).view(">u8").astype(np.uint64)
    return words[:, 0], words[:, 1]


def _in_guid_order(out: pd.DataFrame, table: str, key: str, words: tuple[np.ndarray, np.ndarray]) -> pd.DataFrame:
    """``out`` ordered by its GUID ``key`` (:func:`guid_words`), stable as Arrow's sort of the texts; equal keys
    refused as :func:`_unique_sorted` does."""
    high, low = words
    later = (high[1:] > high[:-1]) | ((high[1:] == high[:-1]) & (low[1:] >= low[:-1]))
    if not later.all():
        order = np.argsort(high, kind="stable")
        ranked = high[order]
        if (ranked[1:] == ranked[:-1]).any():
            order = np.lexsort((low, high))
        out, high, low = take_rows(out, order), high[order], low[order]
    out = out.reset_index(drop=True)
    if ((high[1:] == high[:-1]) & (low[1:] == low[:-1])).any():
        return _unique_sorted(out, table, key)
    return out


def _ascending(values: pd.Series, text: pa.Array | pa.ChunkedArray | None) -> bool:
    """Whether a key column is in ascending order; text keys (``text``, from :func:`text_array`) compared by Arrow
    (pandas makes a Python string of every key of a table of millions of rows)."""
    if text is None or text.null_count or len(text) < 2:
        return bool(values.is_monotonic_increasing)
    return bool(pc.all(pc.less_equal(text[:-1], text[1:])).as_py())


def _unique_sorted(df: pd.DataFrame, table: str, key: str) -> pd.DataFrame:
    """Refuse equal keys; the rows are sorted by ``key``, so equal keys are neighbours (no hashing)."""
    text = text_array(df[key])
    if text is not None and text.null_count == 0 and len(text) > 1:
        same = pc.equal(text[1:], text[:-1]).to_numpy(zero_copy_only=False)
    else:
        keys = df[key].to_numpy()
        same = keys[1:] == keys[:-1]
    if same.any():
        keys = df[key].to_numpy()
        duplicated = np.zeros(len(keys), dtype=bool)
        duplicated[1:] |= same
        duplicated[:-1] |= same
        sample = list(dict.fromkeys(keys[duplicated].tolist()))[:5]
        raise UserError(
            f"{table}: {int(duplicated.sum())} rows share a {key} (e.g. {sample}); each row needs its own key, "
            "fix the producing stage"
        )
    return df


def customer_profile_keys(customer_ids: pd.Series) -> pd.Series:
    """The GUID primary key of CustomerProfile rows (``guid(CustomerId)``), which the table does not store."""
    return guids(customer_ids)


def unified_activity_guids(activity_ids: pd.Series) -> pd.Series:
    """The GUID of each UnifiedActivity row: ``guid("UnifiedActivity|" + ActivityId)``."""
    return OUTPUT_TABLES["UnifiedActivity"].identifiers(pd.DataFrame({"ActivityId": activity_ids})).pipe(guids)


def empty_table(table: str) -> pd.DataFrame:
    """A table with no rows (the sink still creates the tables no stage of the configuration produces)."""
    columns = contract(table).columns or ["CustomerId"]
    return pd.DataFrame({c: pd.Series(dtype="string") for c in columns})
