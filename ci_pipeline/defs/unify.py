"""Dagster definitions of the unify stage."""

import dagster as dg

from ci_pipeline.config import ProjectConfig


def build(config: ProjectConfig) -> dg.Definitions:
    """The unify assets, checks and jobs for a configuration."""
    return dg.Definitions()
