"""`ci-pipeline bench enrich-providers --people N [--seed S]`: address and e-mail enrichment accuracy and speed.

Accuracy is against the generator's truth. The generator draws each person's true address (house number, street
name and type, unit, city, state, ZIP code) and e-mail addresses (personal at a mail provider, work at the
employer's domain), then writes them the way systems do: ``Street``/``St.``, ``Apt 4``/``#4``/``, Unit 4``, case
noise, typing errors in street names, ZIP+4 and lost leading zeros, ``US``/``USA``/``United States``, misspelt mail
domains. These functions build such records with the generator's own code, run the providers on them and compare
with the truth, field by field. The command prints one JSON line: ``address`` (see :func:`address_quality`) and
``email`` (see :func:`email_quality`), each with its provider's wall and CPU seconds and the process's peak memory
(RSS) up to and including it (generating the people counts too).
"""

from __future__ import annotations

import json
import re
import resource
import time

import numpy as np
import pandas as pd

from ci_pipeline.enrich.address import AddressProvider, _clean, _parse_one, fast_street_lines
from ci_pipeline.enrich.email import EmailProvider
from ci_pipeline.enrich.provider import EnrichmentInputs
from ci_pipeline.errors import UserError
from ci_pipeline.generate.dataset import DEFAULT_AS_OF
from ci_pipeline.generate.noise import recase, take
from ci_pipeline.generate.pools import STREET_SUFFIXES, build_pools
from ci_pipeline.generate.population import build_people
from ci_pipeline.generate.tables import Identity, person_emails

#: Unit designators the standard form may use for the same unit (``APT 4``, ``UNIT 4``, ``# 4``): the truth knows
#: the unit number only.
_DESIGNATOR = re.compile(r" (?:APT|UNIT|#) ")


def register(subparsers) -> None:
    parser = subparsers.add_parser("enrich-providers", help="address and e-mail enrichment accuracy and speed")
    parser.add_argument("--people", type=int, default=20_000, help="people to generate (default 20000)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Print the address and e-mail figures as one JSON line."""
    if args.people < 1:
        raise UserError(f"--people {args.people}: give a positive number of people to generate")
    figures: dict = {"benchmark": "enrich-providers", "people": args.people, "seed": args.seed}
    for name, measure in (("address", address_quality), ("email", email_quality)):
        figures[name] = measure(args.people, args.seed)
        # ru_maxrss only grows: read after each provider, it is the peak up to and including that provider.
        figures[name]["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(figures))
    return 0


def _ids(n: int) -> pd.Series:
    return pd.Series(np.char.add("C", np.char.zfill(np.arange(n).astype("U8"), 8)), dtype="string")


def _values(result, ids: pd.Series) -> pd.DataFrame:
    """The Values of a result as columns (its flat fields), one row per id in ``ids``' order (empty where the
    provider has none)."""
    frame = result.fields.set_index("CustomerId")
    return frame.reindex(ids.astype("string")).reset_index(drop=True)


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
        whose street name has no typing error (``accuracy_Street1_no_typo``) and for those of them whose street
        line is not of the fast path's shape but goes through the parser (``accuracy_Street1_parser``, over
        ``parser_records``: the fast path takes most generated lines, so the overall figures barely show a broken
        parser), the provider's counts, the number of distinct street lines, seconds and lines per second.
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
    parser = no_typo & fast_street_lines(_clean(profiles["Address1"])).isna().to_numpy()
    report: dict[str, float | int] = {}
    for field, expected in truth.items():
        hit = (got[field].astype("string") == expected.astype("string")).fillna(False).to_numpy()
        report[f"accuracy_{field}"] = round(float(hit.mean()), 4)
    street = (got["Street1"].astype("string") == truth["Street1"]).fillna(False).to_numpy()
    report["accuracy_Street1_no_typo"] = round(float(street[no_typo].mean()), 4)
    report["accuracy_Street1_parser"] = round(float(street[parser].mean()), 4) if parser.any() else 1.0
    report["parser_records"] = int(parser.sum())
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
