"""Dagster glue: each stage module turns the configuration into assets, checks and jobs; orchestration adds
schedules, sensors and the executor. The stages are registered in :mod:`ci_pipeline.defs.stages`."""

from __future__ import annotations

import dagster as dg

from ci_pipeline.config import ProjectConfig
from ci_pipeline.defs import orchestration
from ci_pipeline.defs.registry import Stage, build_stages, produced_tables
from ci_pipeline.defs.resources import shared_resources
from ci_pipeline.defs.stages import STAGES

__all__ = ["STAGES", "Stage", "available_tables", "build_definitions"]


def available_tables(config: ProjectConfig, stages: tuple[Stage, ...] = STAGES) -> dict[str, dg.AssetKey]:
    """Output tables that a stage of this configuration produces, with the key of the producing asset."""
    return produced_tables(config, stages)


def build_definitions(config: ProjectConfig, stages: tuple[Stage, ...] = STAGES) -> dg.Definitions:
    """All definitions for one configuration, with the shared resources (lake, IO manager, sink) bound."""
    parts = build_stages(config, stages)
    merged = dg.Definitions.merge(*parts, dg.Definitions(resources=shared_resources(config)))
    # Jobs, schedules, sensors and the executor are built over the assets the stages actually produced.
    return orchestration.build(config, merged, stages)
