"""The registered stages, in data-flow order: lake -> ingest -> unify -> activities -> measures -> predictions ->
enrich -> segments -> publish. A new stage is its defs module (which declares ``STAGE``) plus one entry here."""

from ci_pipeline.defs import activities, enrich, ingest, measures, predictions, publish, segments, unify
from ci_pipeline.defs.registry import Stage

STAGES: tuple[Stage, ...] = (
    ingest.STAGE,
    unify.STAGE,
    activities.STAGE,
    measures.STAGE,
    predictions.STAGE,
    enrich.STAGE,
    segments.STAGE,
    publish.STAGE,
)
#: The stage whose assets leave the pipeline (freshness policies apply to them).
PUBLISH = publish.STAGE
