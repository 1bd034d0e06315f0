"""Enrichment: values per customer from first-party data and from providers (docs/config/enrich.md).

The section only describes which enrichments run, with which provider, parameters and connection;
``ci_pipeline.enrich`` runs them and the enrich stage wires them in. The parameters of the first-party affinity
providers are described here too, so ``ci-pipeline validate`` checks them against the activities; other
providers check their own parameters when they are built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, field_validator

from ci_pipeline.config.base import Name, StrictModel, did_you_mean
from ci_pipeline.config.messages import describe_errors

if TYPE_CHECKING:
    from ci_pipeline.config.model import ProjectConfig

#: The first-party affinity providers -> the semantic activity field each reads by default.
AFFINITY_PROVIDERS = {"brand_affinity": "brand", "interest_affinity": "category"}
#: Every provider name an enrichment may use (the enrich registry holds one factory per name; a test keeps the two
#: equal): the affinities, standardized addresses, e-mail classes and a third-party API over HTTP.
PROVIDERS = (*AFFINITY_PROVIDERS, "address", "email", "http")
#: The providers that read the unified profile alone (no activities, measures or catalog): their enrichments run in
#: a step of their own as soon as the profile is unified, beside the activities.
PROFILE_PROVIDERS = ("address", "email", "http")
#: The fields of the built-in profile providers, as segment rules read them (``enrichment.<name>.<field>``); a test
#: keeps them equal to what the providers write.
PROVIDER_FIELDS = {
    "email": ("Domain", "Class", "FreeMailProvider", "Disposable", "Role", "Valid"),
    "address": (
        "Street1",
        "City",
        "StateOrProvince",
        "ZipOrPostalCode",
        "CountryOrRegion",
        "Address",
        "Status",
        "Reason",
    ),
}
#: The fields of an affinity enrichment beside ``Affinity.<brand or interest>.<part>``.
AFFINITY_FIELDS = ("Top", "Prior")
#: The parts of each brand or interest an affinity enrichment scores.
AFFINITY_PARTS = ("Score", "Level", "ShareOfVoice")
#: Most brands or interests an affinity enrichment reports scores and share of voice for (the reference's limit).
MAX_CHOSEN = 5


class Catalog(StrictModel):
    """A product table that holds the brand and category of each product, when the activity names only products."""

    source: Name
    table: Name
    #: Column of the catalog with the product key the activity's ``product`` field holds.
    key: str
    #: Catalog column -> the name the affinity reads it as (``{manufacturer: brand, department: category}``).
    columns: dict[str, Name] = Field(min_length=1)


class PriorFields(StrictModel):
    """Customer profile attributes that define "customers like them" for the prior (each used where present)."""

    postal_code: str | None = "PostalCode"
    city: str | None = "City"
    birth_date: str | None = "BirthDate"
    gender: str | None = "Gender"
    #: Leading characters of the postal code that make a postal area (``021`` of ``02139``).
    postal_prefix: int = Field(3, ge=1, le=10)


class AffinityParams(StrictModel):
    """Brand or interest affinity from purchases (docs/enrichment.md has the formula)."""

    #: Activity with one row per product bought (order lines).
    activity: str = "order_lines"
    #: Semantic field of that activity holding the brand (brand affinity) or category (interest affinity);
    #: default ``brand`` or ``category`` by provider.
    field: str | None = None
    #: What a purchase weighs: its spend (``amount`` field) or its quantity (``quantity`` field).
    weight: Literal["spend", "quantity"] = "spend"
    amount: str = "amount"
    quantity: str = "quantity"
    #: Days after which a purchase counts half as much as one made on the reference date.
    half_life_days: float = Field(365.0, gt=0)
    #: The brands or interests scored, at most 5; none: the 5 (``top``) with the most weighted purchases.
    chosen: list[str] = Field(default_factory=list, max_length=MAX_CHOSEN)
    top: int = Field(MAX_CHOSEN, ge=1, le=MAX_CHOSEN)
    #: The prior added to each customer's own spend: this many average customers like them. It decides for
    #: customers with little or no history and hardly moves those with much.
    prior_strength: float = Field(1.0, gt=0)
    #: Customers with fewer purchase lines than this are marked ``Prior`` in their Values.
    min_lines: int = Field(3, ge=1)
    #: Customers a group needs before its own shares count fully (smaller groups lean on the larger group).
    min_group: int = Field(20, ge=1)
    prior_fields: PriorFields = PriorFields()
    #: Brand and category from a product table instead of the activity's own fields.
    catalog: Catalog | None = None
    #: The published EnrichmentType (default ``BrandAffinity`` or ``InterestAffinity``).
    type: str | None = None

    @field_validator("chosen")
    @classmethod
    def _distinct(cls, chosen):
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"a name is listed twice: {chosen}; list each brand or interest once")
        return chosen


class EnrichmentSpec(StrictModel):
    """One configured enrichment: its provider, the provider's parameters and, where it needs one, a connection."""

    provider: str
    params: dict[str, Any] = Field(default_factory=dict)
    #: The governed connection it sends data through (``ci-pipeline connections``); None for first-party ones.
    connection: str | None = None
    #: An inactive enrichment is not run: it is shown as skipped and its last output stays published.
    active: bool = True
    description: str | None = None

    def affinity(self) -> AffinityParams:
        """The parameters of a brand or interest affinity enrichment, defaults filled by provider."""
        params = AffinityParams.model_validate(self.params)
        return params if params.field else params.model_copy(update={"field": AFFINITY_PROVIDERS[self.provider]})


class EnrichConfig(StrictModel):
    """The enrich stage: enrichment name (its asset ``enrich/<name>`` and ``enrichment.<name>.<field>`` in segment
    rules) -> what it runs."""

    enrichments: dict[Name, EnrichmentSpec] = Field(default_factory=dict)

    def problems(self, project: ProjectConfig) -> list[str]:
        """Unknown providers, and affinity parameters that name activities or fields the project does not have."""
        found: list[str] = []
        for name, spec in self.enrichments.items():
            key = f"enrich.enrichments.{name}"
            if spec.provider not in PROVIDERS:
                found.append(
                    f"{key}.provider: unknown provider {spec.provider!r}{did_you_mean(spec.provider, PROVIDERS)}; "
                    f"providers are {', '.join(PROVIDERS)}"
                )
            elif spec.provider in AFFINITY_PROVIDERS:
                found += _affinity_problems(key, spec, project)
        return found


def _affinity_problems(key: str, spec: EnrichmentSpec, project: ProjectConfig) -> list[str]:
    try:
        params = spec.affinity()
    except ValidationError as exc:
        return describe_errors(exc, AffinityParams, f"{key}.params")
    if project.unify is None:
        return [f"{key}: affinities are computed per unified customer; add a 'unify' section"]
    tables = project.activities.tables
    if params.activity not in tables:
        return [
            f"{key}.params.activity: unknown activity {params.activity!r}{did_you_mean(params.activity, tables)}; "
            f"affinities read an activity with one row per product bought (activities: {', '.join(tables) or 'none'})"
        ]
    mapped = tables[params.activity].fields
    found = []
    weight = params.amount if params.weight == "spend" else params.quantity
    if weight not in mapped:
        found.append(
            f"{key}.params: activity {params.activity!r} maps no {weight!r} field; map it under "
            f"activities.tables.{params.activity}.fields ({weight}: <column>) or set params.weight"
        )
    from_catalog = params.catalog is not None and params.field in params.catalog.columns.values()
    if params.catalog is not None and "product" not in mapped:
        found.append(
            f"{key}.params.catalog: activity {params.activity!r} maps no 'product' field to look products up in "
            f"the catalog; map it under activities.tables.{params.activity}.fields (product: <column>)"
        )
    if params.field not in mapped and not from_catalog:
        what = "brand (manufacturer)" if spec.provider == "brand_affinity" else "category"
        found.append(
            f"{key}.params.field: activity {params.activity!r} maps no {params.field!r} field; map the product "
            f"{what} column under activities.tables.{params.activity}.fields ({params.field}: <column>), or read it "
            "from a product table with params.catalog"
        )
    if params.catalog is not None:
        source = project.sources.get(params.catalog.source)
        if source is None or params.catalog.table not in source.tables:
            found.append(
                f"{key}.params.catalog: no source table {params.catalog.source}.{params.catalog.table}; name one "
                "of sources.<source>.tables"
            )
    return found


def field_problem(spec: EnrichmentSpec, field: str) -> str | None:
    """Why ``field`` is no segment field of the enrichment (``enrichment.<name>.<field>``), as far as its
    configuration tells before any data: the fixed fields of e-mail and address, the shape of the affinities' (and
    the brands or interests they score when ``params.chosen`` lists them), the ``params.mapping`` keys of an HTTP
    enrichment. None when the field may be written; an affinity's brands without ``chosen`` are known only from the
    purchases (the run names a wrong one)."""
    if spec.provider in PROVIDER_FIELDS:
        fields = PROVIDER_FIELDS[spec.provider]
        return None if field in fields else _no_field(field, fields, ", ".join(fields))
    if spec.provider in AFFINITY_PROVIDERS:
        return _affinity_field_problem(spec, field)
    if spec.provider == "http":
        return _http_field_problem(spec, field)
    return None


def _no_field(field: str, near: list[str] | tuple[str, ...], fields: str) -> str:
    return f"has no field {field!r}{did_you_mean(field, near)}; its fields are {fields}"


def _affinity_field_problem(spec: EnrichmentSpec, field: str) -> str | None:
    chosen = spec.params.get("chosen") if isinstance(spec.params.get("chosen"), list) else None
    chosen = [str(c) for c in chosen] if chosen else None
    named = ", ".join(chosen) if chosen else "each of the most bought, known once it runs"
    fields = f"Top, Prior and Affinity.<name>.Score|Level|ShareOfVoice (names: {named})"
    head, _, rest = field.partition(".")
    brand, _, part = rest.rpartition(".")
    shaped = head == "Affinity" and bool(brand) and part in AFFINITY_PARTS
    if field in AFFINITY_FIELDS or (shaped and (not chosen or brand in chosen)):
        return None
    if shaped:
        return (
            f"scores no {brand!r}{did_you_mean(brand, chosen)}; it scores the names its params.chosen lists, as "
            f"written: {', '.join(chosen)}"
        )
    # The near miss among the fields it has, the brand or interest taken as written where none are listed.
    names = chosen or ([brand] if brand else [])
    near = [*AFFINITY_FIELDS, *(f"Affinity.{n}.{p}" for n in names for p in AFFINITY_PARTS)]
    return _no_field(field, near, fields)


def _http_field_problem(spec: EnrichmentSpec, field: str) -> str | None:
    mapping = spec.params.get("mapping")
    if not isinstance(mapping, dict) or not mapping:
        # Parameters the provider refuses when it is built: that message is the one to fix first.
        return None
    keys = [str(k) for k in mapping]
    # A value of type any may be an object: its members are fields too (``Household.Size``).
    objects = [k for k, v in mapping.items() if not isinstance(v, dict) or v.get("type", "any") == "any"]
    if field in keys or any(field.startswith(f"{k}.") for k in objects):
        return None
    return _no_field(field, keys, f"the keys of its params.mapping: {', '.join(keys)}")
