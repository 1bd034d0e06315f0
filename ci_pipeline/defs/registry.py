"""The stage registry: each stage's defs module declares here, in one :class:`Stage`, what it reads and makes.

Publishing, the jobs, the run summary and the docs' stage table are derived from the registered stages, so a new
stage is one entry (see docs/architecture.md, "Adding a stage"). A stage names another stage's assets only through
that stage's declaration (``unify.STAGE.key("alternate_key")``), never by a literal key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import dagster as dg

from ci_pipeline.config import ProjectConfig
from ci_pipeline.defs.refresh import with_code_versions
from ci_pipeline.outputs import OUTPUT_TABLES

#: Output table -> the key of the asset that holds it, for the tables the stages of one configuration produce.
Produced = Mapping[str, dg.AssetKey]
#: Tag that publish exports carry: ``every_refresh`` or ``on_demand``.
REFRESH_TAG = "ci_pipeline/refresh"
#: Everything a refresh runs: on-demand exports run only when selected by name (or by a schedule of their own).
REFRESHED = dg.AssetSelection.all() - dg.AssetSelection.tag(REFRESH_TAG, "on_demand")


@dataclass(frozen=True)
class JobSpec:
    """A named run mode: the assets it selects, what it is for, and the mode tag its runs carry."""

    name: str
    selection: dg.AssetSelection
    description: str
    mode: str


def _always(config: ProjectConfig) -> bool:
    return True


def _no_jobs(config: ProjectConfig, keys: AbstractSet[dg.AssetKey]) -> list[JobSpec]:
    return []


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline as the Dagster glue sees it.

    Attributes:
        name: the stage name: its asset group and the prefix of its asset keys.
        section: the configuration section it reads (``sources`` for ingest).
        front_door: the domain function its assets call (the stage package's public entry).
        build: ``build(config, produced)`` -> its assets and checks; ``produced`` holds the output tables the
            stages before it produce for this configuration.
        summary: what the stage makes, one line (the docs' stage table).
        assets: its fixed assets by name (other stages read them through :meth:`key`).
        produces: the output tables it produces, with the key of the asset that holds each.
        active: whether the configuration turns the stage on (its ``produces`` count only then).
        keys: how its asset keys read, for the docs (default ``<name>/*``).
        jobs: ``jobs(config, keys)`` -> the run modes the stage adds, given every asset key of the definitions (a
            job whose selection is empty is left out).
    """

    name: str
    section: str
    front_door: Callable
    build: Callable[[ProjectConfig, Produced], dg.Definitions]
    summary: str
    assets: Mapping[str, dg.AssetKey] = field(default_factory=dict)
    produces: Mapping[str, dg.AssetKey] = field(default_factory=dict)
    active: Callable[[ProjectConfig], bool] = _always
    keys: str = ""
    jobs: Callable[[ProjectConfig, AbstractSet[dg.AssetKey]], list[JobSpec]] = _no_jobs

    def __post_init__(self):
        unknown = [t for t in self.produces if t not in OUTPUT_TABLES]
        if unknown:
            raise ValueError(f"stage {self.name}: {unknown} are not output tables; use one of {list(OUTPUT_TABLES)}")
        foreign = [k.to_user_string() for k in self.assets.values() if k.path[0] != self.name]
        if foreign:
            raise ValueError(f"stage {self.name}: asset keys {foreign} must start with the stage name")

    def key(self, name: str) -> dg.AssetKey:
        """The key of one of this stage's declared assets (a clear error for a name it does not declare)."""
        if name not in self.assets:
            raise KeyError(f"stage {self.name} declares no asset {name!r}; it declares {sorted(self.assets)}")
        return self.assets[name]

    @property
    def selection(self) -> dg.AssetSelection:
        """Every asset of the stage (its group)."""
        return dg.AssetSelection.groups(self.name)


def stage_table(stages: tuple[Stage, ...]) -> str:
    """The docs' stage table (README, docs/architecture.md), in data-flow order."""
    rows = ["| stage | configuration | assets (group) | makes |", "|---|---|---|---|"]
    for stage in stages:
        keys = stage.keys or f"`{stage.name}/*`"
        rows.append(f"| {stage.name} | `{stage.section}` | {keys} | {stage.summary} |")
    return "\n".join(rows)


def asset_key(stage: str, name: str) -> dg.AssetKey:
    """The key a stage gives one of its own assets: ``<stage>/<name>`` (only for the stage's own declarations)."""
    return dg.AssetKey([stage, name])


def produced_tables(config: ProjectConfig, stages: tuple[Stage, ...]) -> dict[str, dg.AssetKey]:
    """Output table -> producing asset, over the stages the configuration turns on (in output-table order)."""
    found: dict[str, dg.AssetKey] = {}
    for stage in stages:
        if not stage.active(config):
            continue
        for table, key in stage.produces.items():
            if table in found:
                raise ValueError(f"output table {table} is produced twice: by {found[table]} and {key}")
            found[table] = key
    return {table: found[table] for table in OUTPUT_TABLES if table in found}


def build_stages(config: ProjectConfig, stages: tuple[Stage, ...]) -> list[dg.Definitions]:
    """Each stage's definitions, in data-flow order, each seeing the tables of the stages before it, with a code
    version on every asset (its configuration section, those of the stages before it and the package version), so
    an incremental refresh recomputes what a configuration change affects."""
    parts, produced, sections = [], {}, []
    for stage in stages:
        sections.append(stage.section)
        parts.append(with_code_versions(stage.build(config, dict(produced)), config, list(sections)))
        if stage.active(config):
            produced |= stage.produces
    return parts


def stage_jobs(config: ProjectConfig, keys: AbstractSet[dg.AssetKey], stages: tuple[Stage, ...]) -> list[JobSpec]:
    """The run modes the stages declare, in stage order."""
    return [job for stage in stages for job in stage.jobs(config, keys)]
