"""The real people behind the sample: households, identities, behaviour and which sources know them.

Everything is drawn with numpy from the pools; dates are whole days since 1970-01-01 (int64) so arithmetic on a
million people stays vectorised.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ci_pipeline.generate.noise import sequential_ids
from ci_pipeline.generate.pools import (
    BRANDS_PER_CATEGORY,
    EMAIL_DOMAIN_WEIGHTS,
    EMAIL_DOMAINS,
    N_CATEGORIES,
    STREET_SUFFIX_WEIGHTS,
    Pools,
)

SEGMENTS = ("champion", "loyal", "regular", "occasional", "bargain_hunter")
SEGMENT_WEIGHTS = np.array([0.08, 0.17, 0.35, 0.25, 0.15])
#: Mean orders per active year, chance of churning for good, and sessions per order, per segment.
ORDER_RATE = np.array([9.0, 5.0, 2.6, 0.9, 2.0])
CHURN_PROB = np.array([0.05, 0.12, 0.22, 0.4, 0.32])
#: Customer tables in a fixed order; a person is in one to three of them.
CUSTOMER_SOURCES = ("crm", "ecommerce", "loyalty", "support")
SOURCE_WEIGHTS = np.array([0.3, 0.38, 0.2, 0.12])
SOURCES_PER_PERSON_P = np.array([0.45, 0.37, 0.18])
CATEGORY_POPULARITY = np.array([0.16, 0.14, 0.14, 0.08, 0.1, 0.09, 0.07, 0.1, 0.07, 0.05])


def _days(date: str) -> int:
    return int(np.datetime64(date, "D").astype(np.int64))


def area_codes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Plausible US area codes (201-989, never an N11 service code such as 311)."""
    code = rng.integers(201, 990, n)
    return np.where(code % 100 == 11, code + 1, code)


def _phone(area: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    exchange = rng.integers(200, 1000, size=len(area))
    line = rng.integers(0, 10000, size=len(area))
    return area.astype(np.int64) * 10_000_000 + exchange * 10_000 + line


def _split_households(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sizes = rng.choice([1, 2, 3, 4, 5], p=[0.48, 0.3, 0.12, 0.07, 0.03], size=n)
    ends = np.cumsum(sizes)
    count = int(np.searchsorted(ends, n)) + 1
    sizes = sizes[:count].copy()
    sizes[-1] -= ends[count - 1] - n
    starts = np.cumsum(sizes) - sizes
    household = np.repeat(np.arange(count), sizes)
    position = np.arange(n) - starts[household]
    return household, position, sizes[household]


def build_people(n: int, pools: Pools, rng: np.random.Generator, as_of: str) -> pd.DataFrame:
    """Draw ``n`` real people with their true identity and behaviour.

    Args:
        n: number of people.
        pools: value pools from :func:`ci_pipeline.generate.pools.build_pools`.
        rng: the random generator for people.
        as_of: ISO date at which all activity ends.

    Returns:
        One row per person, ordered by ``person_id``.
    """
    end_day = _days(as_of)
    household, position, size = _split_households(n, rng)
    head = np.arange(n) - position
    is_head = position == 0
    partner = (position == 1) & ((size > 2) | (rng.random(n) < 0.75))
    child = ~is_head & ~partner

    n_households = int(household.max()) + 1
    hh_has_child = np.zeros(n_households, dtype=bool)
    np.logical_or.at(hh_has_child, household, child)
    head_age = np.where(hh_has_child[household], rng.uniform(44, 86, n), rng.uniform(21, 86, n))[head]
    age = np.where(
        is_head,
        head_age,
        np.where(partner, head_age + rng.normal(0, 4, n), head_age - rng.uniform(20, 34, n)),
    )
    age = np.clip(age, 18.2, 95)
    birth = (end_day - age * 365.25).astype(np.int64)

    gender = np.where(rng.random(n) < 0.51, "F", "M").astype(object)
    gender = np.where(partner & (rng.random(n) < 0.9), np.where(gender[head] == "F", "M", "F"), gender)
    female = gender == "F"
    first = np.where(
        female,
        rng.choice(pools.female_first, p=pools.female_weights, size=n),
        rng.choice(pools.male_first, p=pools.male_weights, size=n),
    )
    lookalike_of = np.full(n, -1, dtype=np.int64)
    # Parent and child with the same name and address (Robert Smith Sr. and Jr.).
    junior = child & (gender == gender[head]) & (rng.random(n) < 0.2)
    first = np.where(junior, first[head], first)
    lookalike_of[junior] = head[junior]
    # Twins: the second child shares the first child's birth date (and address and surname).
    twin = child & (position >= 3) & child[np.maximum(np.arange(n) - 1, 0)] & (rng.random(n) < 0.3) & ~junior
    twin_of = np.arange(n) - 1
    birth = np.where(twin, birth[twin_of], birth)
    lookalike_of[twin] = twin_of[twin]

    hh_last = rng.choice(len(pools.last_names), p=pools.last_weights, size=n_households)
    own_last = rng.choice(len(pools.last_names), p=pools.last_weights, size=n)
    keeps_own = partner & (rng.random(n) < 0.25)
    last = np.where(keeps_own, own_last, hh_last[household])
    # Married into the household's name: older records still carry the previous surname.
    changed_surname = partner & ~keeps_own & female & (rng.random(n) < 0.6)
    previous_last = np.where(changed_surname, own_last, -1)

    street_no = np.minimum(rng.zipf(1.6, n_households), 9800) + rng.integers(1, 200, n_households)
    street = rng.integers(0, len(pools.street_names), n_households)
    suffix = rng.choice(len(STREET_SUFFIX_WEIGHTS), p=STREET_SUFFIX_WEIGHTS, size=n_households)
    unit = np.where(rng.random(n_households) < 0.18, rng.integers(1, 40, n_households), 0)
    city = rng.integers(0, len(pools.cities), n_households)
    home_phone = np.where(rng.random(n_households) < 0.45, _phone(pools.area_codes[city], rng), 0)
    moved = rng.random(n) < 0.13
    old_city = np.where(rng.random(n) < 0.6, city[household], rng.integers(0, len(pools.cities), n))

    local_area = rng.random(n) < 0.7
    area = np.where(local_area, pools.area_codes[city[household]], area_codes(rng, n))
    mobile = _phone(area, rng)

    has_nick = pools.nickname_of[first, 0] >= 0
    goes_by_nickname = has_nick & (rng.random(n) < 0.35)
    segment = rng.choice(len(SEGMENTS), p=SEGMENT_WEIGHTS, size=n)
    customer_since = end_day - rng.integers(20, 6 * 365, n)
    window = end_day - customer_since
    churned = (rng.random(n) < CHURN_PROB[segment]) & (window > 120)
    churn_day = np.where(churned, customer_since + (window * rng.uniform(0.25, 0.95, n)).astype(np.int64), -1)
    active_until = np.where(churned, churn_day, end_day)

    # Three distinct favourite categories (Gumbel top-k over popularity), a favourite brand in each.
    keys = np.log(CATEGORY_POPULARITY) + rng.gumbel(size=(n, N_CATEGORIES))
    favourite_categories = np.argsort(-keys, axis=1)[:, :3]
    favourite_brands = rng.integers(0, BRANDS_PER_CATEGORY, size=(n, 3))
    brand_loyalty = np.where(segment <= 1, rng.beta(5, 2, n), rng.beta(2, 3, n))

    source_keys = np.log(SOURCE_WEIGHTS) + rng.gumbel(size=(n, len(CUSTOMER_SOURCES)))
    source_keys[:, 2] += np.where(segment <= 1, 1.0, 0.0)  # loyal buyers join the loyalty programme
    source_keys[:, 3] += np.where(churned, 0.8, 0.0)  # unhappy customers call support
    n_sources = rng.choice([1, 2, 3], p=SOURCES_PER_PERSON_P, size=n)
    rank = np.argsort(np.argsort(-source_keys, axis=1), axis=1)
    member = rank < n_sources[:, None]

    email_pattern = rng.integers(0, 8, n)
    email_domain = rng.choice(len(EMAIL_DOMAINS), p=EMAIL_DOMAIN_WEIGHTS, size=n)
    email_number = rng.integers(1, 100, n)
    shared_email = partner & (rng.random(n) < 0.25)
    has_work_email = rng.random(n) < 0.25
    company = rng.integers(0, len(pools.companies), n)

    return pd.DataFrame(
        {
            "person_id": _person_ids(n),
            "household": household,
            "head": head,
            "role": np.where(is_head, "head", np.where(partner, "partner", "child")),
            "gender": gender,
            "first": first,
            "goes_by_nickname": goes_by_nickname,
            "last": last,
            "previous_last": previous_last,
            "birth": birth,
            "lookalike_of": lookalike_of,
            "street_no": street_no[household],
            "street": street[household],
            "suffix": suffix[household],
            "unit": unit[household],
            "city": city[household],
            "moved": moved,
            "old_street_no": rng.integers(1, 3000, n),
            "old_street": rng.integers(0, len(pools.street_names), n),
            "old_suffix": rng.choice(len(STREET_SUFFIX_WEIGHTS), p=STREET_SUFFIX_WEIGHTS, size=n),
            "old_city": old_city,
            "mobile": mobile,
            "home_phone": home_phone[household],
            "email_pattern": email_pattern,
            "email_domain": email_domain,
            "email_number": email_number,
            "shared_email": shared_email,
            "has_work_email": has_work_email,
            "company": company,
            "segment": segment,
            "order_rate": ORDER_RATE[segment] * rng.lognormal(0, 0.35, n),
            "customer_since": customer_since,
            "churned": churned,
            "churn_day": churn_day,
            "active_until": active_until,
            "fav_cat0": favourite_categories[:, 0],
            "fav_cat1": favourite_categories[:, 1],
            "fav_cat2": favourite_categories[:, 2],
            "fav_brand0": favourite_brands[:, 0],
            "fav_brand1": favourite_brands[:, 1],
            "fav_brand2": favourite_brands[:, 2],
            "brand_loyalty": brand_loyalty,
            "satisfaction": np.clip(rng.normal(np.where(churned, 2.1, 4.0), 0.8), 1, 5),
            **{f"in_{s}": member[:, j] for j, s in enumerate(CUSTOMER_SOURCES)},
        }
    )


def _person_ids(n: int) -> pd.arrays.ArrowStringArray:
    return sequential_ids("P", n, 7).array
