"""Provider name -> the factory that builds it from its configured parameters.

``enrich.enrichments.<name>.provider`` names one of these; each factory is ``build(params, context) -> provider``
(:data:`ci_pipeline.enrich.provider.ProviderFactory`). ``ci_pipeline.config.enrich.PROVIDERS`` lists the same names
for ``ci-pipeline validate``.
"""

from __future__ import annotations

from collections.abc import Mapping

from ci_pipeline.config.base import did_you_mean
from ci_pipeline.enrich import address, affinity, email, http
from ci_pipeline.enrich.provider import EnrichmentFailed, EnrichmentProvider, ProviderContext, ProviderFactory

FACTORIES: dict[str, ProviderFactory] = {
    "brand_affinity": affinity.build_brand,
    "interest_affinity": affinity.build_interest,
    "address": address.build,
    "email": email.build,
    "http": http.build,
}


def build_provider(provider: str, params: Mapping, context: ProviderContext) -> EnrichmentProvider:
    """The provider named ``provider`` built from ``params``; an unknown name is an :class:`EnrichmentFailed`."""
    factory = FACTORIES.get(provider)
    if factory is None:
        raise EnrichmentFailed(
            f"enrich.enrichments.{context.enrichment}.provider: unknown provider {provider!r}"
            f"{did_you_mean(provider, FACTORIES)}; providers are {', '.join(FACTORIES)}"
        )
    return factory(params, context)
