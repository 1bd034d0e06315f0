"""Dagster glue: each stage module turns the configuration into assets, checks, jobs, schedules and sensors."""

from __future__ import annotations

import dagster as dg

from ci_pipeline.config import ProjectConfig
from ci_pipeline.defs import activities, ingest, measures, orchestration, publish, segments, unify
from ci_pipeline.defs.resources import shared_resources

#: In data-flow order: lake -> ingest -> unify -> activities/measures -> segments -> publish.
STAGES = (ingest, unify, activities, measures, segments, publish)


def build_definitions(config: ProjectConfig) -> dg.Definitions:
    """All definitions for one configuration, with the shared lake resources bound."""
    parts = [stage.build(config) for stage in STAGES]
    stages = dg.Definitions.merge(*parts, dg.Definitions(resources=shared_resources(config)))
    # Jobs, schedules, sensors and the executor are built over the assets the stages actually produced.
    return orchestration.build(config, stages)
