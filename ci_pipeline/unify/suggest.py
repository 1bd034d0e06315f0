"""Suggest semantic types for a table's columns from their names and values, for the user to confirm.

Names are read as words (``race_ethnicity`` holds no ``city``); a name match is confirmed or contradicted by the
share of sampled values that look like the type. Each semantic type goes to one column per table (what
``unify.tables[].columns`` accepts): when several columns qualify, the best keeps it and the others are proposed as
``custom`` (a second name column is left unmapped: compared too, it would count the name twice). National
identifiers (``ssn``, ``national_id``, ...) are proposed as ``custom`` too: kept on the profile under their own name,
and usable in match rules (``{field: ssn}``). A house number written apart from the street is left unmapped: it is
part of the address, and compared on its own as ``custom`` it would weigh as an identifier of the person.
"""

from __future__ import annotations

import re
import unicodedata

import pandas as pd

from ci_pipeline.config.unify import BIRTH_DATE_PARTS
from ci_pipeline.unify.dates import read_birth_dates
from ci_pipeline.unify.records import PARTIAL_DATE, whole_numbers


def _words(pattern: str) -> str:
    """``pattern`` as whole words of a normalized name: ``city`` matches ``billing_city``, not ``ethnicity``."""
    return rf"(?<![a-z])(?:{pattern})(?![a-z])"


IDENTIFIER_OF_PERSON = "an identifier of the person"
#: What a column's values say when they are social security numbers (the reason of a ``custom`` suggestion).
LOOK_LIKE_SSN = "look like social security numbers"

#: Columns kept as ``custom`` (no semantic type fits, but they help to tell people apart), with what they are.
CUSTOM_PATTERNS: list[tuple[str, str]] = [
    (
        IDENTIFIER_OF_PERSON,
        _words(
            r"ssn|soc_?sec(_?id)?|social_?security(_?(number|no|id))?|national_?(id|insurance)(_?number)?|nino|nin|"
            r"sin|tax_?id|tin|passport(_?(number|no))?|driver_?s?_?licen[cs]e(_?(number|no))?"
        ),
    ),
    ("a year of birth (not a date)", _words(r"birth_?year|year_?of_?birth|yob")),
    # Voter and census files keep it apart from the name (``name_sufx_cd``); lost, a father and his son of one name
    # at one address would be one person.
    (
        "a name suffix (Jr, Sr, III): it tells a father from his son of the same name",
        _words(r"(name_?)?(suffix|sufx|sfx)(_?(cd|code))?"),
    ),
]

#: Column names of a place of birth (``birth_place``, ``birth_state``, ``country_of_birth``).
OF_BIRTH = _words(r"birth(_?(place|state|country|town|city))?|born")

#: Column names of a house number written apart from the street (febrl's ``street_number``, ``house_no``, ``hnum``).
HOUSE_NUMBER_NAME = _words(r"(street|house|building|hse)_?(number|no|num|nr|nbr)|h_?(num|nbr|nr)")
#: Why a house number is left unmapped: mapped as ``custom`` it would be compared as an identifier of the person.
HOUSE_NUMBER = (
    "a house number: part of the address, not an identifier of the person; left out of matching (mapped as "
    "'custom' it is compared on its own, and a differing number weighs against a match far more than a differing "
    "street does). To compare it, write it into the street column ('12 stanley street') before ingestion"
)

#: What a column beside an identity document's number holds of the document (``passport_country``,
#: ``drivers_license_state``, ``tax_id_type``): shared by most people, so it tells no one apart.
DOCUMENT_DETAIL = _words(
    r"country|state|province|type|kind|class|issuer|issued(_?(by|on|at))?|authority|expiry|expiration|expires|date"
)

#: The common words for a customer's name, birth date and address in German, French, Spanish, Italian and Dutch
#: exports (normalized: accents dropped, ``ß`` as ``ss``), as whole words of a column name. Bare ``nom``, ``nome``
#: and ``nombre`` are the first name in Spanish and Italian usage beside ``apellido``/``cognome``, and the family
#: name in French beside ``prenom``: only the unambiguous words are here.
FIRST = r"vorname|rufname|prenom|nombre_?de_?pila|voornaam"
LAST = r"nachname|familienname|nom_?de_?famille|nom|apellidos?|cognome|achternaam"
BORN = (
    r"geburtsdatum|geburtstag|date_?(de_?)?naissance|naissance|fecha_?(de_?)?nacimiento|nacimiento|data_?di_?nascita|"
    r"geboortedatum"
)
CITY = r"ort|wohnort|stadt|ville|commune|ciudad|localidad|poblacion|citta|comune|plaats|woonplaats"
STREET = r"strasse|adresse|rue|calle|direccion|domicilio|indirizzo|straat|adres"

#: (semantic type, column-name pattern). The first pattern that matches a normalized column name wins.
NAME_PATTERNS: list[tuple[str, str]] = [
    ("email", r"e_?mail|mail_?address|courriel|" + _words(r"correo(_electronico)?")),
    ("phone", r"phone|mobile|" + _words(r"cell|tel|telephone|fax|telefon|telefono|handy|portable|movil|cellulare")),
    # A column named for a first and a last name together (``first_and_surname``) holds a whole name.
    ("full_name", r"(first|given|fore)_?(name_?)?(and_?)?(sur|last|family)_?name"),
    # "given" and "family" only as the whole name: family_size or given_at are no names.
    # ``name_first`` too: schemas that group a name's parts under one prefix (``primary_name_first``).
    # "first", "last", "given" and "family" only as the whole name (Synthea's patients: FIRST, LAST): first_seen or
    # last_login are no names.
    ("first_name", r"first_?name|name_?first|given_?name|forename|^given$|^first$|" + _words(r"fname|gname|" + FIRST)),
    ("last_name", r"last_?name|name_?last|surname|family_?name|^family$|^last$|" + _words(r"lname|" + LAST)),
    ("middle_name", r"middle_?(name|initial)|" + _words(r"mi|middle|midl(_?name)?|mid_?name")),
    ("full_name", r"full_?name|name_?full|customer_?name|contact_?name|requester_?name|display_?name|^name$"),
    ("postal_code", r"postal|post_?code|" + _words(r"zip(_?code)?|postcode|plz|postleitzahl|cap")),
    # The parts of an address before the street: a schema prefixes them all alike (``address1_city``,
    # ``address1_line1``), and the country before the state (``Country/Region`` beside ``State/Region``).
    ("country", r"country|" + _words(r"pays|pais|paese")),
    ("state", _words(r"state|province|region|stateorprovince|state_?or_?province|bundesland|provincia|provincie")),
    # A birth place is a town like an address's: what the place comparisons and blocking rules of a city do (the
    # person's own town, where a table has both, is taken first: see ``_one_column_per_type``).
    ("city", _words(r"city|town|locality|suburb|municipality|birth_?place|place_?of_?birth|" + CITY)),
    (
        "street",
        r"street|addr(ess)?_?(line)?_?1|^((billing|shipping|mailing|home|postal)_)?addr(ess)?$|" + _words(STREET),
    ),
    ("birth_date", r"birth|" + _words(r"dob|bdate|bday|b_?day|born|" + BORN)),
    ("gender", r"gender|" + _words(r"sex|geschlecht|sexe|sexo|genre|geslacht|sesso")),
    ("company", r"company|organi[sz]ation|employer|business_?name|account_?name|" + _words(r"name_?org|org_?name")),
]

#: English month names and their three-letter forms, in any case.
_MONTH = (
    r"(?i:jan(uary)?|feb(ruary)?|mar(ch)?|apr(il)?|may|june?|july?|aug(ust)?|sep(t(ember)?)?|oct(ober)?|"
    r"nov(ember)?|dec(ember)?)"
)
#: Dates and timestamps as systems write them: ISO (2023-02-21, 2026-06-06T19:09:52), US (03/16/2021 21:21:51),
#: day-first (16.03.2021) and with the month's name (3 April 1990). Digit runs like these also pass the phone test,
#: so dates are recognised first.
DATE_VALUE = (
    r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})?)?"
    r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}([ T]\d{1,2}:\d{2}(:\d{2})?\s*([AaPp][Mm])?)?"
    # 3 April 1990, 3-Apr-1990, April 3, 1990
    rf"|\d{{1,2}}[ -]{_MONTH}\.?[ ,-]*\d{{4}}|{_MONTH}\.? \d{{1,2}}(st|nd|rd|th)?,? \d{{4}}"
)
#: A date without separators (20230115): only trusted when the column's name says it is a date.
COMPACT_DATE_VALUE = r"(1[89]|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])"
#: Column names of dates and times (``event_date``, ``created_at``, ``update_ts``).
DATE_NAME = _words(r"date|time|timestamp|datetime|ts|dt|at|on|day|year|month")

#: Column names of keys and references: their values are never a person's attribute, whatever they look like.
IDENTIFIER_NAME = (
    r"(^|_)(id|key|uuid|guid|number|no|num|ref|reference)$"
    # Written as one word by some systems (Dynamics 365's contactid, parentcustomerid, ownerid).
    r"|(^|_)(contact|customer|parentcustomer|account|owner|lead|user|member|person|client|record|external)id$"
    # German compounds (Kundennummer, KundenNr), French and Spanish words for a number or an identifier.
    r"|(nummer|nr)$|(^|_)(numero|identifiant|identificador)$"
)

#: Column names of a labelled file's truth, which records are one person (``label_true``, Splink's ``cluster``,
#: ePBRN's ``match_id``, ``entity_id``).
TRUTH_LABEL_NAME = (
    r"^(labels?|truth|ground_?truth|gold(_?standard)?|clusters?)$"
    r"|^(true|truth|gold)_?(id|label|match(_?id)?|entity(_?id)?|person(_?id)?|cluster(_?id)?)$"
    r"|^(label|cluster|match|entity|person)_?(true|truth)$"
    r"|^(labels?|clusters?|match(es)?|ent|entity|group|dup(licate)?)_?(id|no|key|label)$"
)
#: Why a truth label is left unmapped: compared, it would hand the matching its own answer.
TRUTH_LABEL = (
    "a label of who is who (a truth or cluster label): never compared, as matching on it would take the answer for "
    "evidence; leave it unmapped (`ci-pipeline bench linkage --truth` scores the matching against it)"
)
#: Columns left unmapped whatever their values: (column-name pattern, why).
LEFT_OUT_BY_NAME = [(TRUTH_LABEL_NAME, TRUTH_LABEL), (HOUSE_NUMBER_NAME, HOUSE_NUMBER)]

NOT_AN_ATTRIBUTE = "not a customer attribute; map it to 'custom' to keep it on the profile"
#: Keys are left unmapped: a table's primary key is on every profile already (``<Source>_<Table>_<Key>``).
IDENTIFIER = (
    "an identifier (the table's key or a reference): not a customer attribute; leave it unmapped (the primary key "
    "is on the profile already)"
)
CUSTOM_IN_RULES = "'custom' keeps it under its own name, usable in match rules ({field: %s})"

_VALUE_TESTS: list[tuple[str, str]] = [
    ("email", r"[^@\s]+@[^@\s]+\.[^@\s]+"),
    ("custom", r"\d{3}-\d{2}-\d{4}"),  # a US social security number, which the phone test would take
    ("phone", r"\+?[\d\s().\-/]{7,}(\s*(x|ext\.?)\s*\d+)?"),  # 310/246-1501 too
    ("postal_code", r"\d{5}(-\d{4})?|[A-Za-z]\d[A-Za-z] ?\d[A-Za-z]\d|[A-Za-z]{1,2}\d[A-Za-z\d]? ?\d[A-Za-z]{2}"),
    ("gender", r"(?i)m|f|male|female|man|woman|x|other|non-binary|unknown"),
]

#: The words that end a street's name (``road``, ``st``, ``avenue``), in any case.
STREET_TYPES = (
    r"street|st|road|rd|avenue|ave?|lane|ln|drive|dr|close|cl|way|court|ct|crt|place|pl|crescent|cres|terrace|terr?|"
    r"tce|boulevard|blvd|grove|gro?|gardens|gdns|square|sq|parade|pde|highway|hwy|circuit|cct|circle|cir|row|mews|"
    r"walk|hill|green|view|rise|parkway|pkwy|trail|trl|esplanade|esp"
)
#: An address line: a house number, then words ending in a street's word (``64 HIGHFIELD ROAD``, ``7A Mill Ln``,
#: ``435 S. La Cienega Blvd.``, ``12 Oak St NW``).
STREET_VALUE = (
    r"\d+[A-Za-z]?([-/]\d+[A-Za-z]?)?,?\s+((\d+(?i:st|nd|rd|th)|[^\W\d_][\w'.-]*)\s+)+"
    rf"(?i:{STREET_TYPES})\.?(\s+(?i:[nsew]|ne|nw|se|sw))?"
)
#: Address lines are written many ways (``FLAT 2``, ``The Cottage``): half of them in the common shape make a street.
STREET_SHARE = 0.5

#: A person's name in two numbered columns, forename then surname (the ONS census's ``pername1``, ``pername2``).
NUMBERED_NAME = r"(.*name)_?([12])"
#: A name of one word, in any alphabet (``O'NEIL``, ``ANNE-MARIE``).
ONE_WORD = r"[^\W\d_]+(['’-][^\W\d_]+)*"

#: Types that make a table a customer table: a name, or (at least two of) the contact and identity fields.
NAME_TYPES = {"full_name", "first_name", "last_name"}
CONTACT_TYPES = {"email", "phone", "street", "postal_code", "birth_date"}

_RANK = {"high": 2, "medium": 1, "": 0}


def suggest_mapping(frame: pd.DataFrame, sample: int = 2000) -> pd.DataFrame:
    """One row per column: ``column, suggested, confidence, reason`` (``suggested`` empty = leave unmapped).

    A name match is confirmed (or contradicted) by the share of sampled non-empty values that look like the type.
    No semantic type is suggested for two columns: the column with the best evidence keeps it, the others are
    suggested as ``custom`` with the reason.
    """
    rows = []
    for column in frame.columns:
        values = frame[column].dropna().astype("string").str.strip()
        values = values[values.str.len() > 0].head(sample)
        rows.append((column, *_suggest_column(str(column), values)))
    suggestions = pd.DataFrame(rows, columns=["column", "suggested", "confidence", "reason", "share"])
    suggestions = _numbered_names(_one_column_per_type(_family_beside_given(suggestions)), frame, sample)
    suggestions = _birth_date_parts(suggestions, frame, sample)
    return _unnamed_birth_dates(suggestions, frame, sample).drop(columns="share")


#: A column named for the given name in so many words or letters (``gname``, ``given_name``, ``forename``).
GIVEN = r"g_?name|given_?name|given|forename"


def _family_beside_given(suggestions: pd.DataFrame) -> pd.DataFrame:
    """``fname`` is the first name in some schemas and the family name in others (``fname`` and ``gname``: family
    and given name); beside a column named for the given name, it is the family name."""
    names = suggestions["column"].astype(str).map(_normalized_name)
    given = (suggestions["suggested"] == "first_name") & names.str.fullmatch(GIVEN)
    family = (suggestions["suggested"] == "first_name") & names.str.fullmatch(r"f_?name")
    if not given.any() or not family.any() or (suggestions["suggested"] == "last_name").any():
        return suggestions
    result = suggestions.copy()
    taken = ", ".join(suggestions.loc[given, "column"].astype(str))
    result.loc[family, ["suggested", "confidence"]] = ["last_name", "medium"]
    result.loc[family, "reason"] = f"column name: the family name, beside the given name in {taken}"
    return result


def _unnamed_birth_dates(suggestions: pd.DataFrame, frame: pd.DataFrame, sample: int) -> pd.DataFrame:
    """A column of dates (without times) left unmapped whose dates spread as birth dates do (see :func:`birth_years`),
    where no birth date is mapped: named only ``date`` (:data:`PLAIN_DATE_NAME`) in a table of people's names, it is
    suggested as ``birth_date`` (a register of people keeps few other dates that span decades, and a sign-up or
    order date does not spread so); named otherwise (``issue_date``), or without names, its reason says to map it
    so if it is the birth date, since a date of another kind compared as a birth date would join strangers."""
    if {"birth_date", *BIRTH_DATE_PARTS} & set(suggestions["suggested"]):
        return suggestions
    result = suggestions.copy()
    people = bool(NAME_TYPES & set(suggestions["suggested"]))
    for index in suggestions.index[suggestions["suggested"] == ""]:
        column = suggestions.at[index, "column"]
        values = frame[column].dropna().astype("string").str.strip().head(sample)
        dates = _share(values, DATE_VALUE)
        if dates < 0.8 or values.str.contains(r"\d:\d\d").mean() >= 0.5:
            continue
        if not birth_years(read_birth_dates(values)[0].str[:4]):
            continue
        if people and re.fullmatch(PLAIN_DATE_NAME, _normalized_name(str(column))):
            result.loc[index, ["suggested", "confidence", "reason"]] = [
                "birth_date",
                "medium",
                f"values: {dates:.0%} look like dates, spread over decades as birth dates are, beside people's names "
                "(the name does not say which date: unmap it if it is not the person's birth date)",
            ]
            return result
        result.loc[index, "reason"] = (
            f"{dates:.0%} of values look like dates, spread over decades as birth dates are: if it is the "
            "person's birth date, map it as birth_date (its name does not say so; other dates are not matched on)"
        )
    return result


#: A column's name that says it holds a date and nothing of which one.
PLAIN_DATE_NAME = r"dates?|dt|d"


def _numbered_names(suggestions: pd.DataFrame, frame: pd.DataFrame, sample: int) -> pd.DataFrame:
    """Two columns named alike but for a 1 and a 2 after ``name`` (``pername1``, ``pername2``), unmapped and holding
    mostly single words, are the forename and the surname, in that order, as census files write them; unless
    another column takes the first or the last name. Columns whose values are several words (an organisation's
    name over two lines) are not names of a person."""
    if {"first_name", "last_name"} & set(suggestions["suggested"]):
        return suggestions
    pairs: dict[str, dict[str, int]] = {}
    for index, column in suggestions["column"].items():
        numbered = re.fullmatch(NUMBERED_NAME, _normalized_name(str(column)))
        if not numbered or suggestions.at[index, "suggested"] != "":
            continue
        if _share(frame[column].dropna().astype("string").str.strip().head(sample), ONE_WORD) >= 0.8:
            pairs.setdefault(numbered[1], {})[numbered[2]] = index
    result = suggestions.copy()
    for pair in pairs.values():
        if len(pair) == 2:
            names = f"{result.at[pair['1'], 'column']}, {result.at[pair['2'], 'column']}"
            reason = f"name and values: single words in two numbered name columns ({names}), a forename then a surname"
            result.loc[pair["1"], ["suggested", "confidence", "reason"]] = ["first_name", "medium", reason]
            result.loc[pair["2"], ["suggested", "confidence", "reason"]] = ["last_name", "medium", reason]
            break
    return result


#: The words naming a date's part at either end of a column's name (``dob_mon``, ``YearOfBirth``, plain ``day``).
DATE_PART_WORDS = {"birth_year": r"year|yr|yyyy", "birth_month": r"month|mon|mo|mm|mth", "birth_day": r"day|dd"}
#: Names that are a birth date's part as a whole (year and month of birth).
BIRTH_PART_NAMES = {"yob": "birth_year", "mob": "birth_month"}
#: Words beside a part's word that say the date is a birth date (``dob_``, ``birth_``, ``bd_``, ``_of_birth``).
#: RecordLinkage's two-letter ``by``, ``bm``, ``bd`` hold no part's word, so they are not guessed.
BIRTH_WORDS = _words(r"(of_?)?birth|dob|bd|bdate|born")
#: A birth date part's whole numbers: lowest and highest.
PART_RANGES = {"birth_year": (1000, 9999), "birth_month": (1, 12), "birth_day": (1, 31)}
#: Birth years of a customer table span decades and lie mostly long past: its median that many years ago at least.
ADULT_YEARS = 16


def _birth_date_parts(suggestions: pd.DataFrame, frame: pd.DataFrame, sample: int) -> pd.DataFrame:
    """A year, a month and a day in three columns of whole numbers in range, sharing the rest of their names, are
    mapped as the birth date's parts, which unification joins into one date, when no column holds the whole date:
    when the rest says birth (``dob_day``, ``dob_mon``, ``dob_year``), or is nothing (``day``, ``month``, ``year``)
    in a customer table whose years are spread as birth years are. A year and month of birth without the day are
    mapped as those parts (a birth date known in part); a year of birth alone as ``birth_year``."""
    groups = _date_parts_by_rest(suggestions, frame, sample)
    year = next((f["birth_year"] for rest, f in groups.items() if _says_birth(rest) and "birth_year" in f), None)
    whole = suggestions.index[suggestions["suggested"] == "birth_date"]
    if len(whole):
        dated, years = frame.iloc[:, whole[0]].count(), (frame.iloc[:, year].count() if year is not None else 0)
        if years <= dated:
            return suggestions
        # Two systems' rows in one sheet: one wrote the birth date, the other (more of them) the year of birth.
        suggestions = suggestions.copy()
        suggestions.loc[whole[0], ["suggested", "confidence", "reason"]] = [
            "",
            "",
            f"a birth date, but fewer records hold it than {frame.columns[year]!r} ({dated:,} against {years:,}): "
            "the year of birth is mapped instead (a table maps one of the two); map this as custom to keep it on the "
            "profile",
        ]
    result = suggestions.copy()
    customers = customer_table_verdict(suggestions) is None
    for rest, found in groups.items():
        if len(found) < len(PART_RANGES) or not _of_birth(rest, frame[result.at[found["birth_year"], "column"]]):
            continue
        if rest == "" and not customers:
            continue  # plain day, month and year outside a customer table: an order's or a visit's date
        return _mapped_as_parts(result, found, tuple(PART_RANGES), "the birth date in parts (joined into one date)")
    month = next(
        (f for rest, f in groups.items() if _says_birth(rest) and {"birth_year", "birth_month"} <= set(f)), None
    )
    if month is not None:
        what = "a year and month of birth (joined into a birth date known in part)"
        return _mapped_as_parts(result, month, ("birth_year", "birth_month"), what)
    if year is not None:
        result.loc[year, ["suggested", "confidence"]] = ["birth_year", "high"]
        result.loc[year, "reason"] = "name and values: a year of birth (compared as a year, blocked on with names)"
    return result


def _mapped_as_parts(result: pd.DataFrame, found: dict[str, int], parts: tuple[str, ...], what: str) -> pd.DataFrame:
    """``result`` with the columns of ``found`` (part -> row) mapped as those ``parts`` of the birth date."""
    names = ", ".join(str(result.at[found[p], "column"]) for p in parts)
    for part in parts:
        result.loc[found[part], ["suggested", "confidence"]] = [part, "high"]
        result.loc[found[part], "reason"] = f"name and values: with {names}, {what}"
    return result


def _date_parts_by_rest(suggestions: pd.DataFrame, frame: pd.DataFrame, sample: int) -> dict[str, dict[str, int]]:
    """The columns named for a date's part (:func:`_date_part`) whose values are whole numbers in its range, by the
    rest of their names: rest -> part -> the column's row in ``suggestions`` (the first column of each part)."""
    groups: dict[str, dict[str, int]] = {}
    for index, column in suggestions["column"].items():
        named = _date_part(_normalized_name(str(column)))
        if named and named[0] not in groups.setdefault(named[1], {}):
            low, high = PART_RANGES[named[0]]
            values = frame[column].dropna().head(sample)
            if len(values) and whole_numbers(values, low, high, 1).notna().mean() >= 0.8:
                groups[named[1]][named[0]] = index
    return groups


def _date_part(name: str) -> tuple[str, str] | None:
    """The part of a birth date a normalized column name names, and the rest of the name with its words of birth
    written ``birth`` (``dob_mon`` -> ``("birth_month", "birth")``, ``day`` -> ``("birth_day", "")``), or None."""
    if name in BIRTH_PART_NAMES:
        return BIRTH_PART_NAMES[name], "birth"
    for part, words in DATE_PART_WORDS.items():
        if found := re.fullmatch(rf"(.*?)_?(?:{words})|(?:{words})_?(.*)", name):
            rest = found[1] if found[1] is not None else found[2]
            return part, re.sub(BIRTH_WORDS, "birth", rest)
    return None


def _says_birth(rest: str) -> bool:
    return re.search(_words("birth"), rest) is not None


def _of_birth(rest: str, years: pd.Series) -> bool:
    """Whether a date in parts whose names share ``rest`` is a birth date: its names say so, or they are plain
    (``day``, ``month``, ``year``) and the years are spread as birth years are (see :func:`birth_years`)."""
    return _says_birth(rest) or (rest == "" and birth_years(years))


def birth_years(years: pd.Series) -> bool:
    """Whether ``years`` (whole numbers) are spread as a customer table's years of birth: over three decades or
    more, and mostly long past (the median :data:`ADULT_YEARS` years ago or more). The years of an order, a visit or
    a sign-up lie within a few years, or are recent."""
    known = pd.to_numeric(whole_numbers(years.dropna(), 1000, 9999, 4), errors="coerce").dropna()
    return bool(
        len(known) and known.floordiv(10).nunique() >= 3 and known.median() <= pd.Timestamp.now().year - ADULT_YEARS
    )


def _dates_share(values: pd.Series, says_date: bool, by_name: str | None) -> float:
    """The share of ``values`` that look like dates: compact ones (20230115) only where the name says date, and
    where it says birth date, those known in part (1843----, 1843-05) beside whole ones, as unification reads them."""
    if by_name == "birth_date" and len(values):
        whole = values.str.fullmatch(f"{DATE_VALUE}|{COMPACT_DATE_VALUE}").fillna(False)
        # Read as unification reads them; a bare year is not counted: a column of years is a year of birth.
        partial = read_birth_dates(values)[0].str.fullmatch(PARTIAL_DATE).fillna(False)
        return float((whole | (partial & ~values.str.fullmatch(r"\d{4}").fillna(False))).mean())
    return max(_share(values, DATE_VALUE), _share(values, COMPACT_DATE_VALUE) if says_date else 0.0)


def _suggest_column(column: str, values: pd.Series) -> tuple[str, str, str, float]:
    """``(suggested, confidence, reason, share)`` for one column; ``share`` of values confirming it ranks ties."""
    name = _normalized_name(column)
    if values.empty:
        # Mapped, it would be compared and blocked on nothing (an unused MobilePhone field of a CRM export).
        return "", "", "empty in every row: nothing to compare; map it once it holds values", 0.0
    if left_out := next((why for pattern, why in LEFT_OUT_BY_NAME if re.search(pattern, name)), None):
        return "", "", left_out, 0.0
    if kept := _custom_by_name(name, column):
        return kept
    by_name = _by_name(column)
    if by_name and (whose := _an_organisations(name, by_name)):
        return "", "", whose, 0.0
    says_date = re.search(DATE_NAME, name) is not None
    dates = _dates_share(values, says_date, by_name)
    if by_name == "birth_date" and len(values) and dates < 0.5:
        return "", "", f"the name says birth date but {dates:.0%} of values look like dates: {NOT_AN_ATTRIBUTE}", 0.0
    if dates >= 0.8 or (says_date and by_name is None):
        # Only a birth date is a customer attribute; other dates (sign-up, last login) are not matched on.
        if by_name == "birth_date":
            return "birth_date", "high", f"name and {dates:.0%} of values look like dates", dates
        what = (
            f"{dates:.0%} of values look like dates or times" if dates >= 0.8 else "the name says it is a date or time"
        )
        return "", "", f"{what}: {NOT_AN_ATTRIBUTE}", 0.0
    if by_name is None and re.search(IDENTIFIER_NAME, name):
        return "", "", IDENTIFIER, 0.0
    by_value, share = _by_value(values, by_name)
    if by_value == "custom" and by_name is None:
        return (
            "custom",
            "medium",
            f"{share:.0%} of values {LOOK_LIKE_SSN}: " + (CUSTOM_IN_RULES % column),
            share,
        )
    if by_name and by_value == by_name:
        return by_name, "high", f"name and {share:.0%} of values look like {by_name}", share
    if by_name in {"email", "phone", "postal_code", "gender"} and by_value and by_value not in {by_name, "custom"}:
        return by_value, "medium", f"name says {by_name} but values look like {by_value}", share
    if by_name in CHECKED_BY_VALUE and len(values) and (held := _holds(values, by_name)) < 0.5:
        # A column named for a contact field whose values are something else (phone_or_town holding towns) would
        # block and match on that something else.
        return "", "", f"the name says {by_name} but {held:.0%} of values look like {by_name}: {NOT_AN_ATTRIBUTE}", 0.0
    if by_name:
        return by_name, "medium", "column name", 0.0
    if by_value:
        return by_value, "medium", f"{share:.0%} of values look like {by_value}", share
    return "", "", "no semantic type recognised (map it to 'custom' to keep it)", 0.0


#: A column name that begins with an organisation's name: its address or contact is the employer's or the
#: company's, not the person's (``employer_street_name``, ``company_phone``, ``work_city``).
ORGANISATION_PREFIX = r"^(employer|company|business|work|office|organi[sz]ation|org)_"
#: Types an organisation's column is not the person's.
PERSONAL_PLACES = {"street", "city", "state", "postal_code", "country", "phone", "email"}


def _custom_by_name(name: str, column: str) -> tuple[str, str, str, float] | None:
    """The suggestion for a column whose name says it is one of :data:`CUSTOM_PATTERNS`, or None."""
    for what, pattern in CUSTOM_PATTERNS:
        if re.search(pattern, name):
            if what == IDENTIFIER_OF_PERSON and (detail := re.search(DOCUMENT_DETAIL, name)):
                return "", "", f"the {detail[0]} of an identity document, not the person's: {NOT_AN_ATTRIBUTE}", 0.0
            return "custom", "high", f"{what}: {CUSTOM_IN_RULES % column}", 1.0
    return None


def _an_organisations(name: str, by_name: str) -> str | None:
    """Why a column the name alone suggests as ``by_name`` is no attribute of the person, or None: an employer's
    address or contact (compared with the person's own, it would join colleagues), or an identifier of the company
    (``employer_id``, ``company_number``), which colleagues share."""
    if by_name in PERSONAL_PLACES and re.search(ORGANISATION_PREFIX, name):
        return f"the organisation's {by_name.replace('_', ' ')}, not the person's: {NOT_AN_ATTRIBUTE}"
    if by_name == "company" and re.search(r"_?(id|number|no|nr|code|num|key)$", name):
        return f"an identifier of the organisation, which its people share: {NOT_AN_ATTRIBUTE}"
    return None


def _one_column_per_type(suggestions: pd.DataFrame) -> pd.DataFrame:
    """Keep each semantic type on its best column (confidence, then a place of the person's own before a place of
    birth, then share of confirming values, then a name that is the type's name as a whole, ``surname`` before
    ``maiden_surname``, then column order); the others become ``custom``, but for a name type or the gender, which
    are left unmapped."""
    typed = suggestions[(suggestions["suggested"] != "") & (suggestions["suggested"] != "custom")]
    whole = [_named_as_a_whole(str(c), kind) for c, kind in zip(typed["column"], typed["suggested"], strict=True)]
    # A place of birth stands in for the town where a table has no other: a voter file's res_city_desc beside its
    # birth_place is where the person lives, which their other records hold too.
    own = [
        kind not in PERSONAL_PLACES or not re.search(OF_BIRTH, _normalized_name(str(c)))
        for c, kind in zip(typed["column"], typed["suggested"], strict=True)
    ]
    ranked = typed.assign(rank=typed["confidence"].map(_RANK), own=own, whole=whole).sort_values(
        ["rank", "own", "share", "whole"], ascending=False, kind="stable"
    )
    losers = ranked[ranked.duplicated("suggested", keep="first")]
    winners = ranked.drop_duplicates("suggested").set_index("suggested")["column"]
    result = suggestions.copy()
    for index, row in losers.iterrows():
        taken = f"also looks like {row['suggested']}, which {winners[row['suggested']]} takes (one column per type)"
        if row["suggested"] in NAME_TYPES:
            # A second name column compared beside the first would count the same name twice as evidence.
            result.loc[index, ["suggested", "confidence"]] = ["", ""]
            result.loc[index, "reason"] = f"{taken}: left unmapped, as comparing it too would count the name twice"
        elif row["suggested"] == "gender":
            # A second column of one-letter codes beside the gender is something else coded alike (a marital
            # status: M, S, D), which tells no one apart.
            result.loc[index, ["suggested", "confidence"]] = ["", ""]
            result.loc[index, "reason"] = f"{taken}: left unmapped, a code shared by many people"
        else:
            result.loc[index, ["suggested", "confidence"]] = ["custom", "medium"]
            result.loc[index, "reason"] = f"{taken}: kept as custom"
    return result


def customer_table_verdict(suggestions: pd.DataFrame) -> str | None:
    """Why the table does not look like a customer table, or None when it does.

    A customer table holds a person's name, or at least two contact or identity fields (email, phone, street,
    postal code, birth date, which may be in three parts); a table of orders that carries a customer's email is an
    activity table.
    """
    types = set(suggestions["suggested"])
    contacts = types & CONTACT_TYPES | ({"birth_date"} if set(BIRTH_DATE_PARTS) <= types else set())
    if types & NAME_TYPES or len(contacts) >= 2:
        return None
    found = sorted(t for t in types if t and t != "custom")
    held = (
        f"its only customer attribute{'s are' if len(found) > 1 else ' is'} {', '.join(found)}"
        if found
        else "none of its columns is a customer attribute"
    )
    unknown = suggestions.loc[suggestions["suggested"] == "", "column"].astype(str).tolist()
    by_hand = (
        f". Columns whose names say nothing known: {', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''}; "
        "where some hold names, contacts or a birth date (or its year, month and day apart), map them by hand in a "
        "configuration, under unify.tables.<table>.columns (see docs/config/unify.md)"
        if unknown
        else ""
    )
    return (
        f"this does not look like a customer table: {held} (a customer table holds a name, or two of email, phone, "
        "street, postal code and birth date). If it records events (orders, visits, tickets), configure it under "
        f"'activities' and link it to customers by a key{by_hand}"
    )


def _normalized_name(column: str) -> str:
    """``signupDate`` / ``Signup Date`` -> ``signup_date``; ``Prénom`` -> ``prenom``, ``Straße`` -> ``strasse``."""
    plain = unicodedata.normalize("NFKD", column.replace("ß", "ss")).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", re.sub(r"([a-z])([A-Z])", r"\1_\2", plain).lower()).strip("_")


def _named_as_a_whole(column: str, kind: str) -> bool:
    """Whether the column's whole name is one that names ``kind`` (``surname`` for last_name)."""
    name = _normalized_name(column)
    return any(k == kind and re.fullmatch(pattern, name) for k, pattern in NAME_PATTERNS)


def _share(values: pd.Series, pattern: str) -> float:
    return float(values.str.fullmatch(pattern).fillna(False).mean()) if len(values) else 0.0


def _by_name(column: str) -> str | None:
    name = _normalized_name(column)
    for kind, pattern in NAME_PATTERNS:
        if re.search(pattern, name):
            return kind
    # ``DoB`` normalizes to ``do_b``: the raw name still says birth date.
    return "birth_date" if column.endswith("DoB") or column.lower() == "dob" else None


def _by_value(values: pd.Series, by_name: str | None) -> tuple[str | None, float]:
    """The type most values look like, and their share. Bare digits (``4155550101``) are a phone number only where
    the name says phone: without, they are as likely a label, an account or a ZIP+4 written without its dash."""
    if values.empty:
        return None, 0.0
    for kind, pattern in _VALUE_TESTS:
        share = _share(values, pattern)
        if share >= 0.8:
            if kind == "phone" and not (
                _phone_digits(values) and (by_name == "phone" or _share(values, r"\d+") <= 0.5)
            ):
                continue
            return kind, share
    if (share := _share(values, STREET_VALUE)) >= STREET_SHARE:
        return "street", share
    return None, 0.0


#: Types a column's name proposes only when half its values or more look like them.
CHECKED_BY_VALUE = ("email", "phone")


def _holds(values: pd.Series, kind: str) -> float:
    """The share of ``values`` that look like ``kind`` (an e-mail address; a phone number of 7 to 15 digits)."""
    pattern = dict(_VALUE_TESTS)[kind]
    looks = values.str.fullmatch(pattern).fillna(False)
    if kind == "phone":
        looks &= _phone_length(values)
    return float(looks.mean())


def _phone_length(values: pd.Series) -> pd.Series:
    """Whether each value has 7 to 15 digits, as a phone number has with or without its country code."""
    return values.str.replace(r"\D", "", regex=True).str.len().between(7, 15)


def _phone_digits(values: pd.Series) -> bool:
    """Most values have 7 to 15 digits and are not decimal amounts (``12345.67``)."""
    return bool(_phone_length(values).mean() >= 0.8 and _share(values, r"-?\d+\.\d{1,4}") < 0.5)


def mapping_yaml(suggestions: pd.DataFrame, source: str, table: str) -> str:
    """The ``unify.tables`` entry the suggestions describe, as YAML text to paste and confirm.

    Raises:
        ValueError: no column has a suggestion (there is no entry to write; see :func:`customer_table_verdict`).
    """
    mapped = suggestions[suggestions["suggested"] != ""]
    if mapped.empty:
        raise ValueError(f"{source}.{table}: no column has a suggested semantic type")
    lines = [f"    - source: {source}", f"      table: {table}", "      columns:"]
    for row in mapped.itertuples(index=False):
        lines.append(f"        {row.column}: {row.suggested}  # {row.confidence}: {row.reason}")
    return "\n".join(lines)
