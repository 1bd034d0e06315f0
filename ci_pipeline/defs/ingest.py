"""Dagster definitions of the ingest stage."""

import dagster as dg

from ci_pipeline.config import ProjectConfig


def build(config: ProjectConfig) -> dg.Definitions:
    """The ingest assets, checks and jobs for a configuration."""
    return dg.Definitions()
