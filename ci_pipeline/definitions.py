"""The one Definitions object Dagster loads (`dg dev`, `dg check defs`, workspace.yaml).

The configuration is read when Dagster loads the definitions, not at import: CI_PIPELINE_CONFIG chooses the
file, and the bundled sample is the default.
"""

import warnings

import dagster as dg

from ci_pipeline.memory import tune_allocators

# Runs launched from the UI, the schedules and the sensor load this module in their own process; the allocators are
# set up before the modules below load pandas and Arrow.
tune_allocators()

from ci_pipeline.config import load_config  # noqa: E402
from ci_pipeline.defs import build_definitions  # noqa: E402

# Dagster warns about its own beta and preview parameters that it uses internally (asset selections by group):
# notes for Dagster's developers that would fill the log of `dg dev` and of every run.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_config())
