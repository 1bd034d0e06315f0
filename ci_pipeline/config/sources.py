"""Data sources: the tables the pipeline attaches to (reads where they live, never copies first)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ci_pipeline.config.base import Name, StrictModel

ColumnType = Literal["string", "int64", "double", "decimal", "boolean", "date", "datetime", "time", "guid", "json"]


class ColumnSpec(StrictModel):
    """The declared type of one column. Values that do not parse as this type are quarantined."""

    type: ColumnType = "string"
    #: strptime format for date/datetime columns (e.g. ``%m/%d/%Y``); else ``date_formats`` of the table.
    format: str | None = None


class CsvOptions(StrictModel):
    """How a CSV file is written."""

    delimiter: str = Field(",", min_length=1, max_length=1)
    header: bool = True
    encoding: str = "utf-8"
    quotechar: str = Field('"', min_length=1, max_length=1)
    escapechar: str | None = Field(None, min_length=1, max_length=1)


class TableConfig(StrictModel):
    """One table of a source. Each becomes one ingestion asset keyed ``<source>/<table>``."""

    format: Literal["csv", "parquet", "cdm", "delta"]
    #: File, folder, CDM ``model.json`` / ``*.manifest.cdm.json``, or Delta table folder. Relative paths are
    #: resolved against the configuration file's folder; URLs (``abfss://...``) are read in place.
    path: str
    #: CDM entity name inside the model/manifest (default: the table name).
    entity: str | None = None
    #: The column that identifies a row. Rows with a missing or duplicate key are quarantined.
    primary_key: str
    #: Declared column types; columns not listed are read as strings. Headerless CSV needs every column, in order.
    columns: dict[str, ColumnSpec] = {}
    csv: CsvOptions = CsvOptions()
    #: Formats tried in order for date/datetime columns that declare no format of their own.
    date_formats: list[str] = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]
    #: What quarantined rows mean for the run: ``warning`` lets downstream go on without them, ``error`` blocks.
    bad_rows: Literal["warning", "error"] = "warning"
    description: str = ""

    @field_validator("columns", mode="before")
    @classmethod
    def _short_column_form(cls, value):
        # ``birth_date: date`` is shorthand for ``birth_date: {type: date}``.
        if isinstance(value, dict):
            return {k: ({"type": v} if isinstance(v, str) else v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _headerless_needs_columns(self):
        if self.format == "csv" and not self.csv.header and not self.columns:
            raise ValueError("a CSV file without a header row needs 'columns' listing every column in file order")
        if self.columns and self.primary_key not in self.columns and (self.format == "csv" and not self.csv.header):
            raise ValueError(f"primary_key '{self.primary_key}' is not one of the declared columns")
        return self


class SourceConfig(StrictModel):
    """A data source: a system such as a CRM or a web shop, with an owner and its tables."""

    #: Who owns the source (an e-mail or team name); used for governance.
    owner: str
    description: str = ""
    tables: dict[Name, TableConfig] = Field(min_length=1)
