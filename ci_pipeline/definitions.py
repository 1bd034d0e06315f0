"""The one Definitions object Dagster loads (`dagster dev`, `dg check defs`, workspace.yaml).

The configuration is read when Dagster loads the definitions, not at import: CI_PIPELINE_CONFIG chooses the
file, and the bundled sample is the default.
"""

import dagster as dg

from ci_pipeline.config import load_config
from ci_pipeline.defs import build_definitions


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_config())
