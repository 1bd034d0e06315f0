"""Publishing: the Dataverse sink and lake exports (filled in by the publish stage)."""

from ci_pipeline.config.base import StrictModel


class PublishConfig(StrictModel):
    """Where the output tables go."""
