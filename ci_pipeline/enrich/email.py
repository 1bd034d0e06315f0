"""E-mail classification: what kind of address each profile's e-mail is.

Every address is checked for syntax (the dot-atom form of RFC 5322 that mail systems accept at sign-up: ASCII
local part, a dotted host name with a letter top-level domain, at most 64 + 254 characters; quoted local parts
and IP-address domains count as invalid) and its domain is looked up in three lists:

- free and consumer mail providers: ``data/free_mail_domains.txt`` (shipped, with the provider's name);
- disposable (throw-away) mail services: the ``disposable-email-domains`` package, the list that community keeps
  up to date; a sub-domain of a listed domain is disposable too;
- role mailboxes (``info@``, ``sales@``, RFC 2142 and common ones): ``data/role_local_parts.txt``.

``Class`` is one of ``Invalid``, ``Disposable``, ``FreeMail`` and ``Business`` (a valid address at any other
domain), in that order of precedence; ``Role`` is reported beside it (``info@acme.com`` is a Business role
address). The work is done once per distinct address and once per distinct domain.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

import disposable_email_domains
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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

if TYPE_CHECKING:
    from ci_pipeline.enrich.provider import ProviderContext

PROVIDER = "ci_pipeline"
ENRICHMENT_TYPE = "Email"
DEFAULT_COLUMN = "Email"
INVALID, DISPOSABLE, FREE_MAIL, BUSINESS = "Invalid", "Disposable", "FreeMail", "Business"

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = (
    rf"^(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?P<domain>(?:{_LABEL}\.)+(?:[A-Za-z]{{2,63}}|xn--[A-Za-z0-9-]{{1,59}}))$"
)
_PARAMS = ("column", "type")


@cache
def free_mail_domains() -> dict[str, str]:
    """The shipped free-mail list: domain -> provider name."""
    lines = _data_lines("free_mail_domains.txt")
    return dict(line.split("\t", 1) for line in lines)


@cache
def role_local_parts() -> frozenset[str]:
    """The shipped role mailbox names (lower case)."""
    return frozenset(_data_lines("role_local_parts.txt"))


def _data_lines(name: str) -> list[str]:
    text = resources.files("ci_pipeline.enrich").joinpath("data", name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


class EmailProvider:
    """The class of each profile's e-mail address (``EnrichmentType`` ``Email``).

    Values keys: ``Domain`` (lower case; None when invalid), ``Class``, ``FreeMailProvider`` (e.g. ``Gmail``, or
    None), ``Disposable``, ``Role`` and ``Valid`` (booleans). Profiles without an e-mail get no row and are counted
    as ``no_email``.

    Args:
        column: the profile column with the e-mail address (default ``Email``).
        enrichment: the configured enrichment's name, for messages.
        enrichment_type: the published ``EnrichmentType`` (default ``Email``).
    """

    name = PROVIDER
    needs: frozenset[str] = frozenset()

    def __init__(self, column: str = DEFAULT_COLUMN, enrichment: str = "", enrichment_type: str = ENRICHMENT_TYPE):
        self.column = column
        self.enrichment_type = enrichment_type
        self.where = f"enrich.enrichments.{enrichment or 'email'}"

    def enrich(self, inputs: EnrichmentInputs) -> EnrichmentResult:
        """Classify every profile's e-mail address."""
        profiles = inputs.profiles
        if self.column not in profiles.columns:
            raise EnrichmentFailed(
                f"{self.where}: the customer profile has no {self.column!r} column"
                f"{did_you_mean(self.column, [str(c) for c in profiles.columns])}; map an email field in "
                "unify, or name the profile's e-mail column in params.column"
            )
        address = profiles[self.column].astype("string").str.strip()
        has = (address.notna() & (address != "")).to_numpy()
        codes, distinct = pd.factorize(address[has])
        values = classify(pd.Series(distinct, dtype="string")).take(codes).reset_index(drop=True)
        counts = {
            "profiles": len(profiles),
            "no_email": int((~has).sum()),
            "valid": int(values["Valid"].sum()),
            "invalid": int((values["Class"] == INVALID).sum()),
            "free_mail": int((values["Class"] == FREE_MAIL).sum()),
            "business": int((values["Class"] == BUSINESS).sum()),
            "disposable": int((values["Class"] == DISPOSABLE).sum()),
            "role": int(values["Role"].sum()),
        }
        if not len(values):
            return EnrichmentResult(values=empty_values(), counts=counts)
        frame, fields = customer_values(profiles["CustomerId"][has], self.enrichment_type, values)
        return EnrichmentResult(
            values=frame, counts=counts, report={"distinct_domains": int(values["Domain"].nunique())}, fields=fields
        )


def build(params: Mapping, context: ProviderContext | None = None) -> EmailProvider:
    """The provider for an enrichment's ``params`` (``column``, ``type``); needs no connection.

    Bad parameters are an :class:`EnrichmentFailed` naming the key (``enrich.enrichments.<name>.params.<key>``).
    """
    where = params_path(params, _PARAMS, context, "email", "e-mail")
    column = params.get("column", DEFAULT_COLUMN)
    if not isinstance(column, str) or not column.strip():
        raise EnrichmentFailed(
            f"{where}.column: give the customer profile column that holds the e-mail address, e.g. Email"
        )
    kind = params.get("type", ENRICHMENT_TYPE)
    if not isinstance(kind, str) or not kind.strip() or len(kind) > 100:
        raise EnrichmentFailed(f"{where}.type: give the EnrichmentType to publish, e.g. {ENRICHMENT_TYPE}")
    provider = EmailProvider(column=column.strip(), enrichment=enrichment_name(context), enrichment_type=kind.strip())
    provider.name = getattr(context, "project", None) or PROVIDER
    return provider


def classify(addresses: pd.Series) -> pd.DataFrame:
    """``Domain``, ``Class``, ``FreeMailProvider``, ``Disposable``, ``Role``, ``Valid`` per address (non-missing
    strings), on the same index. Arrow kernels per address; the lists are looked up once per distinct domain."""
    text = arrow_strings(addresses)
    found = pc.extract_regex(text, _ADDRESS)
    local = pc.utf8_lower(found.field("local"))
    valid = (
        found.is_valid().to_numpy(zero_copy_only=False)
        & (pc.utf8_length(found.field("local")).to_numpy(zero_copy_only=False) <= 64)
        & (pc.utf8_length(text).to_numpy(zero_copy_only=False) <= 254)
    )
    domain = pd.Series(pd.arrays.ArrowStringArray(pc.utf8_lower(found.field("domain"))), index=addresses.index)
    domain = domain.where(valid)
    codes, distinct = pd.factorize(domain)
    free = free_mail_domains()
    known = codes >= 0
    provider = np.full(len(codes), None, dtype=object)
    disposable = np.zeros(len(codes), dtype=bool)
    if len(distinct):
        provider[known] = np.array([free.get(d) for d in distinct], dtype=object)[codes[known]]
        disposable[known] = np.array([_is_disposable(d) for d in distinct], dtype=bool)[codes[known]]
    mailbox = pc.replace_substring_regex(local, r"\+.*$", "")
    roles = pa.array(sorted(role_local_parts()), type=pa.large_string())
    role = pc.is_in(mailbox, value_set=roles).to_numpy(zero_copy_only=False) & valid
    kind = np.select([~valid, disposable, pd.notna(provider)], [INVALID, DISPOSABLE, FREE_MAIL], BUSINESS)
    return pd.DataFrame(
        {
            "Domain": domain.to_numpy(dtype=object, na_value=None),
            "Class": kind.astype(object),
            "FreeMailProvider": provider,
            "Disposable": disposable,
            "Role": role,
            "Valid": valid,
        },
        index=addresses.index,
    )


def _is_disposable(domain: str) -> bool:
    """The domain or one of its parent domains is on the disposable list (and not on its allow list)."""
    labels = domain.split(".")
    candidates = {".".join(labels[i:]) for i in range(len(labels) - 1)}
    blocked = disposable_email_domains.blocklist
    return bool(candidates & blocked) and domain not in disposable_email_domains.allowlist
