"""Activity tables: what customers did, declared per source table and merged into one timeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from ci_pipeline.config.base import Name, StrictModel, did_you_mean

if TYPE_CHECKING:
    from ci_pipeline.config.model import ProjectConfig

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
    type: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
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


class ActivitiesConfig(StrictModel):
    """The activity tables that make up the unified timeline (UnifiedActivity)."""

    #: Activity name -> table. The name is what measures and segments refer to (``activity: orders``).
    tables: dict[Name, ActivityTable] = {}
    #: Timestamps later than the run time by more than this many hours are quarantined as "in the future".
    future_tolerance_hours: float = Field(24.0, ge=0)

    def problems(self, project: ProjectConfig) -> list[str]:
        """Activity tables and customer links that name sources, tables or columns that do not exist."""
        found: list[str] = []
        if self.tables and project.unify is None:
            found.append("activities.tables: activities are found through the unified customers; add a 'unify' section")
        seen: dict[tuple[str, str], str] = {}
        for name, act in self.tables.items():
            key = f"activities.tables.{name}"
            if (act.source, act.table) in seen:
                # ActivityId is <source>_<table>_<key>: one activity per source table keeps it unique.
                found.append(
                    f"{key}: {act.source}.{act.table} is already the activity '{seen[act.source, act.table]}'; "
                    "declare each source table once"
                )
            seen.setdefault((act.source, act.table), name)
            table = _table(project, act.source, act.table)
            if table is None:
                src = project.sources.get(act.source)
                hint = did_you_mean(act.table, src.tables) if src else did_you_mean(act.source, project.sources)
                found.append(f"{key}: no table '{act.table}' in source '{act.source}'{hint}; declare it under sources")
            elif table.columns and table.format == "csv" and not table.csv.header:
                declared = set(table.columns)
                columns = {
                    "timestamp": act.timestamp,
                    "customer.column": act.customer.column,
                    **({"title": act.title} if act.title else {}),
                    **({"description": act.description} if act.description else {}),
                    **({"url": act.url} if act.url else {}),
                    **{f"fields.{f}": c for f, c in act.fields.items()},
                }
                for sub, column in columns.items():
                    if column not in declared:
                        found.append(f"{key}.{sub}: column '{column}' is not declared in the table's columns")
            if _table(project, act.customer.source, act.customer.table) is None:
                found.append(
                    f"{key}.customer: no table '{act.customer.table}' in source '{act.customer.source}'; "
                    "point it at a customer table that takes part in unification"
                )
            elif project.unify is not None and not any(
                (t.source, t.table) == (act.customer.source, act.customer.table) for t in project.unify.tables
            ):
                found.append(
                    f"{key}.customer: {act.customer.source}.{act.customer.table} does not take part in unification, "
                    "so its records have no customer; add it to unify.tables or point at a table that does"
                )
        return found


def _table(project: ProjectConfig, source: str, table: str):
    src = project.sources.get(source)
    return None if src is None else src.tables.get(table)
