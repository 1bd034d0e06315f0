"""The one Definitions object Dagster loads (`dg dev`, `dg check defs`, workspace.yaml).

The configuration is read when Dagster loads the definitions, not at import: CI_PIPELINE_CONFIG chooses the
file, and the bundled sample is the default.
"""

import warnings

import dagster as dg

from ci_pipeline.config import load_config
from ci_pipeline.defs import build_definitions
from ci_pipeline.memory import tune_allocators

# Dagster warns about its own beta and preview parameters that it uses internally (asset selections by group):
# notes for Dagster's developers that would fill the log of `dg dev` and of every run.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


# Runs launched from the UI, the schedules and the sensor load this module in their own process.
tune_allocators()


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_config())
