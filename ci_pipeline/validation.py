"""One check of a configuration against its sources, shared by ``ci-pipeline validate`` and ``ci-pipeline run``.

Loading the configuration already checks it on its own (types, keys, references between sections, profile
attributes of segment rules). This adds what needs the outside world: each source table's path, header or schema
and a bounded sample (see :mod:`ci_pipeline.ingest.preflight`); every column the configuration names in a source
table, checked against the table's real columns; the alias files of unification; the sink's secret references and
certificate file. Every problem is reported at once, with its key path, line and a suggestion for near misses, so a
run never starts only to fail after it has rewritten lake tables.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

from ci_pipeline.config import ProjectConfig, load_config, resolve_secret
from ci_pipeline.config.base import did_you_mean
from ci_pipeline.errors import UserError
from ci_pipeline.ingest.preflight import SourceSchema, inspect_sources
from ci_pipeline.lake import Lake

#: An asset key as a tuple of its parts (``("crm", "contacts")``, ``("unify", "customer_profile")``).
AssetPath = tuple[str, ...]


#: The asset of the probabilistic match model (``unify/match_model``).
MATCH_MODEL = ("unify", "match_model")


def stored_model_problems(config: ProjectConfig, lake: Lake) -> list[str]:
    """The match model stored in the lake against the configuration: with ``method: probabilistic``, comparisons
    the model was not trained with (or attributes it reads that are no longer mapped) stop a run, so they are
    told before it, with the way to retrain."""
    unify = config.unify
    # Settings that cannot be read are told by :func:`option_problems`; against them no model fits or not.
    if unify is None or unify.match.method != "probabilistic" or option_problems(config):
        return []
    from ci_pipeline.unify.probabilistic_method import MODEL_PATH, model_attributes, read_model, scoring_settings

    try:
        if lake.exists(MODEL_PATH):
            model = read_model(lake.read_bytes(MODEL_PATH), lake.url(MODEL_PATH))
            scoring_settings(unify, model, model_attributes(unify))
    except UserError as exc:
        return [str(exc)]
    return []


def project_problems(
    config: ProjectConfig, lake: Lake | None = None, selected: Collection[AssetPath] | None = None
) -> list[str]:
    """Every problem of the sources, the columns the configuration names in them, alias files and sink settings.

    Args:
        config: the loaded configuration.
        lake: the lake whose filesystems reach the sources (default: the configured one).
        selected: the asset keys a run materialises (default: everything). Only the source tables among them are
            opened; alias files are checked when a unify asset is selected, the sink when a sink asset is.
    """
    return project_report(config, lake, selected)[0]


def project_report(
    config: ProjectConfig, lake: Lake | None = None, selected: Collection[AssetPath] | None = None
) -> tuple[list[str], list[str]]:
    """The problems of :func:`project_problems`, and the warnings of the sources (see
    :class:`~ci_pipeline.ingest.preflight.SourceSchema`), which ``validate`` prints and which do not stop a run."""
    found: list[str] = []
    tables = None
    if selected is not None:
        known = {(source, table) for source, spec in config.sources.items() for table in spec.tables}
        tables = {key for key in selected if key in known}
    try:
        lake = lake or Lake.from_config(config.lake, config.base_dir)
    except UserError as exc:
        # Without the lake no source can be opened; the remaining checks still run.
        found.append(f"lake: {exc}")
        schemas: dict[tuple[str, str], SourceSchema] = {}
    else:
        schemas, problems = inspect_sources(config, lake, tables)
        found += problems
        # A run that retrains the model (its asset selected) is how a model that does not fit is mended.
        if selected is None or (any(key[0] == "unify" for key in selected) and MATCH_MODEL not in selected):
            found += stored_model_problems(config, lake)
    found += column_reference_problems(config, schemas)
    if selected is None or any(key[0] == "unify" for key in selected):
        found += alias_file_problems(config) + override_problems(config)
    if selected is None or any(key[0] == "publish" and key[-1].startswith("sink_") for key in selected):
        found += sink_problems(config)
    warnings = [warning for schema in schemas.values() for warning in schema.warnings]
    return found, warnings + setting_warnings(config)


def setting_warnings(config: ProjectConfig) -> list[str]:
    """Settings that are legal but do not do what they seem to (the run log says them again)."""
    predictions = config.predictions
    ignored = predictions.churn.ignored_window() if predictions and "churn" in predictions.models else None
    return [ignored] if ignored else []


def option_problems(config: ProjectConfig) -> list[str]:
    """The mistakes of ``unify.match.probabilistic``'s keys other than its comparisons, rules and strata (which
    :meth:`~ci_pipeline.config.ProjectConfig.cross_reference_problems` checks key by key), each under its key path."""
    if config.unify is None or config.unify.match.probabilistic is None:
        return []
    from ci_pipeline.unify.probabilistic import option_path
    from ci_pipeline.unify.probabilistic import option_problems as settings_problems

    return [option_path(p) for p in settings_problems(config.unify.match.probabilistic)]


def load_checked(path=None) -> ProjectConfig:
    """:func:`~ci_pipeline.config.load_config` for a command that runs the pipeline.

    When references between sections are broken, the error lists them together with every problem of the
    sources, the same list ``ci-pipeline validate`` prints.
    """
    config = load_config(path, references=False)
    problems = config.cross_reference_problems() + option_problems(config)
    if problems:
        raise config.error(problems + project_problems(config))
    return config


def require_valid(config: ProjectConfig, selected: Collection[AssetPath] | None = None) -> None:
    """Raise a :class:`~ci_pipeline.errors.ConfigError` listing every problem of :func:`project_problems`."""
    problems = project_problems(config, selected=selected)
    if problems:
        raise config.error(problems)


def column_reference_problems(config: ProjectConfig, schemas: dict[tuple[str, str], SourceSchema]) -> list[str]:
    """Columns named under ``unify`` and ``activities`` that the source tables do not have.

    Args:
        config: the configuration.
        schemas: ``(source, table)`` -> what the preflight found; tables not in it (or with unknown columns) are
            skipped.
    """
    named: list[tuple[str, str, str, str]] = []

    def check(key: str, source: str, table: str, column: str | None) -> None:
        if column is not None:
            named.append((key, source, table, column))

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
        columns = {
            "timestamp": act.timestamp,
            "primary_key": act.primary_key,
            "title": act.title,
            "description": act.description,
            "url": act.url,
            "customer.column": act.customer.column,
            **{f"fields.{field}": column for field, column in act.fields.items()},
        }
        for sub, column in columns.items():
            check(f"{key}.{sub}", act.source, act.table, column)
    return _missing_columns(named, schemas)


def _missing_columns(named: list[tuple[str, str, str, str]], schemas: dict[tuple[str, str], SourceSchema]) -> list[str]:
    """The problems of the columns ``named`` (key, source, table, column) that their table does not have, each with
    a likely fix: a column of the table that no key names and that shares a word with it (a renamed column:
    ``requester_email`` now ``email_address``), else a near miss of its spelling."""
    used: dict[tuple[str, str], set[str]] = {}
    for _, source, table, column in named:
        used.setdefault((source, table), set()).add(column)
    found = []
    for key, source, table, column in named:
        schema = schemas.get((source, table))
        if schema is None or schema.columns is None or column in schema.columns:
            continue
        words = set(_words(column))
        renamed = [c for c in schema.columns if c not in used[source, table] and words & set(_words(c))]
        hint = f" (renamed to '{renamed[0]}'?)" if len(renamed) == 1 else did_you_mean(column, schema.columns)
        found.append(
            f"{key}: {source}.{table} has no column '{column}'{hint}; the columns of {schema.file} are "
            f"{', '.join(schema.columns)}"
        )
    return found


def _words(column: str) -> list[str]:
    """The words of a column name (``RequesterEmail``, ``requester_email``, ``Requester Email``: requester, email),
    in lower case; words of one or two letters (``id``, ``nr``) say too little to tie two names."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", str(column))
    return [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if len(w) > 2]


def alias_file_problems(config: ProjectConfig) -> list[str]:
    """Alias maps (``unify.normalize.aliases``) that are missing or malformed, read as unification reads them."""
    from ci_pipeline.unify.normalize import read_alias_file

    found: list[str] = []
    for name, path in config.unify.normalize.aliases.items() if config.unify else ():
        try:
            read_alias_file(config.resolve_location(path), name)
        except UserError as exc:
            key = f"unify.normalize.aliases.{name}"
            found.append(str(exc) if str(exc).startswith(key) else f"{key}: {exc}")
    return found


def override_problems(config: ProjectConfig) -> list[str]:
    """Never-match and always-match pairs, listed or in their files, that unification cannot read or that name a
    table it does not unify (a record it cannot hold: the pair would only be ignored, with a warning)."""
    from ci_pipeline.unify.engine import listed_pairs, pair_file, read_pair_file

    if config.unify is None:
        return []
    tables = {(t.source, t.table) for t in config.unify.tables}
    named = sorted(f"{s}.{t}" for s, t in tables)
    found: list[str] = []
    listed: dict[str, dict[frozenset, str]] = {}
    for kind in ("never_match", "always_match"):
        pairs = listed_pairs(config.unify, kind)
        file = pair_file(config.unify, kind, config.base_dir)
        if file:
            try:
                pairs += read_pair_file(file, kind)
            except UserError as exc:
                found.append(str(exc))
        found += [
            f"{where}: {side[0]}.{side[1]} is not a unify table ({', '.join(named)}); fix the source and table"
            for left, right, where in pairs
            for side in (left, right)
            if (side[0], side[1]) not in tables
        ]
        listed[kind] = {frozenset(("|".join(left), "|".join(right))): where for left, right, where in pairs}
    # A pair in both lists is kept apart (never-match wins over a link of any kind): say so rather than let one
    # of the two be ignored without a word.
    found += [
        f"{where} and {listed['always_match'][pair]}: {' and '.join(sorted(pair))} are listed as both never-match "
        "and always-match (never-match wins); remove one"
        for pair, where in listed["never_match"].items()
        if pair in listed["always_match"]
    ]
    return found


def sink_problems(config: ProjectConfig) -> list[str]:
    """Dataverse sink settings that would fail when publishing: unset secret references, a missing certificate.

    Secret values are read only to see that they exist; no message carries one.
    """
    dataverse = config.publish.sink.dataverse
    if config.publish.sink.kind != "dataverse" or dataverse is None:
        return []
    found: list[str] = []
    key = "publish.sink.dataverse"
    for name in ("client_secret", "certificate_password"):
        ref = getattr(dataverse, name)
        if ref is not None:
            try:
                resolve_secret(ref, f"{key}.{name}", config.base_dir)
            except UserError as exc:
                found.append(str(exc))
    if dataverse.credential == "certificate" and dataverse.certificate_path:
        path = Path(config.resolve_location(dataverse.certificate_path))
        if not path.is_file():
            found.append(
                f"{key}.certificate_path: {path} does not exist; put the PEM or PFX file there or fix the path"
            )
    return found
