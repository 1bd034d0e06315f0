"""One check of a configuration against its sources, shared by ``ci-pipeline validate`` and ``ci-pipeline run``.

Loading the configuration already checks it on its own (types, keys, references between sections, profile
attributes of segment rules). This adds what needs the sources: each table's path, header or schema and a bounded
sample (see :mod:`ci_pipeline.ingest.preflight`), and every column the configuration names in a source table,
checked against the table's real columns. Every problem is reported at once, with its key path, line and a
suggestion for near misses, so a run never starts only to fail after it has rewritten lake tables.
"""

from __future__ import annotations

from collections.abc import Collection

from ci_pipeline.config import ProjectConfig, load_config
from ci_pipeline.config.base import did_you_mean
from ci_pipeline.ingest.preflight import SourceSchema, inspect_sources
from ci_pipeline.lake import Lake


def project_problems(
    config: ProjectConfig, lake: Lake | None = None, tables: Collection[tuple[str, str]] | None = None
) -> list[str]:
    """Every problem of the sources and of the columns the configuration names in them.

    Args:
        config: the loaded (and so already self-consistent) configuration.
        lake: the lake whose filesystems reach the sources (default: the configured one).
        tables: ``(source, table)`` pairs to check (default: every table); references into other tables are
            not checked.
    """
    schemas, problems = inspect_sources(config, lake, tables)
    return problems + column_reference_problems(config, schemas)


def load_checked(path=None) -> ProjectConfig:
    """:func:`~ci_pipeline.config.load_config` for a command that runs the pipeline.

    When references between sections are broken, the error lists them together with every problem of the
    sources, the same list ``ci-pipeline validate`` prints.
    """
    config = load_config(path, references=False)
    problems = config.cross_reference_problems()
    if problems:
        raise config.error(problems + project_problems(config))
    return config


def require_valid(config: ProjectConfig, tables: Collection[tuple[str, str]] | None = None) -> None:
    """Raise a :class:`~ci_pipeline.errors.ConfigError` listing every problem of :func:`project_problems`."""
    problems = project_problems(config, tables=tables)
    if problems:
        raise config.error(problems)


def column_reference_problems(config: ProjectConfig, schemas: dict[tuple[str, str], SourceSchema]) -> list[str]:
    """Columns named under ``unify`` and ``activities`` that the source tables do not have.

    Args:
        config: the configuration.
        schemas: ``(source, table)`` -> what the preflight found; tables not in it (or with unknown columns) are
            skipped.
    """
    found: list[str] = []

    def check(key: str, source: str, table: str, column: str | None) -> None:
        schema = schemas.get((source, table))
        if column is None or schema is None or schema.columns is None or column in schema.columns:
            return
        found.append(
            f"{key}: {source}.{table} has no column '{column}'{did_you_mean(column, schema.columns)}; the columns of "
            f"{schema.file} are {', '.join(schema.columns)}"
        )

    if config.unify is not None:
        for i, t in enumerate(config.unify.tables):
            key = f"unify.tables[{i}]"
            for column in t.columns:
                check(f"{key}.columns.{column}", t.source, t.table, column)
            check(f"{key}.recency_column", t.source, t.table, t.recency_column)
            check(f"{key}.dedup.winner.column", t.source, t.table, t.dedup.winner.column)
        refs = {t.ref for t in config.unify.tables}
        for name, spec in config.unify.merge.fields.items():
            for j, src in enumerate(spec.sources):
                parts = src.split(".")
                if len(parts) == 3 and f"{parts[0]}.{parts[1]}" in refs:
                    check(f"unify.merge.fields.{name}.sources[{j}]", parts[0], parts[1], parts[2])
    for name, act in config.activities.tables.items():
        key = f"activities.tables.{name}"
        named = {
            "timestamp": act.timestamp,
            "primary_key": act.primary_key,
            "title": act.title,
            "description": act.description,
            "url": act.url,
            "customer.column": act.customer.column,
            **{f"fields.{field}": column for field, column in act.fields.items()},
        }
        for sub, column in named.items():
            check(f"{key}.{sub}", act.source, act.table, column)
    return found
