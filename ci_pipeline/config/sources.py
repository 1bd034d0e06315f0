"""Data sources: the tables the pipeline attaches to (reads where they live, never copies first)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ci_pipeline.config.base import Name, StrictModel

ColumnType = Literal["string", "int64", "double", "decimal", "boolean", "date", "datetime", "time", "guid", "json"]
Severity = Literal["warning", "error"]
#: Why a row was quarantined; each can get its own severity under ``bad_rows_by_reason``.
ReasonKind = Literal["missing_key", "duplicate_key", "column_count", "broken_quoting", "encoding", "malformed_value"]

#: What Dagster accepts as an asset owner: an e-mail address or ``team:<name>``.
_OWNER = re.compile(r"^(team:[A-Za-z0-9_-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$")


#: What a datetime64[ns] column can hold (pandas' limits), whole days inside them.
_EARLIEST, _LATEST = dt.date(1677, 9, 22), dt.date(2262, 4, 10)
#: Cells that mean "no value" in most exports; matched after trimming spaces, case-sensitively. (An empty cell is
#: always missing.)
DEFAULT_NULL_VALUES = ["NULL", "null", "Null", "NA", "N/A", "n/a", "#N/A", "None"]


class DateRange(StrictModel):
    """The dates a date/datetime column accepts; a value outside is malformed (its row is quarantined).

    The default, 1900-01-01..2199-12-31, holds every plausible birth, order or contract date; values outside it are
    almost always typos (``7015``) or sentinels (``9999-12-31``, ``0001-01-01``) that would crash or mislead later.
    """

    min: dt.date = dt.date(1900, 1, 1)
    max: dt.date = dt.date(2199, 12, 31)

    @model_validator(mode="after")
    def _inside_platform_limits(self):
        if self.min > self.max:
            raise ValueError(f"date_range: min {self.min} is after max {self.max}")
        if self.min < _EARLIEST or self.max > _LATEST:
            raise ValueError(
                f"date_range {self.min}..{self.max} is outside what the platform can hold ({_EARLIEST}..{_LATEST}); "
                "narrow it"
            )
        return self


class ColumnSpec(StrictModel):
    """The declared type of one column. Values that do not parse as this type are quarantined."""

    type: ColumnType = "string"
    #: strptime format for date/datetime/time columns (e.g. ``%m/%d/%Y``); else ``date_formats`` of the table.
    format: str | None = None
    #: date/datetime columns: the accepted dates, overriding the table's ``date_range``.
    date_range: DateRange | None = None
    #: double/decimal columns: ``NaN`` is read as a missing value instead of quarantining the row.
    allow_nan: bool = False

    @model_validator(mode="after")
    def _options_fit_the_type(self):
        if self.date_range is not None and self.type not in ("date", "datetime"):
            raise ValueError(f"date_range applies to date and datetime columns, not {self.type}")
        if self.allow_nan and self.type not in ("double", "decimal"):
            raise ValueError(f"allow_nan applies to double and decimal columns, not {self.type}")
        return self


class CsvOptions(StrictModel):
    """How a CSV file is written."""

    delimiter: str = Field(",", min_length=1, max_length=1)
    header: bool = True
    #: Any Python codec name: ``utf-8`` (default; a byte-order mark is skipped), ``cp1252``, ``latin-1``, ``utf-16``.
    encoding: str = "utf-8"
    quotechar: str = Field('"', min_length=1, max_length=1)
    escapechar: str | None = Field(None, min_length=1, max_length=1)
    #: Quoted values may contain line breaks. Off by default, so one unbalanced quote cannot swallow later rows.
    multiline: bool = False
    #: Blanks right after a delimiter are not part of the value, for files written ``a, b, c`` (febrl's are): without
    #: it every value but the first of a row keeps a leading blank into the profiles. Header names are read without
    #: their blanks either way.
    skip_initial_space: bool = False
    #: The decimal mark of the numbers in ``double`` and ``decimal`` columns: ``,`` for files where 262,15 is
    #: written, as in much of Europe (points and blanks then group thousands: 1.262,15 and 1 262,15).
    decimal: Literal[".", ","] = "."
    #: The mark between groups of three digits in ``int64``, ``double`` and ``decimal`` columns, dropped where it
    #: groups three digits (``,`` for 1,234,567.89 as US exports write it); other text is still malformed.
    thousands: Literal[",", ".", " ", "'"] | None = None

    @model_validator(mode="after")
    def _marks_differ(self) -> CsvOptions:
        if self.thousands == self.decimal:
            raise ValueError(f"thousands and decimal are both {self.decimal!r}; a number cannot have one mark for both")
        return self

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}; use a Python codec name such as utf-8 or cp1252") from None
        return value


class IncrementalOptions(StrictModel):
    """The incremental folder layout: ``FullData/`` plus ``IncrementalData/yyyy/mm/dd/hh/{Upserts,Deletes}/``."""

    #: Column with the time a row was last changed; the newest version of a key wins.
    last_modified: str | None = None
    #: Hour folders are applied only once closed (their hour has ended), so a half-written hour is never read.
    closed_hours_only: bool = True
    #: ``cdm`` only: the entity's folder (holding FullData/IncrementalData), relative to the model/manifest;
    #: default: a folder named like the entity next to the document.
    folder: str | None = None


class TableConfig(StrictModel):
    """One table of a source. Each becomes one ingestion asset keyed ``<source>/<table>``."""

    format: Literal["csv", "parquet", "cdm", "delta"]
    #: File, folder, CDM ``model.json`` / ``*.manifest.cdm.json``, Delta table folder, or (with ``incremental``)
    #: the table folder holding ``FullData``/``IncrementalData``. Relative paths are resolved against the
    #: configuration file's folder; URLs (``abfss://...``) are read in place.
    path: str
    #: CDM entity name inside the model/manifest (default: the table name).
    entity: str | None = None
    #: The column that identifies a row. Rows with a missing or duplicate key are quarantined.
    primary_key: str
    #: Declared column types; columns not listed are read as strings. Headerless CSV needs every column, in order.
    columns: dict[str, ColumnSpec] = {}
    csv: CsvOptions = CsvOptions()
    #: Formats tried in order for date/datetime columns that declare no format of their own. ISO 8601 last: the
    #: forms exports write with a zone or fractions (``2026-01-10T12:00:00Z``, ``...+02:00``, ``...09:30:00.25``).
    date_formats: list[str] = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "ISO8601"]
    #: Dates accepted in date/datetime columns (a column's own ``date_range`` overrides it).
    date_range: DateRange = DateRange()
    #: Text cells that mean "missing" in every column (compared after trimming spaces); a key that is one is a
    #: missing key. ``[]`` keeps such text as it is.
    null_values: list[str] = DEFAULT_NULL_VALUES
    #: What quarantined rows mean for the run: ``warning`` lets downstream go on without them, ``error`` blocks.
    bad_rows: Severity = "warning"
    #: Per-reason severity overriding ``bad_rows`` (e.g. ``{duplicate_key: error}``).
    bad_rows_by_reason: dict[ReasonKind, Severity] = {}
    #: A table with no rows is an error (an empty export usually means a failed one) unless this is true.
    allow_empty: bool = False
    #: Read the incremental CDM folder layout. With csv or parquet, ``path`` is the table folder and the format is
    #: that of the part files; with cdm, the entity's attributes give columns and types.
    incremental: IncrementalOptions | None = None
    description: str = ""

    @field_validator("columns", mode="before")
    @classmethod
    def _short_column_form(cls, value):
        # ``birth_date: date`` is shorthand for ``birth_date: {type: date}``.
        if isinstance(value, dict):
            return {k: ({"type": v} if isinstance(v, str) else v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _consistent(self):
        if self.format == "csv" and not self.csv.header and not self.columns:
            raise ValueError("a CSV file without a header row needs 'columns' listing every column in file order")
        if self.columns and self.primary_key not in self.columns and (self.format == "csv" and not self.csv.header):
            raise ValueError(f"primary_key '{self.primary_key}' is not one of the declared columns")
        if self.incremental is not None and self.format == "delta":
            raise ValueError("'incremental' is the CDM folder layout; a Delta table tracks its own versions")
        return self

    def severity(self, kind: str) -> str:
        """The severity of a quarantined row of this reason kind."""
        return self.bad_rows_by_reason.get(kind, self.bad_rows)


class SourceConfig(StrictModel):
    """A data source: a system such as a CRM or a web shop, with an owner and its tables."""

    #: Who owns the source (an e-mail or ``team:name``); used for governance and as the assets' owner.
    owner: str
    description: str = ""
    tables: dict[Name, TableConfig] = Field(min_length=1)

    @property
    def dagster_owner(self) -> str | None:
        """The owner in the form Dagster accepts (an e-mail or ``team:name``), or None."""
        return self.owner if _OWNER.match(self.owner) else None
