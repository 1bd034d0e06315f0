"""The enrichment stage: values per customer from first-party data (brand and interest affinity, standardized
addresses, e-mail classes) and from third-party providers over HTTP. See :mod:`ci_pipeline.enrich.provider` and
docs/enrichment.md. Nothing here imports dagster; ``ci_pipeline/defs/enrich.py`` wires it in."""

from ci_pipeline.enrich.affinity import shared_memo
from ci_pipeline.enrich.provider import (
    EnrichmentFailed,
    EnrichmentInputs,
    EnrichmentProvider,
    EnrichmentResult,
    ProviderContext,
    ProviderFactory,
    empty_values,
)
from ci_pipeline.enrich.published import (
    ROW_COLUMNS,
    enrichment_rows,
    enrichment_table,
    flat_fields,
    run_provider,
    segment_fields,
)
from ci_pipeline.enrich.registry import FACTORIES, build_provider

__all__ = [
    "FACTORIES",
    "ROW_COLUMNS",
    "EnrichmentFailed",
    "EnrichmentInputs",
    "EnrichmentProvider",
    "EnrichmentResult",
    "ProviderContext",
    "ProviderFactory",
    "build_provider",
    "empty_values",
    "enrichment_rows",
    "enrichment_table",
    "flat_fields",
    "run_provider",
    "segment_fields",
    "shared_memo",
]
