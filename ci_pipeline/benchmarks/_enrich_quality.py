"""Quality and speed of the offline enrichments against the generator's truth (for ``ci-pipeline bench enrich``).

The generator draws each person's true address (house number, street name and type, unit, city, state, ZIP code)
and e-mail addresses (personal at a mail provider, work at the employer's domain), then writes them the way
systems do: ``Street``/``St.``, ``Apt 4``/``#4``/``, Unit 4``, case noise, typing errors in street names, ZIP+4
and lost leading zeros, ``US``/``USA``/``United States``, misspelt mail domains. These functions build such
records with the generator's own code, run the providers on them and compare with the truth, field by field.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd

from ci_pipeline.enrich.address import AddressProvider, _parse_one
from ci_pipeline.enrich.email import EmailProvider
from ci_pipeline.enrich.provider import EnrichmentInputs
from ci_pipeline.generate.dataset import DEFAULT_AS_OF
from ci_pipeline.generate.noise import recase, take
from ci_pipeline.generate.pools import STREET_SUFFIXES, build_pools
from ci_pipeline.generate.population import build_people
from ci_pipeline.generate.tables import Identity, person_emails

#: Unit designators the standard form may use for the same unit (``APT 4``, ``UNIT 4``, ``# 4``): the truth knows
#: the unit number only.
_DESIGNATOR = re.compile(r" (?:APT|UNIT|#) ")


def _ids(n: int) -> pd.Series:
    return pd.Series(np.char.add("C", np.char.zfill(np.arange(n).astype("U8"), 8)), dtype="string")


def _values(result, ids: pd.Series) -> pd.DataFrame:
    """The Values of a result as columns, one row per id in ``ids``' order (empty where the provider has none)."""
    frame = pd.DataFrame(list(result.values["Values"]), index=result.values["CustomerId"].to_numpy())
    return frame.reindex(ids.to_numpy()).reset_index(drop=True)


def _identities(people: int, seed: int) -> tuple[Identity, object, tuple[pd.Series, pd.Series]]:
    pools = build_pools(seed)
    rng = np.random.default_rng(seed)
    person = build_people(people, pools, rng, DEFAULT_AS_OF)
    emails = person_emails(person, pools)
    who = Identity(
        person, pools, emails, np.arange(people), rng,
        nickname_p=0.0, previous_name_p=0.0, old_address_p=0.5, home_phone_p=0.0, work_email_p=0.35,
    )  # fmt: skip
    return who, pools, emails


def address_quality(people: int = 20_000, seed: int = 7) -> dict[str, float | int]:
    """Per-field accuracy, status counts and speed of the address provider on ``people`` generated addresses.

    Returns:
        ``accuracy_<field>`` (share of records whose standardized field equals the truth), the same for records
        whose street name has no typing error (``accuracy_Street1_no_typo``), the provider's counts, the number of
        distinct street lines, seconds and lines per second.
    """
    who, pools, _ = _identities(people, seed)
    rng = np.random.default_rng(seed + 1)
    n = who.n
    profiles = pd.DataFrame(
        {
            "CustomerId": _ids(n),
            "Address1": who.street_line(0.55, 0.01),
            "City": recase(who.city(), rng, 0.05, 0.03),
            "State": who.state(),
            "PostalCode": who.zip(0.1, 0.3),
            "Country": take(
                np.array(["US", "USA", "United States"], dtype=object), rng.choice(3, n, p=[0.7, 0.2, 0.1])
            ),
        }
    ).astype("string")
    name = take(pools.street_names, who.street).str.upper()
    street_type = take(np.array([a.upper() for _, a in STREET_SUFFIXES], dtype=object), who.suffix)
    unit = pd.Series(np.where(who.unit > 0, " " + pd.Series(who.unit).astype(str), ""))
    truth = {
        "Street1": pd.Series(who.street_no).astype(str) + " " + name + " " + street_type + unit,
        "City": who.city().str.upper(),
        "StateOrProvince": who.state(),
        "ZipOrPostalCode": take(pools.zips, who.city_idx),
        "CountryOrRegion": pd.Series("US", index=range(n)),
    }
    started, cpu = time.perf_counter(), time.process_time()
    result = AddressProvider().enrich(EnrichmentInputs(profiles=profiles))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    got = _values(result, profiles["CustomerId"])
    got["Street1"] = got["Street1"].str.replace(_DESIGNATOR, " ", regex=True)
    got["ZipOrPostalCode"] = got["ZipOrPostalCode"].str[:5]
    written = profiles["Address1"].str.upper().fillna("").to_numpy(dtype=str)
    no_typo = np.char.find(written, name.to_numpy(dtype=str)) >= 0
    report: dict[str, float | int] = {}
    for field, expected in truth.items():
        hit = (got[field].astype("string") == expected.astype("string")).fillna(False).to_numpy()
        report[f"accuracy_{field}"] = round(float(hit.mean()), 4)
        if field == "Street1":
            report["accuracy_Street1_no_typo"] = round(float(hit[no_typo].mean()), 4)
    lines = int(result.report["distinct_street_lines"])
    return {
        "people": n,
        **report,
        **dict(result.counts),
        **dict(result.report),
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "lines_per_second": round(lines / seconds, 1) if seconds else 0.0,
        "parser_lines_per_second": _parser_rate(profiles["Address1"]),
    }


def _parser_rate(lines: pd.Series, sample: int = 3000) -> float:
    """Street lines per CPU second through the parser alone (no fast path), on up to ``sample`` distinct lines."""
    distinct = lines.dropna().drop_duplicates().head(sample).tolist()
    started = time.process_time()
    for line in distinct:
        _parse_one(line)
    seconds = time.process_time() - started
    return round(len(distinct) / seconds, 1) if seconds else 0.0


def email_quality(people: int = 20_000, seed: int = 7) -> dict[str, float | int]:
    """How often the e-mail provider calls a personal address free mail and a work address business.

    The generator's personal addresses are at mail providers and its work addresses at employers' domains; some
    domains are misspelt (``gmial.com``), which no list knows, so they count against the figure as in real data.
    """
    who, _, (personal, work) = _identities(people, seed)
    address = who.email_text(0.1, 0.02)
    is_work = (address.str.lower() == work.str.lower()).fillna(False).to_numpy()
    profiles = pd.DataFrame({"CustomerId": _ids(who.n), "Email": address})
    started, cpu = time.perf_counter(), time.process_time()
    result = EmailProvider().enrich(EnrichmentInputs(profiles=profiles))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    got = _values(result, profiles["CustomerId"])
    kind = got["Class"].to_numpy()
    return {
        "people": who.n,
        "accuracy_personal_free_mail": round(float((kind[~is_work] == "FreeMail").mean()), 4),
        "accuracy_work_business": round(float((kind[is_work] == "Business").mean()), 4) if is_work.any() else 1.0,
        **dict(result.counts),
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
    }
