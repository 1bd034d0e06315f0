"""Address standardization (offline): each profile's address in the US Postal Service's standard form.

The profile's street line is parsed by ``usaddress`` (a conditional random field trained on US addresses) and
standardized by ``usaddress-scourgify`` (USPS Publication 28: upper case, standard street-type, directional and
unit abbreviations, punctuation removed). City, state, ZIP code and country are standardized with vectorised
string operations and scourgify's tables: states as two-letter codes, ZIP codes as ``NNNNN`` or ``NNNNN-NNNN``
(a spreadsheet's lost leading zeros put back), the country as ``US``. It standardizes; it does not validate: a
well-formed address that does not exist stays.

Each distinct street line is parsed once. Lines of the most common shape (number, one-word street name, street
type, optional unit) take a vectorised fast path that gives exactly what scourgify gives for them (a test holds
the two equal); the rest go through the parser one by one (several thousand a second per core).

Status per profile, as the reference counts them: ``Changed`` (standardized and different from the input),
``Unchanged`` (already standard) and ``NotProcessed``: no address at all (absent from the values), no street line,
a street line the parser cannot break into parts, or an address outside the US (its fields are trimmed and upper
cased only). Every profile with any address field gets a row, so no input is lost.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from importlib.metadata import version
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import usaddress
from scourgify import address_constants as usps
from scourgify.exceptions import AddressNormalizationError
from scourgify.normalize import normalize_addr_str, normalize_city

from ci_pipeline.config.base import did_you_mean
from ci_pipeline.enrich.provider import (
    EnrichmentFailed,
    EnrichmentInputs,
    EnrichmentResult,
    arrow_strings,
    customer_values,
    empty_values,
    enrichment_name,
    params_path,
)
from ci_pipeline.errors import UserError

if TYPE_CHECKING:
    from ci_pipeline.enrich.provider import ProviderContext

#: The version of this module's own rules for a street line (the fast path, boxes): raise it when the standard
#: form of some line changes, so that cached results of the old rules are not used.
RULES = 3
#: The ``EnrichmentProvider`` of first-party enrichments: the project itself.
PROVIDER = "ci_pipeline"
ENRICHMENT_TYPE = "Address"
#: Address part -> the customer profile column that holds it by default (the unify stage's CDM names).
DEFAULT_COLUMNS = {
    "street": "Address1",
    "city": "City",
    "state": "State",
    "postal_code": "PostalCode",
    "country": "Country",
}
#: The Values keys, in order.
FIELDS = ("Street1", "City", "StateOrProvince", "ZipOrPostalCode", "CountryOrRegion", "Address")
#: What the United States is called in country fields, after upper-casing and removing dots.
US_NAMES = frozenset({"US", "USA", "U S", "U S A", "UNITED STATES", "UNITED STATES OF AMERICA", "AMERICA"})
US = "US"

CHANGED, UNCHANGED, NOT_PROCESSED = "Changed", "Unchanged", "NotProcessed"
REASON_NO_STREET = "no street line"
REASON_UNPARSEABLE = "street line not parseable"
REASON_NOT_US = "not a US address (trimmed and upper-cased only)"
_REASON_COUNTS = {
    REASON_NO_STREET: "not_processed_no_street",
    REASON_UNPARSEABLE: "not_processed_unparseable",
    REASON_NOT_US: "not_processed_not_us",
}

#: Input part -> the Values field it becomes: a profile is ``Unchanged`` when every one of them is equal.
_COMPARED = {
    "street": "Street1",
    "city": "City",
    "state": "StateOrProvince",
    "postal_code": "ZipOrPostalCode",
    "country": "CountryOrRegion",
}
_PARAMS = ("columns", "default_country", "type")
_ZIP = r"^(?P<five>\d{3,5})-?(?P<plus4>\d{4})?$"
# The fast path's shape: house number, one street-name word (or an ordinal: 1ST, 22ND), a street type and an
# optional unit. Anything else (directionals, two-word names, PO boxes, city in the line) goes to the parser.
_SIMPLE = (
    r"^(?P<number>[1-9]\d{0,5}) (?P<name>[A-Z]{2,}|\d{1,3}(?:ST|ND|RD|TH)) (?P<type>[A-Z]{2,})"
    r"(?: (?:(?P<unit_type>APT|APARTMENT|UNIT|STE|SUITE) (?P<unit>[A-Z0-9]{1,5})|# ?(?P<hash>[A-Z0-9]{1,5})))?$"
)
#: Directional words, spelled out and abbreviated (``WEST``, ``W``).
_DIRECTIONS = frozenset({*usps.DIRECTIONAL_REPLACEMENTS, *usps.DIRECTIONAL_REPLACEMENTS.values()})
#: An ordinary street name put in a directional word's place, so that the parser says what the rest of the line is.
_STAND_IN = "MAIN"
#: What the parser may find besides the number, the name and the street type for a line to be a directional-named
#: street: a post-directional (``NORTH ST NW``) and a unit.
_NAMED_LABELS = frozenset(
    {"AddressNumber", "StreetName", "StreetNamePostType", "StreetNamePostDirectional", "OccupancyType"}
    | {"OccupancyIdentifier", "SubaddressType", "SubaddressIdentifier"}
)
_BOX_LABELS = frozenset({"USPSBoxType", "USPSBoxID", "USPSBoxGroupType", "USPSBoxGroupID"})
#: Rural-route and highway-contract names -> their Publication 28 abbreviation.
_BOX_GROUPS = {
    "RR": "RR",
    "RURAL ROUTE": "RR",
    "RURAL RTE": "RR",
    "RTE": "RR",
    "ROUTE": "RR",
    "HC": "HC",
    "HIGHWAY CONTRACT": "HC",
    "STAR ROUTE": "HC",
}
#: The fast path's street types: the most common in the US, which the parser reads as a street type after any
#: one-word name. Others (HILL, GROVE, VILLAGE, CENTER, ...) are often part of the name, which only the parser
#: can tell from the context.
COMMON_STREET_TYPES = frozenset(
    {"STREET", "ST", "STR", "AVENUE", "AVE", "AV", "ROAD", "RD", "DRIVE", "DR", "LANE", "LN", "BOULEVARD", "BLVD"}
    | {"COURT", "CT", "PLACE", "PL", "TERRACE", "TER", "PARKWAY", "PKWY", "WAY", "CIRCLE", "CIR", "TRAIL", "TRL"}
)
# Words whose role the parser decides from context: never the fast path's street name.
_NOT_A_NAME = frozenset(
    {*usps.STREET_TYPE_ABBREVIATIONS, *usps.STREET_TYPE_ABBREVIATIONS.values(), *usps.DIRECTIONAL_REPLACEMENTS}
    | {*usps.DIRECTIONAL_REPLACEMENTS.values(), *usps.OCCUPANCY_TYPE_ABBREVIATIONS}
    | {*usps.OCCUPANCY_TYPE_ABBREVIATIONS.values(), "PO", "BOX", "RR", "HC", "ROUTE", "HIGHWAY", "HWY"}
)


class AddressProvider:
    """Standardized US addresses per customer profile (``EnrichmentType`` ``Address``).

    Values keys: ``Street1``, ``City``, ``StateOrProvince``, ``ZipOrPostalCode``, ``CountryOrRegion``, ``Address``
    (one line), ``Status`` (``Changed``, ``Unchanged``, ``NotProcessed``) and ``Reason`` (why not processed).

    Args:
        columns: address part (``street``, ``city``, ``state``, ``postal_code``, ``country``) -> profile column;
            defaults to the unify stage's names (``Address1``, ``City``, ``State``, ``PostalCode``, ``Country``).
        default_country: the country of an address whose country field is empty (default ``US``).
        enrichment: the configured enrichment's name, for messages.
        enrichment_type: the published ``EnrichmentType`` (default ``Address``).
        cache: where the parser's results are kept between runs, or None.
    """

    name = PROVIDER
    needs: frozenset[str] = frozenset()

    def __init__(
        self,
        columns: Mapping[str, str] | None = None,
        default_country: str = US,
        enrichment: str = "",
        enrichment_type: str = ENRICHMENT_TYPE,
        cache: StreetLineCache | None = None,
    ):
        self.enrichment_type = enrichment_type
        self.cache = cache
        self.columns = {**DEFAULT_COLUMNS, **(columns or {})}
        #: The columns named in params.columns: a profile may lack a default one, never one named on purpose.
        self.configured = dict(columns or {})
        self.default_country = default_country
        self.where = f"enrich.enrichments.{enrichment or 'address'}"

    def enrich(self, inputs: EnrichmentInputs) -> EnrichmentResult:
        """Standardize every profile's address; see the module docstring for the statuses."""
        profiles = inputs.profiles
        named_missing = {p: c for p, c in self.configured.items() if c not in profiles.columns}
        if named_missing:
            # A typo would otherwise publish every customer NotProcessed, over the last good output.
            part, column = next(iter(named_missing.items()))
            have = [str(c) for c in profiles.columns if c != "CustomerId"]
            raise EnrichmentFailed(
                f"{self.where}.params.columns.{part}: the customer profile has no column {column!r}"
                f"{did_you_mean(column, have)}; name one of its columns ({', '.join(have)}) or map the field in unify"
            )
        present = [c for c in self.columns.values() if c in profiles.columns]
        if not present:
            wanted = ", ".join(self.columns.values())
            raise EnrichmentFailed(
                f"{self.where}: the customer profile has none of the address columns {wanted}; map a street, city, "
                "state, postal_code or country field in unify, or name the profile's columns in params.columns"
            )
        raw = {part: _column(profiles, col) for part, col in self.columns.items()}
        out, status, reason, stats = standardize(raw, self.default_country, self.cache)
        empty = pd.isna(status)
        counts = {
            "profiles": len(profiles),
            "processed_changed": int((status == CHANGED).sum()),
            "processed_unchanged": int((status == UNCHANGED).sum()),
            "not_processed": int((status == NOT_PROCESSED).sum() + empty.sum()),
            "not_processed_empty": int(empty.sum()),
            **{key: int((reason == r).sum()) for r, key in _REASON_COUNTS.items()},
        }
        keep = ~empty
        warnings = tuple(self.cache.warnings) if self.cache else ()
        if not keep.any():
            return EnrichmentResult(values=empty_values(), counts=counts, report=stats, warnings=warnings)
        values = out.loc[keep].assign(Status=status[keep], Reason=reason[keep])
        frame, fields = customer_values(profiles["CustomerId"][keep], self.enrichment_type, values)
        return EnrichmentResult(values=frame, counts=counts, report=stats, warnings=warnings, fields=fields)


def build(params: Mapping, context: ProviderContext | None = None) -> AddressProvider:
    """The provider for an enrichment's ``params`` (``columns``, ``default_country``, ``type``); needs no connection.

    Bad parameters are an :class:`EnrichmentFailed` naming the key (``enrich.enrichments.<name>.params.<key>``).
    """
    where = params_path(params, _PARAMS, context, "address", "address")
    columns = params.get("columns") or {}
    if not isinstance(columns, Mapping) or not all(isinstance(v, str) and v for v in columns.values()):
        raise EnrichmentFailed(
            f"{where}.columns: give a mapping of address part to profile column, e.g. street: Address1"
        )
    wrong = sorted(set(columns) - set(DEFAULT_COLUMNS))
    if wrong:
        raise EnrichmentFailed(f"{where}.columns.{wrong[0]}: not an address part; use {', '.join(DEFAULT_COLUMNS)}")
    country = params.get("default_country", US)
    if not isinstance(country, str) or not country.strip():
        raise EnrichmentFailed(f"{where}.default_country: give a country name or code, e.g. US")
    provider = AddressProvider(
        columns=columns,
        default_country=country.strip(),
        enrichment=enrichment_name(context),
        enrichment_type=_type(params, where),
        cache=StreetLineCache.for_context(context),
    )
    provider.name = getattr(context, "project", None) or PROVIDER
    return provider


def standardize(
    raw: Mapping[str, pd.Series], default_country: str = US, cache: StreetLineCache | None = None
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, dict[str, int]]:
    """Standardized address fields, status and not-processed reason for aligned raw address parts.

    Args:
        raw: ``street``, ``city``, ``state``, ``postal_code``, ``country`` as string series with one index.
        default_country: the country of rows whose country is empty.
        cache: street lines parsed on earlier runs, or None.

    Returns:
        (frame with the :data:`FIELDS` columns, status per row, reason per row or None, the figures of
        :func:`parse_street_lines`); rows with no address part at all (or only blank ones) get status None.
    """
    street, city, state, postal, country = (_clean(raw[p]) for p in DEFAULT_COLUMNS)
    # Blank text is no address: a profile whose parts are all missing or blank is empty.
    empty = pd.concat([street, city, state, postal, country], axis=1).isna().all(axis=1).to_numpy()
    country = country.fillna(_clean(pd.Series([default_country], dtype="string")).iloc[0])
    is_us = _per_distinct(country, lambda c: c.str.replace(".", " ", regex=False).str.split().str.join(" "))
    is_us = is_us.isin(US_NAMES).to_numpy()
    country = country.mask(is_us, US)
    state = state.mask(is_us, _per_distinct(state, lambda s: s.map(usps.STATE_ABBREVIATIONS).fillna(s)))
    postal = postal.mask(is_us, _zip(postal))
    city = city.mask(is_us, _per_distinct(city, _cities))
    us_street = street.where(is_us)
    parsed, stats = _per_distinct(us_street, lambda lines: parse_street_lines(lines, cache), with_figures=True)
    parsed_ok = parsed.notna().to_numpy()
    out = pd.DataFrame(
        {
            "Street1": street.mask(parsed_ok, parsed),
            "City": city,
            "StateOrProvince": state,
            "ZipOrPostalCode": postal,
            "CountryOrRegion": country,
        }
    )
    out["Address"] = _one_line(out)

    reason = np.full(len(out), None, dtype=object)
    reason[us_street.notna().to_numpy() & ~parsed_ok] = REASON_UNPARSEABLE
    reason[street.isna().to_numpy()] = REASON_NO_STREET
    reason[~is_us] = REASON_NOT_US
    reason[empty] = None
    same = np.ones(len(out), dtype=bool)
    for part, field in _COMPARED.items():
        before, after = raw[part].astype("string"), out[field]
        same &= ((before == after).fillna(False) | (before.isna() & after.isna())).to_numpy()
    status = np.where(same, UNCHANGED, CHANGED).astype(object)
    status[pd.notna(reason)] = NOT_PROCESSED
    status[empty] = None
    return out, status, reason, stats


def parse_street_lines(lines: pd.Series, cache: StreetLineCache | None = None) -> tuple[pd.Series, dict[str, int]]:
    """Standard street lines (USPS Publication 28) for distinct street lines, NA where unparseable, and how many
    there were, took the fast path, came from the cache and went through the parser."""
    standard = fast_street_lines(lines)
    slow = (standard.isna() & lines.notna()).to_numpy()
    result = standard.to_numpy(dtype=object, na_value=None)
    todo = slow.copy()
    if cache is not None and slow.any():
        found, hit = cache.lookup(lines[slow])
        rows = np.flatnonzero(slow)[hit]
        result[rows], todo[rows] = found, False
    result[todo] = [_parse_one(line) for line in lines[todo]]
    if cache is not None:
        cache.save(lines[slow], result[slow])
    figures = {"distinct_street_lines": len(lines), "street_lines_fast_path": int(len(lines) - slow.sum())}
    figures |= {"street_lines_cached": int(slow.sum() - todo.sum()), "street_lines_parser": int(todo.sum())}
    return pd.Series(result, index=lines.index, dtype="string"), figures


def fast_street_lines(lines: pd.Series) -> pd.Series:
    """The standard form of lines of the common simple shape, vectorised; NA for every other line."""
    text = _clean(pd.Series(pc.replace_substring_regex(arrow_strings(lines), r"[.,]", " "), index=lines.index))
    found = pc.extract_regex(arrow_strings(text).fill_null(""), _SIMPLE)
    part = {
        name: pd.Series(pd.arrays.ArrowStringArray(found.field(name)), index=lines.index).replace("", pd.NA)
        for name in ("number", "name", "type", "unit_type", "unit", "hash")
    }
    matched = pd.Series(found.is_valid().to_numpy(zero_copy_only=False), index=lines.index)
    common = part["type"].where(part["type"].isin(COMMON_STREET_TYPES))
    street_type = _per_distinct(common, lambda t: t.map(usps.STREET_TYPE_ABBREVIATIONS))
    ok = matched & street_type.notna() & ~part["name"].isin(_NOT_A_NAME)
    unit_type = _per_distinct(part["unit_type"], lambda u: u.map(usps.OCCUPANCY_TYPE_ABBREVIATIONS).fillna(u))
    unit = (" " + unit_type + " " + part["unit"]).fillna(" # " + part["hash"]).fillna("")
    result = part["number"] + " " + part["name"] + " " + street_type + unit
    return result.where(ok.to_numpy()).astype("string")


class StreetLineCache:
    """The parser's results for street lines of earlier runs, in a Parquet file of the lake, so that a refresh
    parses only the lines it has not seen. It holds the lines of the last run only (its size follows the data) and
    is ignored when the parser's version changed. A cache that cannot be read or written is a warning, never a
    failure: the lines are parsed again.
    """

    def __init__(self, lake, relative: str):
        self.lake, self.relative = lake, relative
        self.warnings: list[str] = []

    @classmethod
    def for_context(cls, context: ProviderContext | None) -> StreetLineCache | None:
        """The cache in the run's cache folder (``context.lake`` and ``context.cache_dir``), or None without one."""
        lake, folder = getattr(context, "lake", None), getattr(context, "cache_dir", None)
        if lake is None or not folder:
            return None
        name = f"{getattr(context, 'enrichment', '') or 'address'}.street_lines.parquet"
        return cls(lake, posixpath.join(posixpath.relpath(folder, lake.path()), name))

    def lookup(self, lines: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """(standard lines of the cached ones, None where unparseable; which of ``lines`` were cached)."""
        known = self._load()
        position = known.index.get_indexer(lines.to_numpy(dtype=object)) if len(known) else np.full(len(lines), -1)
        hit = position >= 0
        found = known.to_numpy(dtype=object)[position[hit]] if len(known) else np.array([], dtype=object)
        return np.where(found == "", None, found), hit

    def save(self, lines: pd.Series, standard: np.ndarray) -> None:
        """Keep this run's parsed lines (unparseable ones as an empty string)."""
        frame = pd.DataFrame(
            {
                "line": lines.astype("string").to_numpy(),
                "street": pd.array(np.where(pd.isna(standard), "", standard), dtype="string"),
                "parser": _parser_version(),
            }
        ).astype({"parser": "string"})
        try:
            self.lake.write_parquet(self.relative, frame)
        except (UserError, OSError) as exc:
            self.warnings.append(f"address cache {self.relative} not written ({exc}); the next run parses again")

    def _load(self) -> pd.Series:
        try:
            if not self.lake.exists(self.relative):
                return pd.Series([], dtype=object)
            frame = self.lake.read_parquet(self.relative)
        except (UserError, OSError, pa.ArrowException) as exc:
            self.warnings.append(f"address cache {self.relative} not read ({exc}); its lines are parsed again")
            return pd.Series([], dtype=object)
        if not {"line", "street", "parser"} <= set(frame.columns) or (frame["parser"] != _parser_version()).any():
            return pd.Series([], dtype=object)
        return pd.Series(frame["street"].to_numpy(dtype=object), index=pd.Index(frame["line"].to_numpy(dtype=object)))


def _parser_version() -> str:
    """What the cached results depend on: the parser's, the standardizer's and these rules' versions."""
    return f"usaddress {version('usaddress')}, usaddress-scourgify {version('usaddress-scourgify')}, rules {RULES}"


def _parse_one(line: str) -> str | None:
    named = _direction_named(line)
    if named is not None:
        return named
    try:
        parsed = normalize_addr_str(line)
    except (AddressNormalizationError, ValueError, TypeError):
        return _box(line)
    if parsed["city"] or parsed["state"] or parsed["postal_code"]:
        # A whole address in the street column ("7 Wallaby Pl, Delmar, Cleveland SA 2119"): its street line alone
        # would drop the rest, and a place outside the US read as a US city and state would be wrong anyway.
        return None
    street = " ".join(p for p in (parsed["address_line_1"], parsed["address_line_2"]) if p)
    return street or None


def _direction_named(line: str) -> str | None:
    """The standard form of a street whose name is a directional word (``70 WEST TERRACE`` -> ``70 WEST TER``,
    ``70 WEST`` -> ``70 WEST``), or None when the line is not one.

    The parser reads a directional word before a street type as a pre-directional even when no other word names
    the street (``70 W TERRACE``: a street named Terrace). Publication 28 keeps such a word as the name, spelled as
    written. Whether the line is one is the parser's call too: with an ordinary name in the directional word's
    place (``70 MAIN TERRACE``), it must read that name as the whole street name and the next word as the street
    type, and nothing else but a post-directional or a unit (so ``70 WEST PARK AVENUE`` stays ``70 W PARK AVE``).
    """
    words = line.split(" ")
    direction = words[1].strip(".,").replace(".", "") if len(words) > 1 else ""
    street_type = words[2].strip(".,") if len(words) > 2 else ""
    if direction not in _DIRECTIONS or (street_type and street_type not in usps.STREET_TYPE_ABBREVIATIONS):
        return None
    words[1] = _STAND_IN
    stand_in = " ".join(words)
    try:
        tags, kind = usaddress.tag(stand_in)
        parsed = normalize_addr_str(stand_in)
    except (usaddress.RepeatedLabelError, AddressNormalizationError, ValueError, TypeError):
        return None
    reads_as_named = kind == "Street Address" and set(tags) <= _NAMED_LABELS and tags.get("StreetName") == _STAND_IN
    if not reads_as_named or tags.get("StreetNamePostType", "").strip(".,") != street_type:
        return None
    first = parsed["address_line_1"].split(" ")
    if len(first) < 2 or first[1] != _STAND_IN:
        return None
    first[1] = direction
    return " ".join(p for p in (" ".join(first), parsed["address_line_2"]) if p)


def _box(line: str) -> str | None:
    """A post-office or rural-route box in its USPS form (``PO BOX 123``, ``RR 2 BOX 5``, ``HC 68 BOX 23A``).

    scourgify standardizes street addresses only; usaddress tells the boxes apart, and Publication 28 gives their
    form. A box line with anything else in it (a unit, a military PSC) stays not processed.
    """
    try:
        tags, kind = usaddress.tag(line)
    except usaddress.RepeatedLabelError:
        return None
    if kind != "PO Box" or not tags.get("USPSBoxID") or set(tags) - _BOX_LABELS:
        return None
    box = "BOX " + tags["USPSBoxID"].replace("#", "").replace(" ", "")
    if "USPSBoxGroupType" not in tags:
        return f"PO {box}"
    group = _BOX_GROUPS.get(tags["USPSBoxGroupType"].replace(".", ""))
    return f"{group} {tags.get('USPSBoxGroupID', '')} {box}" if group and tags.get("USPSBoxGroupID") else None


def _cities(cities: pd.Series) -> pd.Series:
    """City names with USPS's spelled-out words (``N`` -> ``NORTH``, ``ST`` -> ``SAINT``)."""
    return pd.Series([normalize_city(c) for c in cities], index=cities.index, dtype="string")


def _column(profiles: pd.DataFrame, column: str) -> pd.Series:
    if column not in profiles.columns:
        return pd.Series(pd.NA, index=profiles.index, dtype="string")
    return profiles[column].astype("string")


def _clean(values: pd.Series) -> pd.Series:
    """Trimmed, single-spaced (any Unicode space), upper case; empty strings are missing. Arrow kernels."""
    text = pc.replace_substring_regex(arrow_strings(values), r"[\s\p{Z}]+", " ")
    text = pc.utf8_upper(pc.utf8_trim_whitespace(text))
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, text.type), text)
    return pd.Series(pd.arrays.ArrowStringArray(text), index=values.index)


def _zip(postal: pd.Series) -> pd.Series:
    """US ZIP codes as ``NNNNN`` or ``NNNNN-NNNN``; a code of another shape stays as it is."""
    found = pc.extract_regex(pc.replace_substring(arrow_strings(postal).fill_null(""), " ", ""), _ZIP)
    five = pd.Series(pd.arrays.ArrowStringArray(found.field(0)), index=postal.index).str.zfill(5)
    plus4 = pd.Series(pd.arrays.ArrowStringArray(found.field(1)), index=postal.index)
    code = five.where(plus4 == "", five + "-" + plus4)
    matched = found.is_valid().to_numpy(zero_copy_only=False)
    return code.where(matched, postal).astype("string")


def _per_distinct(values: pd.Series, fn, with_figures: bool = False):
    """``fn`` applied to the distinct non-missing values only (a series of them, on a fresh index; it returns a
    series of equal length, or a (series, figures) pair when ``with_figures``), spread back onto ``values``."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    distinct = pd.Series(uniques, dtype="string")
    done, figures = fn(distinct) if with_figures else (fn(distinct), None)
    spread = pd.Series(pd.array(done, dtype="string").take(codes, allow_fill=True), index=values.index)
    return (spread, figures) if with_figures else spread


def _one_line(out: pd.DataFrame) -> pd.Series:
    """``STREET, CITY, ST ZIP, COUNTRY`` from the parts that are there."""
    region = (out["StateOrProvince"].fillna("") + " " + out["ZipOrPostalCode"].fillna("")).str.strip()
    line = pd.Series("", index=out.index, dtype="string")
    for part in (out["Street1"], out["City"], region.mask(region == ""), out["CountryOrRegion"]):
        line = line + (part.astype("string") + ", ").fillna("")
    line = line.str.removesuffix(", ")
    return line.mask(line == "").astype("string")


def _type(params: Mapping, where: str) -> str:
    """The ``type`` parameter: the published EnrichmentType."""
    kind = params.get("type", ENRICHMENT_TYPE)
    if not isinstance(kind, str) or not kind.strip() or len(kind) > 100:
        raise EnrichmentFailed(f"{where}.type: give the EnrichmentType to publish, e.g. {ENRICHMENT_TYPE}")
    return kind.strip()
