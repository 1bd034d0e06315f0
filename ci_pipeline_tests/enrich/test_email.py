"""The e-mail provider: each class, role addresses, invalid syntax, the shipped lists."""

from __future__ import annotations

import json

import disposable_email_domains
import pandas as pd
import pytest

from ci_pipeline.enrich.email import EmailProvider, build, classify, free_mail_domains, role_local_parts
from ci_pipeline.enrich.provider import EnrichmentFailed, EnrichmentInputs


def _run(emails: dict[str, str | None], **kwargs):
    profiles = pd.DataFrame({"CustomerId": list(emails), "Email": list(emails.values())}).astype("string")
    result = EmailProvider(**kwargs).enrich(EnrichmentInputs(profiles=profiles))
    values = [json.loads(v) for v in result.values["Values"]]
    return result, dict(zip(result.values["CustomerId"], values, strict=True))


def test_each_class_and_role_addresses():
    assert "mailinator.com" in disposable_email_domains.blocklist
    result, values = _run(
        {
            "free": " Jane.Doe@GMail.com ",
            "business": "jane@acme-corp.com",
            "role": "info@acme-corp.com",
            "role_tagged": "Sales+EU@acme.co.uk",
            "disposable": "x1@mailinator.com",
            "disposable_sub": "x2@eu.mailinator.com",
            "no_at": "jane.doe.gmail.com",
            "two_at": "jane@@gmail.com",
            "no_tld": "jane@localhost",
            "space": "jane doe@gmail.com",
            "dots": "jane..doe@gmail.com",
            "long_local": "a" * 65 + "@gmail.com",
            "missing": None,
            "blank": "   ",
        }
    )
    assert values["free"] == {
        "Domain": "gmail.com",
        "Class": "FreeMail",
        "FreeMailProvider": "Gmail",
        "Disposable": False,
        "Role": False,
        "Valid": True,
    }
    assert values["business"] == {
        **values["free"],
        "Domain": "acme-corp.com",
        "Class": "Business",
        "FreeMailProvider": None,
    }
    assert (values["role"]["Class"], values["role"]["Role"]) == ("Business", True)
    assert (values["role_tagged"]["Domain"], values["role_tagged"]["Role"]) == ("acme.co.uk", True)
    for key in ("disposable", "disposable_sub"):
        assert (values[key]["Class"], values[key]["Disposable"]) == ("Disposable", True)
    for key in ("no_at", "two_at", "no_tld", "space", "dots", "long_local"):
        assert values[key] == {
            "Domain": None,
            "Class": "Invalid",
            "FreeMailProvider": None,
            "Disposable": False,
            "Role": False,
            "Valid": False,
        }, key
    assert "missing" not in values and "blank" not in values
    assert result.counts == {
        "profiles": 14,
        "no_email": 2,
        "valid": 6,
        "invalid": 6,
        "free_mail": 1,
        "business": 3,
        "disposable": 2,
        "role": 2,
    }
    assert result.values["CustomerId"].tolist() == sorted(values)


def test_each_distinct_address_is_classified_once_per_index():
    addresses = pd.Series(["a@gmail.com", "b@gmail.com", "a@gmail.com"], index=[10, 20, 30], dtype="string")
    classes = classify(addresses)
    assert classes.index.tolist() == [10, 20, 30]
    assert classes["Class"].tolist() == ["FreeMail"] * 3


def test_the_shipped_lists_are_clean():
    free = free_mail_domains()
    assert len(free) > 50 and free["outlook.com"] == "Outlook"
    assert all(d == d.lower().strip() and "." in d and name.strip() for d, name in free.items())
    roles = role_local_parts()
    assert {"info", "sales", "support", "postmaster", "abuse"} <= roles
    assert all(r == r.lower().strip() and "@" not in r for r in roles)
    # A free-mail provider is never on the disposable list, or it would never be reported as free mail.
    assert not set(free) & disposable_email_domains.blocklist


def test_missing_column_and_bad_params_are_clear_errors():
    profiles = pd.DataFrame({"CustomerId": ["a"], "Mail": ["a@b.com"]})
    with pytest.raises(EnrichmentFailed, match=r"no 'Email' column \(did you mean 'Mail'\?\); map an email field"):
        EmailProvider().enrich(EnrichmentInputs(profiles=profiles))
    renamed = build({"column": "Mail"}).enrich(EnrichmentInputs(profiles=profiles))
    assert json.loads(renamed.values["Values"][0])["Domain"] == "b.com"
    with pytest.raises(EnrichmentFailed, match=r"params\.columns: not a parameter of the e-mail provider"):
        build({"columns": "Mail"})
    with pytest.raises(EnrichmentFailed, match=r"params\.column: give the customer profile column"):
        build({"column": ""})
    typed = build({"column": "Mail", "type": "EmailClass"}).enrich(EnrichmentInputs(profiles=profiles))
    assert typed.values["EnrichmentType"].tolist() == ["EmailClass"]
    with pytest.raises(EnrichmentFailed, match=r"params\.type: give the EnrichmentType"):
        build({"type": 3})


def test_no_e_mail_at_all_gives_no_rows():
    result, values = _run({"a": None, "b": ""})
    assert values == {} and list(result.values.columns) == ["CustomerId", "EnrichmentType", "Values"]
    assert result.counts["no_email"] == 2 and result.counts["valid"] == 0
