"""Normalizations for matching only: outputs always keep the original values.

Every function takes and returns a pandas ``string`` Series; missing, empty and bypass values become ``<NA>``,
which never matches anything (not even another ``<NA>``). Expensive steps (Unicode folding, nickname and
abbreviation tables, phone parsing) run once per distinct value, not once per record.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import phonenumbers
import pyarrow.compute as pc
from rapidfuzz import process
from rapidfuzz.distance import OSA
from unidecode import unidecode

from ci_pipeline.arrays import unique
from ci_pipeline.errors import UserError
from ci_pipeline.unify.dates import parse_times
from ci_pipeline.unify.records import SUFFIX, TITLE, given_name_first
from ci_pipeline.unify.text import arrow_strings, map_words, pandas_strings, re_extract, re_fullmatch, re_replace

#: Arrow-backed strings: regex and string kernels run in C over whole columns.
STR = "string[pyarrow]"

#: Normalizations made of two steps: a personal name written plainly (``name_plain``), then its words folded to
#: formal names with the nickname table (``name``) or its second readings (``name_alt``). Applied as their parts,
#: so the plain name is computed once for the three.
_PARTS = {
    "name": ("name_plain", "nicknames"),
    "name_alt": ("name_plain", "alternative_nicknames"),
}

#: Default normalizations per semantic type, used when a condition lists none.
DEFAULTS: dict[str, tuple[str, ...]] = {
    "full_name": ("ascii", "case", "name", "titles", "whitespace"),
    "first_name": ("ascii", "case", "name", "whitespace"),
    "middle_name": ("ascii", "case", "symbols", "whitespace"),
    "last_name": ("ascii", "case", "symbols", "whitespace"),
    "email": ("ascii", "case", "whitespace", "email"),
    "phone": ("phone",),
    "street": ("ascii", "case", "numerals", "symbols", "whitespace", "address"),
    "city": ("ascii", "case", "symbols", "whitespace"),
    "state": ("ascii", "case", "symbols", "whitespace"),
    "postal_code": ("ascii", "case", "postal"),
    "country": ("ascii", "case", "symbols", "whitespace"),
    "birth_date": ("date",),
    "gender": ("ascii", "case", "symbols", "whitespace"),
    "company": ("ascii", "case", "symbols", "whitespace", "organization"),
}
#: Custom columns (an account or passport number, a tier): as text, and a number written in groups as its digits.
GENERIC = ("ascii", "case", "symbols", "whitespace", "identifier")

_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}
_ORDINAL_WORDS = {
    w: str(i + 1)
    for i, w in enumerate(
        [
            "first",
            "second",
            "third",
            "fourth",
            "fifth",
            "sixth",
            "seventh",
            "eighth",
            "ninth",
            "tenth",
            "eleventh",
            "twelfth",
            "thirteenth",
        ]
    )
}


def default_normalizations(semantic_type: str) -> tuple[str, ...]:
    """The normalizations a condition on this semantic type gets when it lists none."""
    return DEFAULTS.get(semantic_type, GENERIC)


@cache
def nicknames() -> dict[str, str]:
    """The shipped nickname table (``bob`` -> ``robert``), lower-case ASCII: the first formal name listed."""
    return _read_pairs("nicknames.csv")


@cache
def alternative_nicknames() -> dict[str, str]:
    """Every nickname of the shipped table with its second reading, lower-case ASCII: the second formal name listed
    where it has one (``sam`` -> ``samantha``, where :func:`nicknames` gives ``samuel``), else its only one.

    Names compare as equal when they agree with either reading, so Sam matches Samuel and Samantha, but Samuel and
    Samantha still differ.
    """
    seen: set[str] = set()
    second: dict[str, str] = {}
    for nick, formal in _read_rows("nicknames.csv"):
        if nick in seen:
            second.setdefault(nick, formal)
        seen.add(nick)
    return {**nicknames(), **second}


@cache
def address_abbreviations() -> dict[str, str]:
    """The shipped address word table (``street`` -> ``st``)."""
    return _read_pairs("address_abbreviations.csv")


@cache
def email_domain_typos() -> dict[str, str]:
    """The shipped table of misspelt mail provider domains (``gmial.com`` -> ``gmail.com``)."""
    return _read_pairs("email_domain_typos.csv")


@cache
def consumer_mail_domains() -> frozenset[str]:
    """Domains of consumer mail providers (``gmail.com``, ``icloud.com``, ...): addresses there are personal."""
    text = resources.files("ci_pipeline.unify").joinpath("data/consumer_mail_domains.txt").read_text("utf-8")
    return frozenset(w.strip() for w in text.splitlines() if w.strip() and not w.startswith("#"))


@cache
def organization_noise_words() -> frozenset[str]:
    """Words dropped from organization names (``inc``, ``llc``, ``the``, ...)."""
    text = resources.files("ci_pipeline.unify").joinpath("data/organization_noise_words.txt").read_text("utf-8")
    return frozenset(w.strip() for w in text.splitlines() if w.strip())


def _read_pairs(name: str) -> dict[str, str]:
    """``key -> value`` rows of a shipped table; a key listed twice keeps its first value."""
    out: dict[str, str] = {}
    for a, b in _read_rows(name):
        out.setdefault(a, b)
    return out


def _read_rows(name: str) -> list[list[str]]:
    """The rows of a shipped CSV table of two columns, after its header."""
    text = resources.files("ci_pipeline.unify").joinpath(f"data/{name}").read_text("utf-8")
    return list(csv.reader(text.splitlines()))[1:]


def read_alias_file(path: str | Path, name: str) -> dict[str, str]:
    """Read a user alias map: CSV with header ``alias,canonical``.

    Raises:
        UserError: naming the file and every bad row (missing file, wrong header, wrong column count, empty cell).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(
            f"unify.normalize.aliases.{name}: cannot read {path} ({exc.strerror}); create the file or fix the path"
        ) from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or [c.strip().lower() for c in rows[0]] != ["alias", "canonical"]:
        raise UserError(f"{path}: the first line must be the header 'alias,canonical' (alias map {name!r})")
    problems = []
    mapping: dict[str, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        # Named by the file: a bare "line 3" in validate's list reads as a line of the YAML configuration.
        where = f"{path.name} line {line}"
        if len(row) != 2:
            problems.append(f"{where}: expected 2 values (alias,canonical), got {len(row)}")
        elif not row[0].strip() or not row[1].strip():
            problems.append(f"{where}: alias and canonical must both be non-empty")
        else:
            mapping[_basic(row[0])] = _basic(row[1])
    if problems:
        raise UserError(
            f"{path}: {len(problems)} bad row(s) in alias map {name!r}; fix or delete them:\n    - "
            + "\n    - ".join(problems[:20])
        )
    return mapping


def _basic(value: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z@ ]+", " ", unidecode(value).lower()).split())


def _arrow(values: pd.Series):
    """The Arrow data of an Arrow-backed text column (no copy)."""
    return values.array.__arrow_array__()


@dataclass
class _Column:
    """A column's Arrow data, the code of each value among its distinct values, and those values stripped and
    bypass-masked (the start of every normalization; computed when first needed)."""

    data: object
    codes: np.ndarray
    raw: pd.Series
    start: pd.Series | None = None


@dataclass(frozen=True)
class Normalizer:
    """Applies named normalizations to a Series.

    Args:
        bypass_values: values that never match (compared after case and whitespace folding).
        default_region: region for phone numbers written without a country code.
        aliases: alias-map name -> {alias: canonical}, both already basic-normalized.
    """

    bypass_values: Iterable[str] = ()
    default_region: str = "US"
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)
    #: steps -> (distinct raw values, as a Series and an Index, their text after those steps, before the last bypass
    #: mask): what this normalizer already computed, reused value by value (see ``apply``) until ``forget``.
    _done: dict = field(default_factory=dict, repr=False, compare=False, hash=False)
    #: id of a column's Arrow data -> :class:`_Column`: a run normalizes one column up to three times (a name's
    #: three spellings, an e-mail address with and without ``personal_email``), so it is factorized once.
    _columns: dict = field(default_factory=dict, repr=False, compare=False, hash=False)
    #: id of a normalized column's array -> (the array, its distinct values' text, each record's position among them):
    #: see ``codes_of``.
    _codes: dict = field(default_factory=dict, repr=False, compare=False, hash=False)

    def apply(self, values: pd.Series, steps: Iterable[str]) -> pd.Series:
        """Normalize a column for matching; empty, missing and bypass values become ``<NA>``.

        Each step works value by value, so a column's distinct values are normalized once, and a run that
        normalizes one column several times (the dedup rules' e-mail address, then with ``personal_email``; the
        model's e-mail address) starts from the longest list of leading steps already applied to every one of
        its values.
        """
        steps = tuple(p for s in steps for p in _PARTS.get(s, (s,)))
        column = self._column(values.astype(STR))
        raw = column.raw
        done, u = self._resume(column, steps)
        for k in range(done, len(steps)):
            u = self._step(steps[k])(u)
            u = u.where(u.str.len() > 0)
            if k + 1 == len(steps) or steps[k] == "name_plain":
                # Kept whole, and up to the plain name: the three spellings of a name share it.
                self._done[steps[: k + 1]] = (raw, pd.Index(raw), u.astype(STR).array)
        u = self._mask_bypass(u).astype(STR)
        out = pd.Series(u.array.take(column.codes, allow_fill=True), index=values.index, dtype=STR)
        self._codes[id(out.array)] = (out.array, u, column.codes)
        return out

    def codes_of(self, normalized: pd.Series) -> np.ndarray | None:
        """``pd.factorize(normalized)[0]`` of a column ``apply`` returned (as int64), None for any other.

        Distinct raw values are numbered in the order they first appear, so numbering their normalized text in that
        order gives the codes pd.factorize would give the normalized column, without hashing every record.
        """
        found = self._codes.get(id(normalized.array))
        if found is None or found[0] is not normalized.array:
            return None
        numbered = np.append(pd.factorize(found[1], use_na_sentinel=True)[0].astype(np.int64), -1)
        return numbered[found[2]]

    def _column(self, s: pd.Series) -> _Column:
        """The codes and distinct values of a column, factorized once per column. Arrow data never changes, so
        the same data object holds the same values; the entry keeps it alive, so its id is not reused."""
        data = _arrow(s)
        found = self._columns.get(id(data))
        if found is None or found.data is not data:
            codes, uniques = pd.factorize(s, use_na_sentinel=True)
            found = _Column(data, codes, pd.Series(uniques, dtype=STR))
            self._columns[id(data)] = found
        return found

    def _resume(self, column: _Column, steps: tuple[str, ...]) -> tuple[int, pd.Series]:
        """How many leading ``steps`` are already applied to the column's distinct values, and their text then."""
        raw = column.raw
        for k in range(len(steps), 0, -1):
            if steps[:k] not in self._done:
                continue
            known, index, text = self._done[steps[:k]]
            # The same distinct values in the same order (another factorization of the same column): no lookup.
            if known is raw or (len(known) == len(raw) and _arrow(known).equals(_arrow(raw))):
                return k, pd.Series(text, dtype=STR)
            # The index is kept: its hash table is built once, however many columns are looked up in it.
            at = index.get_indexer(raw)
            if len(at) and (at >= 0).all():
                return k, pd.Series(text.take(at), dtype=STR)
        if column.start is None:
            column.start = self._mask_bypass(raw.str.strip())
        return 0, column.start

    def forget(self) -> None:
        """Drop the values kept for reuse (a run calls it once it normalizes no more)."""
        self._done.clear()
        self._columns.clear()
        self._codes.clear()

    def _mask_bypass(self, u: pd.Series) -> pd.Series:
        return u.where(~placeholder_mask(u, self.bypass_values))

    def _step(self, name: str) -> Callable[[pd.Series], pd.Series]:
        if name.startswith("alias:"):
            mapping = self.aliases.get(name[6:])
            if mapping is None:
                raise UserError(f"alias map {name[6:]!r} is not configured under unify.normalize.aliases")
            return lambda u: _alias(u, mapping)
        steps = {
            "whitespace": squash_spaces,
            "symbols": lambda u: squash_spaces(re_replace(u, r"[^\w@ ]+|_", " ")),
            "case": lambda u: u.str.lower(),
            "ascii": _ascii,
            "numerals": _numerals,
            "phone": lambda u: phone_digits(u, self.default_region),
            "name_plain": _names,
            "titles": lambda u: re_replace(u, TITLE, "", re.IGNORECASE),
            "nicknames": lambda u: _map_words(u, nicknames(), lower=True),
            "alternative_nicknames": lambda u: _map_words(u, alternative_nicknames(), lower=True),
            "address": lambda u: _map_words(u, address_abbreviations()),
            "organization": _organization,
            "email": _email,
            "personal_email": _personal_email,
            # Needs every record's first name: compare.Prepared masks the shared numbers (see shared_values).
            "personal_phone": lambda u: u,
            "date": _date,
            "postal": _postal,
            "identifier": _identifier,
        }
        return steps[name]


#: ASCII text that ``squash_spaces`` would change: whitespace other than single spaces between words.
_UNSQUASHED = r"[\t\n\v\f\r\x1c-\x1f]|^ | $|  "


def placeholder_mask(values: pd.Series, bypass_values: Iterable[str]) -> np.ndarray:
    """Per value, whether it stands for no value: missing, empty, or one of ``bypass_values`` ("N/A", "unknown"),
    compared with case and runs of whitespace folded on both sides.

    Examples:
        >>> placeholder_mask(pd.Series(["N / a", " n/a ", "", None, "Ann"], dtype="string"), ["N/A"]).tolist()
        [False, True, True, True, False]
    """
    folded = squash_spaces(values.str.lower())
    bypass = {" ".join(str(b).lower().split()) for b in bypass_values}
    real = ~folded.isin(bypass) & (values.str.len() > 0)
    return ~real.to_numpy(bool, na_value=False)


def squash_spaces(u: pd.Series) -> pd.Series:
    """Runs of whitespace as one space, none at the ends. Most values are already so: only the others (and any
    with a non-ASCII character) are rewritten, which costs a regex match instead of a replacement per value."""
    arrow = arrow_strings(u)
    odd = pc.or_(pc.invert(pc.string_is_ascii(arrow)), pc.match_substring_regex(arrow, _UNSQUASHED)).fill_null(False)
    if pc.any(odd).as_py():
        fixed = re_replace(pd.Series(pandas_strings(arrow.filter(odd))), r"\s+", " ").str.strip()
        arrow = pc.replace_with_mask(arrow, odd, arrow_strings(fixed))
    return pd.Series(pandas_strings(arrow), index=u.index)


def _ascii(u: pd.Series) -> pd.Series:
    non_ascii = u.str.contains(r"[^\x00-\x7f]", regex=True).fillna(False).astype(bool)
    if non_ascii.any():
        u = u.copy()
        u[non_ascii] = [unidecode(v) for v in u[non_ascii]]
    return u


def _numerals(u: pd.Series) -> pd.Series:
    words = {**_NUMBER_WORDS, **_ORDINAL_WORDS}
    u = _map_words(u, words, lower=True)
    # 1st / 2nd / 3rd / 4th -> 1 / 2 / 3 / 4, so "1st Ave" and "First Avenue" agree
    return re_replace(u, r"\b(\d+)(?:st|nd|rd|th)\b", r"\1", re.IGNORECASE)


def _map_words(u: pd.Series, table: dict[str, str], lower: bool = False) -> pd.Series:
    return map_words(u, table, lower).astype(STR)


def _names(u: pd.Series) -> pd.Series:
    """Personal names: "Smith, Bob" -> "Bob Smith", trailing initials and Jr/Sr dropped, punctuation dropped (the
    ``name`` normalization then folds nicknames to formal names, see ``_PARTS``)."""
    u = re_replace(given_name_first(u).str.strip(), SUFFIX, "", re.IGNORECASE)
    return re_replace(u, r"[^\w ]+|_", " ")


def _organization(u: pd.Series) -> pd.Series:
    noise = organization_noise_words()
    cleaned = u.str.replace(r"[.,&]", " ", regex=True)
    return pd.Series(
        [
            None if v is None else " ".join(w for w in v.split() if w.lower() not in noise)
            for v in cleaned.to_numpy(dtype=object, na_value=None)
        ],
        index=u.index,
        dtype=STR,
    )


def _identifier(u: pd.Series) -> pd.Series:
    """A number written in groups (``521-21-2123``, ``521 21 2123``, ``12.345.678``) as its digits, so that every
    way of writing it is one value; a value holding a letter is left as it is."""
    grouped = re_fullmatch(u, r"[0-9]+([ ./-]+[0-9]+)+")
    if not grouped.any():
        return u
    u = u.copy()
    u[grouped] = re_replace(u[grouped], r"[ ./-]+", "")
    return u


def _email(u: pd.Series) -> pd.Series:
    # "Ann Lee <ann@example.com>" and "mailto:ann@example.com" hold an address: it is what is compared.
    u = re_replace(re_replace(u, r"^.*<\s*([^<>\s]+@[^<>\s]+)\s*>.*$", r"\1"), r"^mailto:", "")
    # An address without exactly one "@" and a dotted domain is not an address: it never matches.
    valid = re_fullmatch(u, r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+")
    u = u.where(valid)
    parts = re_extract(u, r"^(.*@)([^@]*)$")
    domain = parts[1].astype("string")
    fixed = domain.map(mail_domain_corrections(domain.dropna().unique()), na_action="ignore").astype("string")
    known = fixed.notna().to_numpy()
    if known.any():
        u = u.copy()
        u[known] = parts[0][known] + fixed[known]
    return u


#: The shortest misspelt domain corrected by its nearness to a provider's. Below it, one letter turns too many real
#: short domains into a provider's (``mai.com``, ``mac.com``); short misspellings are listed in the table instead.
MIN_NEAR_DOMAIN_LENGTH = 8


def mail_domain_corrections(domains: Collection[str]) -> dict[str, str]:
    """Misspelt domain -> the consumer mail provider domain meant, for the given (distinct, lower-case) domains.

    A domain in the shipped table of misspellings gets its listed provider. Any other domain that is not itself a
    provider's, is at least :data:`MIN_NEAR_DOMAIN_LENGTH` long and is one typing error (a swapped, dropped, extra
    or wrong letter) away from exactly one provider's domain is taken for a misspelling of it: ``gmaii.com`` ->
    ``gmail.com``. A domain as near to two providers' domains is left as it is: which one was meant is a guess.

    Examples:
        >>> mail_domain_corrections(["gmaii.com", "gmail.com", "evans.example", "gmial.com"])
        {'gmial.com': 'gmail.com', 'gmaii.com': 'gmail.com'}
    """
    table = email_domain_typos()
    providers = sorted(consumer_mail_domains())
    out = {d: table[d] for d in domains if d in table}
    known = table.keys() | consumer_mail_domains()
    unknown = [d for d in domains if d not in known and len(d) >= MIN_NEAR_DOMAIN_LENGTH]
    if unknown:
        distance = process.cdist(unknown, providers, scorer=OSA.distance, score_cutoff=1, workers=1)
        near = distance <= 1
        sole = near.sum(axis=1) == 1
        for i in np.flatnonzero(sole):
            out[unknown[i]] = providers[int(np.argmax(near[i]))]
    return out


def shared_values(values: pd.Series, first_names: pd.Series) -> pd.Series:
    """Per normalized value held by records of two or more different (normalized) first names, how many names hold
    it: a household's landline or a shop's number, which says nothing about which of them a record is."""
    # On integer codes: grouping the texts themselves made a Python object of every record's value and name.
    value, distinct = pd.factorize(values, use_na_sentinel=True)
    name = pd.factorize(first_names, use_na_sentinel=True)[0].astype(np.int64)
    both = (value >= 0) & (name >= 0)
    width = int(name.max(initial=0)) + 1
    held = unique(value[both].astype(np.int64) * width + name[both]) // width
    names = np.bincount(held, minlength=len(distinct))
    shared = np.flatnonzero(names > 1)
    found = pd.Series(names[shared], index=pd.Index(np.asarray(distinct[shared], dtype=object), name="value"))
    return found.sort_index()


def _personal_email(u: pd.Series) -> pd.Series:
    # A work address says nothing about the personal one: only addresses at consumer providers are kept, so a
    # condition can refuse two different personal addresses while a work one counts as missing.
    domain = re_extract(u, r"@([^@]*)$")[0].str.lower()
    return u.where(domain.isin(consumer_mail_domains()).fillna(False).to_numpy(bool))


def _date(u: pd.Series) -> pd.Series:
    return parse_times(u).dt.strftime("%Y-%m-%d").astype("string")


def _postal(u: pd.Series) -> pd.Series:
    """Postal codes without blanks and dashes; US ZIP+4 -> ZIP, and ZIPs that lost leading zeros are re-padded."""
    compact = re_replace(u, r"[\s\-.]+", "")
    digits = compact.str.fullmatch(r"\d+").fillna(False).astype(bool)
    zip4 = digits & (compact.str.len() == 9)
    short = digits & compact.str.len().between(3, 4).fillna(False).astype(bool)
    out = compact.where(~zip4, compact.str[:5])
    return out.where(~short, compact.str.zfill(5))


def _alias(u: pd.Series, mapping: dict[str, str]) -> pd.Series:
    basic = pd.Series(
        [None if v is None else _basic(v) for v in u.to_numpy(dtype=object, na_value=None)],
        dtype=STR,
        index=u.index,
    )
    mapped = basic.map(mapping)
    return u.where(mapped.isna(), mapped).astype("string")


_EXTENSION = r"\s*(?:ext\.?|extension|x|#)\s*\d+\s*$"


def phone_region(values: pd.Series, least: int = 20) -> tuple[str, float] | None:
    """The region (``GB``) whose country code most of the numbers written with one (``+44 ...``, ``0044 ...``)
    carry, and that share; None when fewer than ``least`` numbers carry a code or no region holds most of them.

    Numbers without a country code are read as numbers of ``normalize.default_region``: where a table mixes
    ``+44 7700 900123`` and ``07700 900123``, the second is the first only when that region is ``GB``."""
    s = values.dropna().astype(STR).str.strip()
    coded = s[(s.str.startswith("+") | s.str.startswith("00")).fillna(False).to_numpy(bool)]
    digits = re_replace(re_replace(coded, r"^00", ""), r"\D+", "")
    if len(digits) < least:
        return None
    region = pd.Series(pd.NA, index=digits.index, dtype="object")
    # Country codes are prefix-free (1, 44, 353): the first of one to three leading digits that is one decides.
    for length in (1, 2, 3):
        code = pd.to_numeric(digits.str[:length], errors="coerce")
        found = code.map({c: phonenumbers.region_code_for_country_code(int(c)) for c in code.dropna().unique()})
        region = region.where(region.notna() | (found == "ZZ") | found.isna(), found)
    shares = region.value_counts(normalize=True, dropna=True)
    if shares.empty or shares.iloc[0] <= 0.5:
        return None
    return str(shares.index[0]), float(shares.iloc[0])


def phone_digits(u: pd.Series, default_region: str = "US") -> pd.Series:
    """Phone numbers as digits with the country code (``+1 (555) 010-9999 x12`` -> ``15550109999``).

    The extension is dropped; numbers without ``+`` or ``00`` get the default region's country code after
    its national trunk prefix (``0`` in most of Europe, ``1`` in North America) is removed. All-zero and
    too-short numbers (under 7 digits) become ``<NA>``.
    """
    country = str(phonenumbers.country_code_for_region(default_region) or "")
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(default_region)
    trunk = (metadata.national_prefix if metadata is not None else None) or ""
    s = re_replace(u, _EXTENSION, "", re.IGNORECASE).str.strip()
    international = s.str.startswith("+").fillna(False) | s.str.startswith("00").fillna(False)
    digits = re_replace(s, r"\D+", "")
    digits = digits.where(~s.str.startswith("00").fillna(False), digits.str[2:])
    national = digits.where(~international)
    if trunk:
        national = national.where(~national.str.startswith(trunk).fillna(False), national.str[len(trunk) :])
    digits = digits.where(international, country + national)
    all_zero = digits.str.fullmatch(r"0*").fillna(True).astype(bool) | national.str.fullmatch(r"0+").fillna(False)
    return digits.where(~all_zero & (digits.str.len() >= 7))
