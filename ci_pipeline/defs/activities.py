"""Dagster definitions of the activities stage."""

import dagster as dg

from ci_pipeline.config import ProjectConfig


def build(config: ProjectConfig) -> dg.Definitions:
    """The activities assets, checks and jobs for a configuration."""
    return dg.Definitions()
