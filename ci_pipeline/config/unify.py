"""Unification settings: map, deduplicate, match, merge (see docs/config/unify.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from ci_pipeline.config.base import COUNTRY_PATTERN, Name, StrictModel, did_you_mean
from ci_pipeline.config.orchestration import Retraining

#: Semantic types a customer-table column can be mapped to. ``custom`` keeps the column under its own name.
SemanticType = Literal[
    "full_name",
    "first_name",
    "middle_name",
    "last_name",
    "email",
    "phone",
    "street",
    "city",
    "state",
    "postal_code",
    "country",
    "birth_date",
    "birth_year",
    "birth_month",
    "birth_day",
    "gender",
    "company",
    "custom",
]

#: A column taken as a custom attribute of another name (``member_no: custom:loyalty_id``), so that columns of
#: several tables named differently are one attribute, compared and merged together.
CUSTOM_NAMED = re.compile(r"^custom:([A-Za-z_][A-Za-z0-9_]*)$")


def _column_kind(value: str) -> str:
    """A column's mapping: a semantic type or ``custom:<attribute>``."""
    types = get_args(SemanticType)
    named = CUSTOM_NAMED.match(value)
    if value in types or (named and named[1] not in types):
        return value
    if named:
        raise ValueError(
            f"{value!r} names the custom attribute like the semantic type {named[1]!r}: map the column to "
            f"{named[1]!r} itself, or give the custom attribute another name"
        )
    raise ValueError(
        f"{value!r} is no semantic type{did_you_mean(value, types)}: map the column to one of {', '.join(types)}; "
        "or to custom:<name> to take it as the attribute <name> of the columns of that name in other tables"
    )


#: A column's mapping as written: a semantic type, or ``custom:<attribute>`` (see :data:`CUSTOM_NAMED`).
ColumnKind = Annotated[str, AfterValidator(_column_kind)]

#: Semantic types of a birth date written in three columns (or two: a year and month, a date known in part);
#: unification joins them into ``birth_date``. A year of birth alone (no month or day) is the attribute
#: ``birth_year``.
BIRTH_DATE_PARTS = ("birth_year", "birth_month", "birth_day")

#: Normalizations a condition can apply (``alias:<name>`` names an alias map of ``unify.normalize.aliases``).
NORMALIZATIONS = (
    "whitespace",
    "symbols",
    "case",
    "ascii",
    "numerals",
    "phone",
    "name",
    "address",
    "organization",
    "email",
    "personal_email",
    "personal_phone",
    "date",
    "postal",
    "name_plain",
    "name_alt",
    "titles",
    "identifier",
)

#: Named precisions and the similarity each requires.
PRECISIONS = {"exact": 1.0, "high": 0.8, "medium": 0.6, "low": 0.3}


def _check_normalization(value: str) -> str:
    if value in NORMALIZATIONS or (value.startswith("alias:") and len(value) > len("alias:")):
        return value
    raise ValueError(f"unknown normalization {value!r}; use one of {', '.join(NORMALIZATIONS)} or 'alias:<name>'")


Normalization = Annotated[str, AfterValidator(_check_normalization)]


def _check_precision(value: str | float) -> str | float:
    if isinstance(value, str):
        if value not in PRECISIONS:
            raise ValueError(f"precision {value!r} is not one of exact, high, medium, low or a number in (0, 1]")
        return value
    if not 0 < float(value) <= 1:
        raise ValueError(f"precision {value} is out of range; a custom precision is a similarity in (0, 1]")
    return float(value)


Precision = Annotated[str | float, AfterValidator(_check_precision)]


class Condition(StrictModel):
    """One comparison: the same attribute of two records, normalized, compared at a precision."""

    #: A semantic type (``email``, ``first_name``, ...) or the name of a ``custom`` column.
    field: str
    #: ``exact`` (default), ``high`` (0.8), ``medium`` (0.6), ``low`` (0.3) or a custom similarity in (0, 1].
    precision: Precision = "exact"
    #: Normalizations applied before comparing; default: the usual ones for the field's semantic type.
    normalize: list[Normalization] | None = None
    #: When true, the condition holds if either value is missing: it only refuses conflicting values (a birth date
    #: that differs), which is how a rule guards against look-alikes without requiring the field.
    allow_missing: bool = False

    @property
    def threshold(self) -> float:
        return PRECISIONS[self.precision] if isinstance(self.precision, str) else float(self.precision)

    @property
    def is_exact(self) -> bool:
        return self.threshold >= 1.0


class Rule(StrictModel):
    """Records match when every condition holds (conditions are AND-ed; rules are OR-ed, tried in order)."""

    name: Name
    conditions: list[Condition] = Field(min_length=1)
    #: Fields whose normalized values must be equal for two records to be compared at all. Default: the fields
    #: of the exact conditions. A rule without an exact condition must name its blocking fields.
    blocking: list[str] = []

    def blocking_fields(self) -> list[Condition]:
        """The conditions that form the blocking key (exact ones, or the configured blocking fields)."""
        if self.blocking:
            by_field = {c.field: c for c in self.conditions}
            return [by_field.get(f, Condition(field=f)) for f in self.blocking]
        return [c for c in self.conditions if c.is_exact and not c.allow_missing]


class Winner(StrictModel):
    """How the surviving record of a duplicate group is chosen; ties go to the highest primary key."""

    policy: Literal["most_filled", "most_recent", "least_recent"] = "most_filled"
    #: The date/time column for ``most_recent`` / ``least_recent``.
    column: str | None = None

    @model_validator(mode="after")
    def _recent_needs_column(self):
        if self.policy != "most_filled" and not self.column:
            raise ValueError(f"winner policy {self.policy!r} needs 'column' (a date or time column)")
        return self


class Dedup(StrictModel):
    """Deduplication inside one table."""

    rules: list[Rule] = []
    winner: Winner = Winner()


class UnifyTable(StrictModel):
    """One customer table taking part in unification, in priority order."""

    source: Name
    table: Name
    #: The map: column -> semantic type, or ``custom:<attribute>``. Only mapped columns take part in matching and
    #: merging.
    columns: dict[str, ColumnKind] = Field(min_length=1)
    #: Date/time column telling how recent a record is (for ``most_recent`` / ``least_recent`` merge policies).
    recency_column: str | None = None
    dedup: Dedup = Dedup()
    #: Each record is one customer by construction (a table of distinct customer references, as the quick start
    #: generates from transactions): that no rule can compare its records is then expected, not a mistake, so the
    #: run does not warn about it (the statistics still count them).
    one_customer_per_record: bool = False

    @property
    def ref(self) -> str:
        return f"{self.source}.{self.table}"

    def kinds(self) -> dict[str, str]:
        """Column -> semantic type (``custom`` for ``custom:<attribute>``)."""
        return {column: "custom" if CUSTOM_NAMED.match(kind) else kind for column, kind in self.columns.items()}

    def attribute_of(self, column: str) -> str:
        """The attribute a mapped column is: its semantic type; for ``custom``, the column's own name, for
        ``custom:<attribute>`` that name."""
        kind = self.columns[column]
        named = CUSTOM_NAMED.match(kind)
        return named[1] if named else column if kind == "custom" else kind

    def attributes(self) -> dict[str, str]:
        """Attribute name -> column (see :meth:`attribute_of`). A birth date written in three columns is the
        attribute ``birth_date`` of ``year/month/day`` (see :meth:`birth_date_parts`)."""
        parts = self.birth_date_parts()
        attrs = {
            self.attribute_of(column): column
            for column, kind in self.kinds().items()
            if not (parts and kind in BIRTH_DATE_PARTS)
        }
        if parts:
            attrs["birth_date"] = "/".join(parts.values())
        return attrs

    def birth_date_parts(self) -> dict[str, str]:
        """Part (``birth_year``, ``birth_month``, ``birth_day``) -> column, in that order, for a birth date written
        in three parts or as a year and month (a date known in part); empty otherwise (a year of birth alone is an
        attribute of its own)."""
        by_kind = {kind: column for column, kind in self.kinds().items()}
        if not all(part in by_kind for part in BIRTH_DATE_PARTS[:2]):
            return {}
        return {part: by_kind[part] for part in BIRTH_DATE_PARTS if part in by_kind}

    @model_validator(mode="after")
    def _one_column_per_type(self):
        seen: dict[str, str] = {}
        for column, kind in self.kinds().items():
            if kind != "custom" and kind in seen:
                raise ValueError(
                    f"columns {seen[kind]!r} and {column!r} are both mapped to {kind!r}; map one of them to "
                    "'custom' (each semantic type takes one column per table)"
                )
            seen[kind] = column
        named: dict[str, str] = {}
        for column in self.columns:
            attribute = self.attribute_of(column)
            if attribute in named:
                raise ValueError(
                    f"columns {named[attribute]!r} and {column!r} are both the custom attribute {attribute!r}; "
                    "give one of them another name (custom:<name>: each attribute takes one column per table)"
                )
            named[attribute] = column
        parts = [p for p in BIRTH_DATE_PARTS if p in seen]
        if parts and "birth_date" in seen:
            raise ValueError(
                f"column {seen['birth_date']!r} is mapped to 'birth_date' and {', '.join(map(repr, parts))} to its "
                "parts: map the birth date once, either as one column or as birth_year, birth_month and birth_day"
            )
        if (parts and parts[0] != "birth_year") or parts == ["birth_year", "birth_day"]:
            missing = [p for p in BIRTH_DATE_PARTS if p not in seen]
            raise ValueError(
                f"{', '.join(f'{seen[p]!r} -> {p}' for p in parts)} without {' and '.join(missing)}: a birth date "
                "in parts needs birth_year, birth_month and birth_day (a year of birth alone may be mapped as "
                "birth_year, a year and month as birth_year and birth_month)"
            )
        return self


def _texts(ref):
    """A record reference's parts as written: a key YAML read as a number is refused, since the text it stood for
    is lost (``0012`` reads as 10, ``1e3`` as text, ``1.50`` as 1.5)."""
    if isinstance(ref, list) and any(isinstance(part, int | float) and not isinstance(part, bool) for part in ref):
        shown = ", ".join(repr(str(p)) if isinstance(p, int | float) else repr(p) for p in ref)
        raise ValueError(
            f"write each part of the record in quotes when it reads as a number: [{shown}] (YAML reads an unquoted "
            "number as a number, and 0012 as 10)"
        )
    return ref


#: A record reference in an override pair: [source, table, key].
RecordRef = Annotated[list[str], BeforeValidator(_texts), Field(min_length=3, max_length=3)]


class Pair(StrictModel):
    """Two records named by ``[source, table, key]``."""

    left: RecordRef
    right: RecordRef


#: Fields that identify a person beyond the name: a customer whose records hold none of them is "thin".
IDENTIFYING_FIELDS = ["email", "phone", "street", "postal_code", "birth_date", "birth_year", "company"]


class AttachRule(StrictModel):
    """A customer that carries nothing but a name joins the only other customer of that name.

    See :mod:`ci_pipeline.unify.attach` and docs/config/unify.md ("Attaching name-only records").
    """

    name: Name
    #: The tables (``source.table``) whose records may be attached: a customer is thin only when all its records
    #: come from these tables and none has a usable value of the ``without`` fields.
    tables: list[str] = Field(min_length=1)
    #: Fields whose normalized values (default normalizations) must equal the namesake's.
    same: list[str] = Field(["first_name", "last_name"], min_length=1)
    #: Fields a thin record has no usable value of (missing, a bypass value, or too frequent to identify anyone).
    without: list[str] = IDENTIFYING_FIELDS
    #: The most customers expected to share the name by chance (customers x the share holding each value).
    max_expected_namesakes: float = Field(1.0, gt=0)
    #: Fields (compared exactly after their normalizations) whose values a thin customer and its sole namesake
    #: must not hold differently: when both hold values of one and share none, the thin customer stays apart.
    must_not_differ: list[Condition] = []
    #: Tables (``source.table``): when given, only customers holding a record of one of them count as namesakes,
    #: and the expected namesakes are counted among those customers only.
    among: list[str] = []
    #: Join thin customers of one name to each other instead, when no other customer bears the name (the
    #: expectation then counts the thin customers).
    each_other: bool = False
    #: Keep a thin customer with the namesake it was attached to last run when the name became ambiguous or too
    #: common since (a namesake who arrives later does not move it); a conflict still refuses.
    keep_last_run: bool = True


class MatchTraining(Retraining):
    """When the probabilistic match model is retrained (job ``train_match_model``); the runs in between score with
    the stored model, so CustomerIds do not drift with retraining noise."""

    #: Monthly by default: the 1st at 02:00 in ``orchestration.timezone``.
    cron: list[str] | None = Field(default_factory=lambda: ["0 2 1 * *"], min_length=1, max_length=24)


def _check_method(value: Any) -> Any:
    if value in ("rules", "probabilistic"):
        return value
    hybrid = (
        "; the hybrid of the benchmarks is method probabilistic with match.rules beside it (the rules accept their "
        "pairs, the model scores the others)"
        if str(value).strip().lower() == "hybrid"
        else ""
    )
    raise ValueError(
        f"unknown match method {value!r}{did_you_mean(str(value), ['rules', 'probabilistic'])}; use rules or "
        f"probabilistic{hybrid}"
    )


#: The probabilistic model's settings (``ci_pipeline.unify.probabilistic.Settings``, checked equal by a test): a
#: user writing one of them beside ``method`` is told where it goes.
MODEL_SETTINGS = (
    "comparisons",
    "blocking",
    "training_blocking",
    "link_type",
    "threshold",
    "strata",
    "max_pairs_per_rule",
    "u_sample_pairs",
    "em_sample_pairs",
    "max_iterations",
    "tolerance",
    "seed",
)


class MatchConfig(StrictModel):
    """Matching across tables: each later table matches against all tables above it."""

    @model_validator(mode="before")
    @classmethod
    def _model_settings_under_their_block(cls, data):
        misplaced = [k for k in data if k in MODEL_SETTINGS] if isinstance(data, dict) else []
        if misplaced:
            raise ValueError(
                f"{', '.join(misplaced)}: a setting of the probabilistic model; write it under unify.match."
                f"probabilistic (probabilistic: {{{misplaced[0]}: ...}}), beside method: probabilistic"
            )
        return data

    #: ``rules``: the configured rules decide; ``probabilistic``: a trained Fellegi-Sunter model scores the pairs
    #: within and across tables (rules, when given, still accept their pairs outright). See
    #: docs/matching-probabilistic.md.
    method: Annotated[Literal["rules", "probabilistic"], BeforeValidator(_check_method)] = "rules"
    #: The probabilistic model's settings (comparisons, blocking, training_blocking, threshold, ...); read by
    #: :class:`ci_pipeline.unify.probabilistic.Settings`. When absent, they are chosen from the semantic types of
    #: the mapped columns when the model is trained, and printed as YAML to paste here.
    probabilistic: dict[str, Any] | None = None
    #: When the probabilistic model is retrained (monthly by default); with ``method: rules`` there is no model.
    training: MatchTraining = MatchTraining()
    rules: list[Rule] = []
    #: Rules applied after clustering, to customers that carry nothing but a name (in order).
    attach: list[AttachRule] = []
    never_match: list[Pair] = []
    always_match: list[Pair] = []
    #: CSV files (header ``left_source,left_table,left_key,right_source,right_table,right_key``) with more pairs.
    never_match_file: str | None = None
    always_match_file: str | None = None

    @field_validator("probabilistic", "training")
    @classmethod
    def _settings_need_the_method(cls, value, info: ValidationInfo):
        # Runs only for a key written in the file, so one holding the default values is refused too: under the
        # rules method it would say a model is retrained when none is. (A method that failed its own check is
        # absent here and is reported alone.)
        if info.data.get("method") == "rules":
            raise ValueError(
                f"is given but the method is 'rules', which has no model; set unify.match.method: probabilistic or "
                f"remove unify.match.{info.field_name}"
            )
        return value

    @model_serializer(mode="wrap")
    def _no_model_settings_under_rules(self, handler):
        # The rules method has no model, so its dump carries no model settings: a dumped and re-read configuration
        # loads again, where the defaults written out would be refused as given.
        data = handler(self)
        if self.method == "rules":
            data.pop("probabilistic", None)
            data.pop("training", None)
        return data


class GuardConfig(StrictModel):
    """The over-merge guard (see docs/config/unify.md for the exact rule)."""

    #: A customer may hold at most this many records; larger clusters are rebuilt from their strongest links.
    max_cluster_size: int = Field(50, ge=2)
    #: A normalized value of a ``frequency_fields`` field held by more records than this (a household e-mail, a
    #: store phone) is ignored for blocking and matching.
    max_value_frequency: int = Field(25, ge=2)
    #: Identifying fields the value-frequency cap applies to (names, cities and dates are shared by nature).
    frequency_fields: list[str] = ["email", "phone"]
    #: A blocking key shared by more records than this forms no candidate pairs (reported in the statistics):
    #: it keeps a too-coarse rule from comparing millions of pairs.
    max_block_size: int = Field(1000, ge=2)
    #: Fields of which one customer may hold only one known normalized value (``birth_date``: a father and son of
    #: the same name, address and home phone are two people). A link that would join two parts whose known values
    #: differ is skipped, even when the two linked records themselves lack the field. An entry is a field name
    #: (default normalizations) or ``{field, normalize}`` (``personal_email``: one person, one personal address).
    conflict_fields: list[str | Condition] = []

    def conflict_conditions(self) -> list[Condition]:
        """The conflict fields as exact conditions (a bare name gets the field's default normalizations)."""
        return [Condition(field=c) if isinstance(c, str) else c for c in self.conflict_fields]


DEFAULT_BYPASS = [
    "n/a",
    "na",
    "none",
    "null",
    "nil",
    "unknown",
    "not available",
    "not provided",
    "test",
    "test@test.com",
    "noemail@noemail.com",
    "none@none.com",
    "no@email.com",
    "-",
    "--",
    ".",
    "?",
    "x",
    "xxx",
    "0",
]


def _placeholders(values):
    """Bypass values as written: YAML reads an unquoted ``null``, ``~`` or empty entry as no value, and ``0`` or
    ``yes`` as a number or a truth value, which the user meant as text."""
    if isinstance(values, list):
        if any(v is None for v in values):
            raise ValueError(
                "an entry is no value: write the placeholder in quotes, e.g. 'null' (YAML reads null as none)"
            )
        return [str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, int | float) else v for v in values]
    return values


class NormalizeConfig(StrictModel):
    """Settings for the matching normalizations."""

    #: Values that never make records match (compared case- and whitespace-insensitively). All-zero phone
    #: numbers are always bypassed.
    bypass_values: Annotated[list[str], BeforeValidator(_placeholders)] = DEFAULT_BYPASS
    #: Region for phone numbers written without a country code (ISO 3166 alpha-2).
    default_region: str = Field("US", pattern=COUNTRY_PATTERN)
    #: Alias maps: name -> CSV file with header ``alias,canonical``; use as normalization ``alias:<name>``.
    aliases: dict[Name, str] = {}


class FieldSpec(StrictModel):
    """One unified profile field."""

    #: Where the values come from: an attribute (semantic type or custom column name) or explicit
    #: ``source.table.column`` references, combined into one field. Default: the attribute of the field's name.
    sources: list[str] = []
    policy: Literal["priority", "most_recent", "least_recent"] | None = None
    #: Table order for ``priority`` (``source.table``); default: the order of ``unify.tables``.
    priority: list[str] = []


class MergeConfig(StrictModel):
    """How the records of one customer become one profile."""

    default_policy: Literal["priority", "most_recent", "least_recent"] = "priority"
    #: Extra or overridden fields: unified name -> spec (override the default fields or combine columns).
    fields: dict[str, FieldSpec] = {}
    #: Fields taken together from one record, so that (for example) street and city never mix.
    groups: dict[Name, list[str]] = {"address": ["Address1", "City", "State", "PostalCode", "Country"]}
    exclude: list[str] = []
    #: Unified name -> output column name.
    rename: dict[str, str] = {}


class UnifyConfig(StrictModel):
    """How customer records from several tables become one profile per person."""

    #: Customer tables in priority order: the first is the primary table.
    tables: list[UnifyTable] = Field(min_length=1)
    match: MatchConfig = MatchConfig()
    merge: MergeConfig = MergeConfig()
    guard: GuardConfig = GuardConfig()
    normalize: NormalizeConfig = NormalizeConfig()

    def table(self, source: str, table: str) -> UnifyTable:
        for t in self.tables:
            if t.source == source and t.table == table:
                return t
        raise KeyError(f"{source}.{table}")

    def warnings(self) -> list[str]:
        """Legal but risky settings, reported when unification runs."""
        found = []
        for where, rules in self._all_rules():
            for i, rule in enumerate(rules):
                if not any(c.is_exact and not c.allow_missing for c in rule.conditions):
                    found.append(
                        f"{where}[{i}] ({rule.name}): no exact condition; records are compared only within "
                        f"blocks of equal {', '.join(rule.blocking)}, so matches outside those blocks are not found"
                    )
        return found

    def _all_rules(self):
        for ti, t in enumerate(self.tables):
            yield f"unify.tables[{ti}].dedup.rules", t.dedup.rules
        yield "unify.match.rules", self.match.rules


def derived_attributes(attrs: dict[str, str]) -> dict[str, str]:
    """Attributes a table offers for matching, including names derived from each other."""
    out = dict(attrs)
    if "full_name" not in out and ("first_name" in out or "last_name" in out):
        out["full_name"] = "(first_name last_name)"
    if "full_name" in attrs:
        out.setdefault("first_name", f"(first word of {attrs['full_name']})")
        out.setdefault("last_name", f"(last word of {attrs['full_name']})")
    return out


#: Semantic type -> Common Data Model CustomerProfile attribute name.
CDM_NAMES = {
    "full_name": "FullName",
    "first_name": "FirstName",
    "middle_name": "MiddleName",
    "last_name": "LastName",
    "email": "Email",
    "phone": "Phone",
    "street": "Address1",
    "city": "City",
    "state": "State",
    "postal_code": "PostalCode",
    "country": "Country",
    "birth_date": "BirthDate",
    "gender": "Gender",
    "company": "CompanyName",
}


#: Suffix of the profile column beside a date attribute holding what is no whole date (``BirthDateText``: ``1843``,
#: ``1843-05``), the date attribute itself being typed as a date.
DATE_TEXT_SUFFIX = "Text"


#: Profile columns the pipeline itself fills: a mapped column that would be named like one (a source's own
#: ``customer_id`` or ``CustomerId`` mapped as ``custom``) is published as ``Source<Name>`` instead.
RESERVED_PROFILE_COLUMNS = frozenset({"CustomerId", "PreviousCustomerId"})


def profile_name(attr: str) -> str:
    """The profile column of an attribute: its CDM name, or the PascalCase of a custom column's name."""
    name = CDM_NAMES.get(attr) or pascal(attr)
    return f"Source{name}" if name in RESERVED_PROFILE_COLUMNS else name


def pascal(name: str) -> str:
    """``loyalty_tier`` -> ``LoyaltyTier``."""
    return "".join(w[:1].upper() + w[1:] for w in re.split(r"[^0-9A-Za-z]+", name) if w)


@dataclass(frozen=True)
class ProfileField:
    """One unified field: its output name, record-frame columns (first non-empty wins) and policy."""

    name: str
    columns: tuple[str, ...]
    policy: str
    priority: tuple[str, ...]


def unified_fields(config: UnifyConfig, record_columns: list[str]) -> list[ProfileField]:
    """The profile's fields in output order: defaults from the map, then configured ones; minus excluded.

    Derived from the configuration alone, so that segment rules naming ``profile.<field>`` are checked at load.
    """
    attrs: list[str] = []
    for t in config.tables:
        for attr in t.attributes():
            if attr not in attrs:
                attrs.append(attr)
    for derived in ("full_name", "first_name", "last_name"):
        if derived in record_columns and derived not in attrs:
            attrs.append(derived)
    order = {a: i for i, a in enumerate(CDM_NAMES)}
    first_seen = {a: i for i, a in enumerate(attrs)}
    attrs.sort(key=lambda a: (order.get(a, len(order)), first_seen[a]))
    fields: dict[str, ProfileField] = {}
    for attr in attrs:
        name = profile_name(attr)
        fields[name] = ProfileField(name, (attr,), config.merge.default_policy, ())
    for name, spec in config.merge.fields.items():
        base = fields.get(name)
        columns = tuple(spec.sources) if spec.sources else (base.columns if base else (name,))
        fields[name] = ProfileField(name, columns, spec.policy or config.merge.default_policy, tuple(spec.priority))
    return [f for n, f in fields.items() if n not in config.merge.exclude]
