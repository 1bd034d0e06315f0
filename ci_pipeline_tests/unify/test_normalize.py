"""Matching normalizations: each turns variants of one value into the same string, and placeholders into <NA>."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from ci_pipeline.errors import UserError
from ci_pipeline.unify.normalize import (
    DEFAULTS,
    GENERIC,
    Normalizer,
    mail_domain_corrections,
    nicknames,
    phone_digits,
    phone_region,
    read_alias_file,
)
from ci_pipeline.unify.text import map_words, re_extract, re_replace

EMAIL = ["ascii", "case", "whitespace", "email"]


def norm(values, steps, **kw):
    return (
        Normalizer(bypass_values=("n/a", "unknown", "test@test.com"), **kw)
        .apply(pd.Series(values, dtype="string"), steps)
        .tolist()
    )


def test_phone_keeps_country_code_and_drops_extension():
    got = phone_digits(
        pd.Series(
            ["(555) 010-1234", "+1 555 010 1234 ext 7", "555.010.1234 x12", "+44 20 7946 0000", "0000000000", "12"]
        )
    ).tolist()
    assert got[:3] == ["15550101234"] * 3
    assert got[3] == "442079460000"
    assert pd.isna(got[4]) and pd.isna(got[5])


def test_phone_default_region_strips_trunk_prefix():
    got = phone_digits(pd.Series(["020 7946 0000", "0044 20 7946 0000"]), "GB").tolist()
    assert got == ["442079460000", "442079460000"]


def test_the_region_of_numbers_written_with_a_country_code():
    uk = [f"+44 7700 900{i:03d}" for i in range(25)] + [f"0044 20 7946 {i:04d}" for i in range(5)]
    national = [f"07700 900{i:03d}" for i in range(50)]
    assert phone_region(pd.Series([*uk, *national, "+1 206 555 0100", "+353 1 234 5678", None])) == ("GB", 30 / 32)
    assert phone_region(pd.Series([f"+353 1 {i:07d}" for i in range(30)])) == ("IE", 1.0)
    assert phone_region(pd.Series([f"+1 206 555 {i:04d}" for i in range(30)]))[0] == "US"
    # Too few numbers carry a code, or no region holds most of them: nothing to say.
    assert phone_region(pd.Series([*national, *uk[:5]])) is None
    assert phone_region(pd.Series(uk[:15] + [f"+49 30 {i:07d}" for i in range(15)])) is None


def test_names_use_nicknames_and_ascii():
    assert nicknames()["bob"] == "robert"
    assert len(nicknames()) >= 300
    assert norm(["Bob", "ROBERT ", "Róbert"], ["ascii", "case", "whitespace", "name"]) == ["robert"] * 3


def test_address_numerals_and_abbreviations():
    steps = ["ascii", "case", "numerals", "symbols", "whitespace", "address"]
    assert norm(["1st Avenue North", "First Ave. N", "1 ave n"], steps) == ["1 ave n"] * 3


def test_organization_noise_words():
    steps = ["case", "symbols", "whitespace", "organization"]
    assert norm(["The Contoso Group, Inc.", "contoso llc"], steps) == ["contoso", "contoso"]


def test_symbols_and_whitespace():
    assert norm(["  O'Brien-Smith ", "o brien smith"], ["case", "symbols", "whitespace"]) == ["o brien smith"] * 2


def test_null_empty_and_bypass_values_become_missing():
    got = norm([None, "", "   ", "N/A", "Unknown", "TEST@test.com", "ok@x.com"], ["case", "whitespace", "email"])
    assert all(pd.isna(v) for v in got[:6])
    assert got[6] == "ok@x.com"


def test_invalid_email_never_matches():
    assert pd.isna(norm(["not-an-email"], ["case", "email"])[0])


def test_an_address_written_with_a_display_name_or_as_a_link_is_the_address():
    got = norm(
        ["Ann Lee<Ann@Example.com>", '"Lee, Ann" <ann@example.com>', "mailto:ann@example.com", "a<b"], DEFAULTS["email"]
    )
    assert got[:3] == ["ann@example.com"] * 3 and pd.isna(got[3])


def test_a_custom_number_written_in_groups_is_its_digits():
    got = norm(["521-21-2123", "521 21 2123", "521212123", "12.345.678", "X123-45", "Gold tier"], GENERIC)
    assert got == ["521212123", "521212123", "521212123", "12345678", "x123 45", "gold tier"]


def test_dates_compare_whatever_the_format():
    assert norm(["03/04/1990", "1990-03-04"], ["date"]) == ["1990-03-04", "1990-03-04"]


def test_alias_map(tmp_path):
    path = tmp_path / "companies.csv"
    path.write_text("alias,canonical\nMSFT,Microsoft\nBig Blue,IBM\n")
    mapping = read_alias_file(path, "companies")
    got = Normalizer(aliases={"companies": mapping}).apply(
        pd.Series(["msft", "Big  Blue", "other"]), ["alias:companies"]
    )
    assert got.tolist() == ["microsoft", "ibm", "other"]


def test_alias_file_with_bad_rows_names_the_lines(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("alias,canonical\nok,fine\nonly-one\n,empty\na,b,c\n")
    with pytest.raises(UserError) as err:
        read_alias_file(path, "bad")
    text = str(err.value)
    # Each row is named by its file, not told as a bare "line 3" that reads like a line of the configuration.
    assert "\n    - bad.csv line 3: expected 2 values (alias,canonical), got 1" in text
    assert "\n    - bad.csv line 4: alias and canonical must both be non-empty" in text
    assert "\n    - bad.csv line 5: expected 2 values (alias,canonical), got 3" in text


def test_alias_file_missing_or_without_header(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        read_alias_file(tmp_path / "nope.csv", "x")
    (tmp_path / "h.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="header"):
        read_alias_file(tmp_path / "h.csv", "x")


def test_last_name_first_and_punctuation():
    assert (
        norm(["Smith, Bob", "bob smith", "Bob  Smith."], ["ascii", "case", "name", "whitespace"])
        == ["robert smith"] * 3
    )


def test_postal_codes():
    assert norm(["5103", "05103", "05103-1234", "051031234", "SW1A 1AA", "sw1a1aa"], ["ascii", "case", "postal"]) == [
        "05103",
        "05103",
        "05103",
        "05103",
        "sw1a1aa",
        "sw1a1aa",
    ]


def test_initials_and_suffixes_are_not_names():
    steps = ["ascii", "case", "name", "whitespace"]
    assert norm(["David Turner B.", "David Turner Jr.", "david turner"], steps) == ["david turner"] * 3


def test_titles_before_a_full_name_are_not_the_name():
    full = ["ascii", "case", "name", "titles", "whitespace"]
    got = norm(["Mr. John Smith", "DR JOHN SMITH", "Sir Dr John Smith", "Smith, Mr John", "Mrs.", "Misty Lord"], full)
    assert got[:4] == ["john smith"] * 4
    assert pd.isna(got[4]) and got[5] == "misty lord"
    # A first name keeps a title unless asked (see docs/config/unify.md#normalizations-normalize).
    assert norm(["Sir", "Sir Walter"], ["ascii", "case", "name", "whitespace"]) == ["sir", "sir walter"]


def test_email_fixes_misspelt_provider_domains_only():
    got = norm(["Ann@GMIAL.com", "ann@gmail.con", "ann@gmail.com", "ann@gmial.org", "not an address"], EMAIL)
    assert got[:3] == ["ann@gmail.com"] * 3
    assert got[3] == "ann@gmial.org"
    assert pd.isna(got[4])


def test_email_corrects_a_domain_one_typing_error_from_a_single_provider():
    written = ["ann@gmaii.com", "ann@yahoo.cmo", "ann@hotmail..com", "ann@mail.com", "ann@mai.com", "ann@gmail.de"]
    got = norm(written, EMAIL)
    assert got[:3] == ["ann@gmail.com", "ann@yahoo.com", "ann@hotmail.com"]
    # A provider's own domain, a short domain and one no typing error away from a provider are left as written.
    assert got[3:] == ["ann@mail.com", "ann@mai.com", "ann@gmail.de"]


def test_a_domain_as_near_to_two_providers_is_not_guessed():
    # ``xmail.com`` is one letter from gmail.com, ymail.com and mail.com: which was meant is a guess.
    assert mail_domain_corrections(["xmail.com", "hotmail.co.uc", "yahoo.co"]) == {
        "hotmail.co.uc": "hotmail.co.uk",
        "yahoo.co": "yahoo.com",  # near yahoo.com and yahoo.ca, but listed as a misspelling of yahoo.com
    }


def test_personal_email_keeps_consumer_provider_addresses_only():
    got = norm(
        ["Ann.Lee@Gmail.com", "ann@gmial.com", "alee@acme-corp.example", "ann@icloud.com", None],
        [*EMAIL, "personal_email"],
    )
    assert got[:2] == ["ann.lee@gmail.com", "ann@gmail.com"]  # a misspelt provider is corrected first
    assert pd.isna(got[2]) and pd.isna(got[4])  # a work address counts as missing
    assert got[3] == "ann@icloud.com"


@pytest.mark.parametrize(
    "pattern, repl, flags",
    [
        (r"\s+", " ", 0),
        (r"[\s\-.]+", "", 0),
        (r"[^\w@ ]+|_", " ", 0),
        (r"\D+", "", 0),
        (r"\b(\d+)(?:st|nd|rd|th)\b", r"\1", re.IGNORECASE),
        (r"\s+(?:jr|sr|ii|iii|iv|[a-z])\.?$", "", re.IGNORECASE),
        (r"\s*(?:ext\.?|extension|x|#)\s*\d+\s*$", "", re.IGNORECASE),
    ],
)
def test_re_replace_agrees_with_python_re(pattern, repl, flags):
    # RE2 runs on ASCII values; these values probe where RE2 and re differ: \v and \x1c-\x1f are \s in Python,
    # \w / \d / \b are Unicode-aware in Python, and $ also matches before a trailing newline.
    values = [
        "a \x0b b\x1cc", "Smith Jr.", "SMITH  b.", "1ST Ave", "21st street", "555-010 1234 EXT. 7", "x12",
        "José  García", "caf\u00e9_bar", "\u0663\u0664 5", "n\u00a0b\u2003c", "line\n", "Smith jr\n", "a#3", "",
        None, "___", "O'Brien-Smith", "\u0130stanbul x 9",
    ]  # fmt: skip
    series = pd.Series(values, dtype="string")
    got = re_replace(series, pattern, repl, flags)
    compiled = re.compile(pattern, flags)
    assert got.tolist() == [pd.NA if v is None else compiled.sub(repl, v) for v in values]
    assert got.dtype == "string" and got.index.equals(series.index)


@pytest.mark.parametrize("pattern", [r"^([^,]*),(.*)$", r"^(.*@)([^@]*)$", r"@([^@]*)$"])
def test_re_extract_agrees_with_pandas(pattern):
    values = ["Smith, Bob", "Bob Smith", None, "García, José", "a,b\n", "x,y,z", "", "a@b.com", "ü@ß.de", "@", "a@b@c"]
    series = pd.Series(values, dtype="string")
    got = re_extract(series, pattern)
    expected = series.astype(object).str.extract(pattern).astype("string")
    pd.testing.assert_frame_equal(got, expected, check_column_type=False)


def test_map_words_agrees_with_python_split_and_join():
    table = {"bob": "robert", "st": "street", "Ave": "avenue", "é": "e"}
    values = ["Bob  smith", None, "", "  ", "x\tBob", "é bob", "1 Main St", "Ave st", "a\x1cbob", "n\u00a0bob", " st "]
    series = pd.Series(values, dtype="string")
    for lower in (False, True):
        expected = [
            pd.NA if v is None else " ".join(table.get(w.lower() if lower else w, w) for w in v.split()) for v in values
        ]
        assert map_words(series, table, lower).tolist() == expected


def test_a_normalizer_reuses_what_it_computed_and_gives_what_a_fresh_one_gives(monkeypatch):
    values = pd.Series(
        ["Ann@Gmail.com ", "n/a", "bob@work.org", None, "ann@gmail.com", "carl@yahoo.com"], dtype="string"
    )
    personal = [*EMAIL, "personal_email"]
    reused = Normalizer(bypass_values=("n/a",))
    first = reused.apply(values, EMAIL)
    calls = []
    real = Normalizer._step
    monkeypatch.setattr(Normalizer, "_step", lambda self, name: calls.append(name) or real(self, name))
    # The distinct values only (as the model passes them), then one step past what was computed.
    again = reused.apply(pd.Series(values.dropna().unique(), dtype="string"), EMAIL)
    longer = reused.apply(values, personal)
    assert calls == ["personal_email"]
    fresh = Normalizer(bypass_values=("n/a",))
    assert first.tolist() == fresh.apply(values, EMAIL).tolist()
    assert again.tolist() == fresh.apply(pd.Series(values.dropna().unique(), dtype="string"), EMAIL).tolist()
    assert longer.tolist() == fresh.apply(values, personal).tolist()
    assert longer.fillna("-").tolist() == ["ann@gmail.com", "-", "-", "-", "ann@gmail.com", "carl@yahoo.com"]
    # A value it has not seen: every step runs again, and after forget() nothing is reused.
    calls.clear()
    assert reused.apply(pd.Series(["dan@gmail.com"], dtype="string"), EMAIL).tolist() == ["dan@gmail.com"]
    reused.forget()
    reused.apply(values, EMAIL)
    assert calls == EMAIL + EMAIL


def test_the_three_spellings_of_a_name_share_the_plain_name(monkeypatch):
    values = pd.Series(["Bob Smith", "Smith, Sam", "  ", None, "Liz O'Neil Jr", "bob smith"], dtype="string")
    shared = Normalizer()
    calls = []
    real = Normalizer._step
    monkeypatch.setattr(Normalizer, "_step", lambda self, name: calls.append(name) or real(self, name))
    spelled = {
        v: shared.apply(values, ["ascii", "case", v, "whitespace"]).tolist() for v in ("name_plain", "name", "name_alt")
    }
    # ascii, case and the plain name once; then each fold and its whitespace.
    assert calls.count("name_plain") == 1 and calls.count("ascii") == 1
    monkeypatch.undo()
    for v, got in spelled.items():
        assert got == Normalizer().apply(values, ["ascii", "case", v, "whitespace"]).tolist(), v
    assert [spelled[v][1] for v in ("name_plain", "name", "name_alt")] == [
        "sam smith",
        "samuel smith",
        "samantha smith",
    ]
    assert spelled["name"][0] == "robert smith" and spelled["name"][4] == "elizabeth o neil"
