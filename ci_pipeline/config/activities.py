"""Activity tables: what customers did, declared per source table and merged into one timeline."""

from __future__ import annotations

from pydantic import Field, field_validator

from ci_pipeline.config.base import TYPE_PATTERN, Name, StrictModel

#: Leading columns of the typed activity table that measures and segments compute on (segment ``where`` filters
#: may name them besides the semantic fields).
FACT_COLUMNS = ["ActivityId", "CustomerId", "Activity", "ActivityType", "ActivityTimeStamp"]

#: The semantic activity types with a meaning the measure templates rely on; any other name is a custom type.
SEMANTIC_TYPES = ("SalesOrder", "SalesOrderLine", "Subscription", "Loyalty", "Feedback", "WebLog")

#: The semantic fields each type is expected to carry (documentation and sample config; not enforced).
TYPE_FIELDS: dict[str, tuple[str, ...]] = {
    "SalesOrder": ("amount", "currency", "is_return", "channel", "status"),
    "SalesOrderLine": ("amount", "product", "quantity", "unit_price", "brand", "category", "order_id"),
    "Subscription": ("amount", "product", "start", "end", "status"),
    "Loyalty": ("points", "reason"),
    "Feedback": ("rating", "text"),
    "WebLog": ("url", "page_views", "duration_seconds", "device"),
}


class CustomerLink(StrictModel):
    """The customer source table an activity points at, and the activity column holding that table's key."""

    source: Name
    table: Name
    #: Column of the activity table whose value is the customer table's primary key.
    column: str


class ActivityTable(StrictModel):
    """One source table that holds activities of one semantic type."""

    source: Name
    table: Name
    #: Semantic type (SalesOrder, SalesOrderLine, Subscription, Loyalty, Feedback, WebLog) or a custom name.
    type: str = Field(pattern=TYPE_PATTERN)
    #: Primary key column (default: the source table's primary key).
    primary_key: str | None = None
    #: Column with when the activity happened; values that do not parse, or lie in the future, are quarantined.
    timestamp: str
    #: strptime format of a text timestamp column; default: ISO 8601 and the usual date forms.
    timestamp_format: str | None = None
    title: str | None = None
    description: str | None = None
    url: str | None = None
    #: Semantic field name (amount, currency, product, quantity, is_return, points, rating, text, ...) -> column.
    fields: dict[Name, str] = {}
    customer: CustomerLink

    @field_validator("fields")
    @classmethod
    def _not_a_fact_column(cls, fields: dict[str, str]) -> dict[str, str]:
        # SQL over the facts (ci-pipeline sql, DuckDB) reads names without case: a field customerid would be
        # CustomerId there, and the field itself could not be read.
        taken = {c.lower(): c for c in FACT_COLUMNS}
        if clash := [f for f in fields if f.lower() in taken]:
            raise ValueError(
                f"field {clash[0]!r} is named like the activity facts' own column {taken[clash[0].lower()]} (names are "
                "read without case in SQL): name it otherwise, such as "
                f"{'source_' + clash[0]!r}"
            )
        return fields


def tables_read(names: list[str], tables: dict[str, ActivityTable]) -> list[ActivityTable]:
    """The activity tables that ``names`` read: each an activity name (a key of ``tables``) or an activity type,
    which reads every table of that type; an unknown name reads none."""
    return [t for n in dict.fromkeys(names) for k, t in tables.items() if k == n or (n not in tables and t.type == n)]


def field_origin(activity: str, field: str, tables: dict[str, ActivityTable]) -> str | None:
    """The source column(s) an activity's (or type's) field is read from (``column amount of shop.orders``), for
    messages about its values; None when no table of it has the field."""
    found = [
        f"column {t.fields[field]} of {t.source}.{t.table}"
        for t in tables_read([activity], tables)
        if field in t.fields
    ]
    return ", ".join(found) or None


class ActivitiesConfig(StrictModel):
    """The activity tables that make up the unified timeline (UnifiedActivity)."""

    #: Activity name -> table. The name is what measures and segments refer to (``activity: orders``).
    tables: dict[Name, ActivityTable] = {}
    #: Timestamps later than the run time by more than this many hours are quarantined as "in the future".
    future_tolerance_hours: float = Field(24.0, ge=0)
