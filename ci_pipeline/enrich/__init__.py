"""The enrichment stage: values per customer from first-party data (brand and interest affinity, standardized
addresses, e-mail classes) and from third-party providers over HTTP. See :mod:`ci_pipeline.enrich.provider`."""

from ci_pipeline.enrich.provider import (
    EnrichmentFailed,
    EnrichmentInputs,
    EnrichmentProvider,
    EnrichmentResult,
    empty_values,
)

__all__ = ["EnrichmentFailed", "EnrichmentInputs", "EnrichmentProvider", "EnrichmentResult", "empty_values"]
