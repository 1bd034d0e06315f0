"""The source tables as each system would hold them: customer records with noise, and their activity.

Each builder gets the people frame, the pools and its own random generator, and returns string-typed frames
(numbers and timestamps only where the sample contract says so), sorted by primary key.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ci_pipeline.generate import behaviour, noise
from ci_pipeline.generate.noise import STR, blank, chance, phone_text, recase, respace, take, typo
from ci_pipeline.generate.pools import (
    BRANDS_PER_CATEGORY,
    EMAIL_DOMAINS,
    ITEMS_PER_BRAND,
    N_CATEGORIES,
    STREET_SUFFIXES,
    SURVEY_COMMENTS,
    TICKET_CLOSERS,
    TICKET_OPENERS,
    TICKET_TOPICS,
    Pools,
)

DAY = 86_400
#: Range of the per-address draw that seeds a domain misspelling. It keeps the value the draw had when misspellings
#: were picked from a list of six, so the random stream, and every other generated value, is unchanged.
MISSPELLING_SEEDS = 6
#: Share of activity by hour of day (people shop in the evening, call support in office hours).
HOUR_WEIGHTS = np.array([1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 2, 3, 4, 4.5, 5, 5, 5, 4.5, 4.5, 5, 5.5, 6, 7, 7, 6, 4, 2])
HOUR_WEIGHTS = HOUR_WEIGHTS / HOUR_WEIGHTS.sum()


def members(people: pd.DataFrame, source: str, duplicate_p: float, rng: np.random.Generator):
    """Which person each record of a customer table belongs to, with some people recorded twice.

    Returns:
        (person index per record, True for the second record of a person), in key order.
    """
    idx = np.flatnonzero(people[f"in_{source}"].to_numpy())
    again = idx[chance(rng, len(idx), duplicate_p)]
    persons = np.concatenate([idx, again])
    second = np.concatenate([np.zeros(len(idx), bool), np.ones(len(again), bool)])
    order = rng.permutation(len(persons))
    return persons[order], second[order]


def person_emails(people: pd.DataFrame, pools: Pools) -> tuple[pd.Series, pd.Series]:
    """Each person's personal and work e-mail address (work is missing for people who never give one)."""
    first_idx = _display_first(people, pools, people["goes_by_nickname"].to_numpy())
    first = take(pools.first_names, first_idx).str.lower().str.replace("'", "", regex=False)
    # Addresses made before a marriage keep the previous surname.
    old_name = (people["previous_last"].to_numpy() >= 0) & (people["email_number"].to_numpy() % 2 == 0)
    last_idx = np.where(old_name, people["previous_last"].to_numpy(), people["last"].to_numpy())
    last = take(pools.last_names, last_idx).str.lower().str.replace(r"[^a-z]", "", regex=True)
    number = pd.Series(people["email_number"].to_numpy()).astype(STR)
    year = pd.Series(pd.to_datetime(people["birth"].to_numpy(), unit="D").year % 100).astype(STR).str.zfill(2)
    pattern = people["email_pattern"].to_numpy()
    local = pd.Series(pd.NA, index=first.index, dtype=STR)
    for k, render in enumerate(
        (
            lambda: first + "." + last,
            lambda: first + last,
            lambda: first.str[0] + last,
            lambda: first + "_" + last + number,
            lambda: first + last.str[0] + number,
            lambda: first + "." + last + number,
            lambda: first + year,
            lambda: last + "." + first,
        )
    ):
        rows = pattern == k
        local[rows] = render()[rows]
    personal = unique_addresses(local, take(np.array(EMAIL_DOMAINS, dtype=object), people["email_domain"].to_numpy()))
    head = people["head"].to_numpy()
    personal = personal.mask(people["shared_email"].to_numpy(), personal.iloc[head].reset_index(drop=True))
    company = people["company"].to_numpy()
    work = unique_addresses(first.str[0] + last, take(pools.company_domains, company))
    return personal, work.mask(~people["has_work_email"].to_numpy())


def unique_addresses(local: pd.Series, domain: pd.Series) -> pd.Series:
    """``local@domain``, each address given out once: a later holder of a taken name gets digits added (a mail
    provider or a company's IT hands every address to one person only; sharing is a household's own choice)."""
    local = local.reset_index(drop=True)
    domain = domain.reset_index(drop=True)
    address = local + "@" + domain
    while True:
        taken = address.duplicated().to_numpy()
        if not taken.any():
            return address
        repeat = address.groupby(address, sort=False).cumcount().astype(STR)
        local = local.mask(taken, local + repeat)
        address = local + "@" + domain


def _display_first(people: pd.DataFrame, pools: Pools, use_nickname: np.ndarray) -> np.ndarray:
    first = people["first"].to_numpy()
    return _nickname(first, pools, use_nickname, np.zeros(len(first)))


def _nickname(first: np.ndarray, pools: Pools, use: np.ndarray, draw: np.ndarray) -> np.ndarray:
    options = pools.nickname_of[first]
    count = (options >= 0).sum(axis=1)
    pick = np.minimum((draw * count).astype(np.int64), np.maximum(count - 1, 0))
    nick = options[np.arange(len(first)), pick]
    return np.where(use & (nick >= 0), nick, first)


class Identity:
    """How one system recorded each of its records' person: name, contact details, address, with noise."""

    def __init__(
        self,
        people: pd.DataFrame,
        pools: Pools,
        emails: tuple[pd.Series, pd.Series],
        persons: np.ndarray,
        rng: np.random.Generator,
        *,
        nickname_p: float,
        previous_name_p: float,
        old_address_p: float,
        home_phone_p: float,
        work_email_p: float,
    ):
        n = len(persons)
        p = people.iloc[persons].reset_index(drop=True)
        self.n, self.p, self.rng, self.pools = n, p, rng, pools
        goes_by = p["goes_by_nickname"].to_numpy()
        use_nick = np.where(goes_by, chance(rng, n, 0.75), chance(rng, n, nickname_p))
        self.first = take(pools.first_names, _nickname(p["first"].to_numpy(), pools, use_nick, rng.random(n)))
        previous = p["previous_last"].to_numpy()
        last = np.where((previous >= 0) & chance(rng, n, previous_name_p), previous, p["last"].to_numpy())
        self.last = take(pools.last_names, last)

        old = p["moved"].to_numpy() & chance(rng, n, old_address_p)
        self.street_no = np.where(old, p["old_street_no"], p["street_no"])
        self.street = np.where(old, p["old_street"], p["street"])
        self.suffix = np.where(old, p["old_suffix"], p["suffix"])
        self.unit = np.where(old, 0, p["unit"])
        self.city_idx = np.where(old, p["old_city"], p["city"])

        home = p["home_phone"].to_numpy()
        self.phone_number = np.where((home > 0) & chance(rng, n, home_phone_p), home, p["mobile"].to_numpy())

        personal, work = emails
        personal = personal.iloc[persons].reset_index(drop=True)
        work = work.iloc[persons].reset_index(drop=True)
        self.email = personal.mask(work.notna().to_numpy() & chance(rng, n, work_email_p), work)
        self.birth = p["birth"].to_numpy()

    def name_noise(self, values: pd.Series, typo_p: float, upper: float, lower: float, space_p: float) -> pd.Series:
        """Typos, case and stray blanks in a name field."""
        return respace(recase(typo(values, self.rng, typo_p), self.rng, upper, lower), self.rng, space_p)

    def email_text(self, upper_p: float, typo_p: float) -> pd.Series:
        """The e-mail address with case noise and misspelt domains.

        A misspelt domain is a typing error in the address's own domain (``gmial.com`` for ``gmail.com``,
        ``evnas.example`` for ``evans.example``): one swapped, dropped, doubled or wrong letter. Some of these are
        in the matcher's table of known misspellings and some are not, as in real data.
        """
        out = self.email.mask(chance(self.rng, self.n, upper_p), self.email.str.capitalize())
        entropy = self.rng.integers(0, MISSPELLING_SEEDS, self.n)
        misspelt = np.flatnonzero(chance(self.rng, self.n, typo_p) & out.notna().to_numpy())
        if len(misspelt) == 0:
            return out
        parts = out.iloc[misspelt].str.split("@", n=1)
        out.iloc[misspelt] = parts.str[0] + "@" + typo(parts.str[1], np.random.default_rng(entropy[misspelt]), 1.0)
        return out

    def phone_text(self, style_p: list[float]) -> pd.Series:
        """The phone number in the system's mix of formats."""
        return phone_text(self.phone_number, self.rng.choice(len(style_p), p=style_p, size=self.n))

    def street_line(self, abbreviate_p: float, typo_p: float) -> pd.Series:
        """``123 Oak Street Apt 4`` / ``123 oak st. #4`` and the like."""
        full = take(np.array([s for s, _ in STREET_SUFFIXES], dtype=object), self.suffix)
        short = take(np.array([a for _, a in STREET_SUFFIXES], dtype=object), self.suffix)
        short = short.mask(chance(self.rng, self.n, 0.3), short + ".")
        suffix = full.mask(chance(self.rng, self.n, abbreviate_p), short)
        line = (
            pd.Series(self.street_no).astype(STR)
            + " "
            + typo(take(self.pools.street_names, self.street), self.rng, typo_p)
            + " "
            + suffix
        )
        unit_style = self.rng.integers(0, 3, self.n)
        unit = pd.Series(self.unit).astype(STR)
        unit_text = (" Apt " + unit).mask(unit_style == 1, " #" + unit).mask(unit_style == 2, ", Unit " + unit)
        return line.mask(self.unit > 0, line + unit_text)

    def city(self) -> pd.Series:
        return take(self.pools.cities, self.city_idx)

    def state(self) -> pd.Series:
        return take(self.pools.states, self.city_idx)

    def zip(self, plus4_p: float, lost_zero_p: float) -> pd.Series:
        """ZIP codes, some as ZIP+4, some with the leading zero a spreadsheet dropped."""
        code = take(self.pools.zips, self.city_idx)
        plus4 = code + "-" + pd.Series(self.rng.integers(0, 10000, self.n)).astype(STR).str.zfill(4)
        code = code.mask(chance(self.rng, self.n, plus4_p), plus4)
        return code.mask(chance(self.rng, self.n, lost_zero_p), code.str.lstrip("0"))


def _seconds(day: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hour = rng.choice(24, p=HOUR_WEIGHTS, size=len(day))
    return day.astype(np.int64) * DAY + hour * 3600 + rng.integers(0, 3600, len(day))


def _days_between(start: np.ndarray, end: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    span = np.maximum(end - start, 0) + 1
    return start + (rng.random(len(start)) * span).astype(np.int64)


def _choose(values: tuple, weights: tuple, n: int, rng: np.random.Generator) -> pd.Series:
    w = np.asarray(weights, dtype=float)
    return take(np.array(values, dtype=object), rng.choice(len(values), p=w / w.sum(), size=n))


def crm_contacts(people, pools, emails, rng, end_day: int) -> tuple[pd.DataFrame, np.ndarray]:
    """CRM contacts: typed in by sales staff over years; old addresses and surnames, many gaps."""
    persons, second = members(people, "crm", 0.07, rng)
    who = Identity(
        people, pools, emails, persons, rng,
        nickname_p=0.25, previous_name_p=0.5, old_address_p=0.55, home_phone_p=0.4, work_email_p=0.35,
    )  # fmt: skip
    n = len(persons)
    since = who.p["customer_since"].to_numpy()
    created = np.minimum(since - rng.integers(0, 400, n) + np.where(second, rng.integers(30, 900, n), 0), end_day)
    modified = _days_between(created, np.full(n, end_day), rng)
    gender = who.p["gender"].to_numpy()
    gender_text = take(np.array(["F", "M", "Female", "Male"], dtype=object), (gender == "M") + 2 * chance(rng, n, 0.2))
    frame = pd.DataFrame(
        {
            "contact_id": noise.sequential_ids("C", n, 7),
            "first_name": who.name_noise(who.first, 0.03, 0.03, 0.05, 0.03),
            "last_name": who.name_noise(who.last, 0.03, 0.04, 0.05, 0.03),
            "email": blank(who.email_text(0.05, 0.01), rng, 0.1),
            "phone": blank(who.phone_text([0.1, 0.1, 0.3, 0.35, 0.1, 0.0, 0.05]), rng, 0.12),
            "street": blank(who.street_line(0.55, 0.01), rng, 0.05),
            "city": blank(recase(who.city(), rng, 0.05, 0.03), rng, 0.04),
            "state": blank(who.state(), rng, 0.04),
            "postal_code": blank(who.zip(0.1, 0.3), rng, 0.06),
            "country": blank(_choose(("US", "USA", "United States"), (0.7, 0.2, 0.1), n, rng), rng, 0.15),
            "birth_date": blank(noise.date_text(who.birth, "%m/%d/%Y"), rng, 0.25),
            "gender": blank(gender_text, rng, 0.15),
            "company": blank(take(pools.companies, who.p["company"].to_numpy()), rng, 0.55),
            "created_at": noise.datetime_text(_seconds(created, rng), "%m/%d/%Y"),
            "modified_at": noise.datetime_text(_seconds(modified, rng), "%m/%d/%Y"),
        }
    )
    return frame, persons


def ecommerce_customers(people, pools, emails, rng, end_day: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Web-shop accounts: self-typed (lower case, nicknames), e-mail always set, some second accounts.

    Returns:
        (customers, person per record, first day each account was active)
    """
    persons, second = members(people, "ecommerce", 0.05, rng)
    who = Identity(
        people, pools, emails, persons, rng,
        nickname_p=0.3, previous_name_p=0.15, old_address_p=0.2, home_phone_p=0.15,
        work_email_p=0.15,
    )  # fmt: skip
    n = len(persons)
    # A second account is opened later, usually with the other e-mail address.
    other = who.p["has_work_email"].to_numpy() & second
    work = emails[1].iloc[persons].reset_index(drop=True)
    personal = emails[0].iloc[persons].reset_index(drop=True)
    who.email = who.email.mask(other, work.where(who.email == personal, personal))
    since = who.p["customer_since"].to_numpy()
    until = who.p["active_until"].to_numpy()
    signup = np.where(second, _days_between(since, until, rng), since)
    last_login = np.maximum(until - rng.integers(0, 45, n), signup)
    first = who.name_noise(who.first, 0.015, 0.0, 0.0, 0.0)
    last = who.name_noise(who.last, 0.015, 0.0, 0.0, 0.0)
    initial = take(np.array(list("ABCDEHJKLMRST"), dtype=object), rng.integers(0, 13, n))
    name = (first + " " + last).mask(chance(rng, n, 0.04), first + " " + initial + ". " + last)
    name = respace(recase(name, rng, 0.02, 0.14), rng, 0.03)
    frame = pd.DataFrame(
        {
            "customer_id": noise.sequential_ids("EC", n, 8),
            "full_name": name,
            "email": who.email_text(0.02, 0.004).str.lower().mask(chance(rng, n, 0.03), who.email.str.upper()),
            "phone": blank(who.phone_text([0.15, 0.35, 0.15, 0.1, 0.05, 0.2, 0.0]), rng, 0.3),
            "address_line1": blank(who.street_line(0.6, 0.01), rng, 0.05),
            "city": blank(recase(who.city(), rng, 0.02, 0.1), rng, 0.03),
            "state": who.state().mask(chance(rng, n, 0.04), who.state().str.lower()),
            "zip": blank(who.zip(0.05, 0.0), rng, 0.02),
            "country": _choose(("US", "United States"), (0.9, 0.1), n, rng),
            "signup_date": noise.date_text(signup, "%Y-%m-%d"),
            "last_login": noise.datetime_text(_seconds(last_login, rng), "%Y-%m-%d", sep="T"),
        }
    )
    return frame, persons, signup


#: Order lines built and written together.
LINE_CHUNK = 1_000_000


def orders_and_lines(
    people, customers, persons, accounts, rng, behaviour_rng, catalog, end_day: int, write_lines, volume: float = 1.0
) -> tuple[pd.DataFrame, int, tuple[np.ndarray, np.ndarray]]:
    """Orders, returns and order lines of each account (see :mod:`ci_pipeline.generate.behaviour`).

    What people buy comes from their favourite categories and brands (``rng``); when they buy and return comes from
    ``behaviour_rng``. Lines are handed to ``write_lines(frame)`` in chunks, so a million customers' nine million
    lines never sit in memory as text at once.

    Returns:
        (orders, number of lines written, (account, day) of every purchase order)
    """
    p = people.iloc[persons].reset_index(drop=True)
    is_second = pd.Series(persons).duplicated().to_numpy()
    rate = p["order_rate"].to_numpy() * np.where(is_second, 0.5, 1.0) * volume
    account, day = behaviour.purchase_days(accounts, rate, behaviour_rng)
    segment = p["segment"].to_numpy()
    base = np.where(segment[account] <= 1, 1.6, 1.1)
    n_lines = behaviour.lines_per_order(accounts, account, day, base, behaviour_rng)
    line_order = np.repeat(np.arange(len(account)), n_lines)
    product, quantity, unit_price = _line_products(p, account[line_order], rng, catalog)
    returned, lag = behaviour.returns(accounts.leaves[account[line_order]], len(account), behaviour_rng)
    returned &= (day + lag)[line_order] <= end_day
    back = np.flatnonzero(returned)
    originals, return_of_line = np.unique(line_order[back], return_inverse=True)

    n_purchases = len(account)
    event_account = np.concatenate([account, account[originals]])
    event_day = np.concatenate([day, day[originals] + lag[originals]])
    is_return = np.arange(len(event_account)) >= n_purchases
    seconds = np.minimum(_seconds(event_day, rng), (end_day + 1) * DAY - 1)
    order = np.lexsort((event_account, seconds))
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    n_orders = len(order)
    order_id = noise.sequential_ids("SO", n_orders, 8)
    customer_id = noise.rows(customers["customer_id"], event_account[order])
    order_date_text = noise.datetime_text(seconds[order], "%Y-%m-%d", sep="T")

    # Return lines repeat their purchase's product and price with a negative quantity, in the purchase's line order.
    line_event = position[np.concatenate([line_order, n_purchases + return_of_line])]
    product = np.concatenate([product, product[back]])
    quantity = np.concatenate([quantity, -quantity[back]])
    unit_price = np.concatenate([unit_price, unit_price[back]])
    by_event = np.argsort(line_event, kind="stable")
    line_event, product, quantity, unit_price = (
        line_event[by_event],
        product[by_event],
        quantity[by_event],
        unit_price[by_event],
    )
    line_amount = np.round(unit_price * quantity, 2)
    starts = np.searchsorted(line_event, line_event, side="left")
    line_no = np.arange(len(line_event)) - starts + 1
    for first in range(0, max(len(line_event), 1), LINE_CHUNK):
        rows = slice(first, first + LINE_CHUNK)
        ids = noise.rows(order_id, line_event[rows])
        write_lines(
            pd.DataFrame(
                {
                    "line_id": ids + "-" + pd.Series(line_no[rows]).astype(STR),
                    "order_id": ids,
                    "customer_id": noise.rows(customer_id, line_event[rows]),
                    "product_id": take(catalog["product_id"], product[rows]),
                    "product_name": take(catalog["product_name"], product[rows]),
                    "brand": take(catalog["brand"], product[rows]),
                    "category": take(catalog["category"], product[rows]),
                    "quantity": quantity[rows],
                    "unit_price": unit_price[rows],
                    "line_amount": line_amount[rows],
                    "order_date": noise.rows(order_date_text, line_event[rows]),
                }
            )
        )
    del order_date_text

    total = np.bincount(line_event, weights=line_amount, minlength=n_orders)
    age = end_day - seconds[order] // DAY
    status = np.where(age < 2, 0, np.where(age < 7, 1, 2))
    status = np.where(rng.random(n_orders) < 0.02, 3, status)
    status = np.where(is_return[order], 4, status)
    orders = pd.DataFrame(
        {
            "order_id": order_id,
            "customer_id": customer_id,
            "order_date": pd.to_datetime(seconds[order], unit="s").as_unit("us"),
            "total_amount": np.round(total, 2),
            "currency": noise.constant("USD", n_orders),
            "channel": _choose(("web", "mobile_app", "phone", "store_pickup"), (0.58, 0.32, 0.04, 0.06), n_orders, rng),
            "status": take(ORDER_STATUSES, status),
            "is_return": is_return[order],
        }
    )
    return orders, len(line_event), (account, day)


def _line_products(p: pd.DataFrame, owner: np.ndarray, rng: np.random.Generator, catalog) -> tuple[np.ndarray, ...]:
    """(product, quantity, unit price) of each line: mostly the owner's favourite categories and brands."""
    n = len(owner)
    favourites = np.stack([p[f"fav_cat{k}"].to_numpy() for k in range(3)], axis=1)
    favourite_brands = np.stack([p[f"fav_brand{k}"].to_numpy() for k in range(3)], axis=1)
    slot = rng.choice(4, p=[0.5, 0.22, 0.1, 0.18], size=n)
    pick = np.minimum(slot, 2)
    category = np.where(slot < 3, favourites[owner, pick], rng.integers(0, N_CATEGORIES, n))
    loyal = (slot < 3) & (rng.random(n) < p["brand_loyalty"].to_numpy()[owner])
    brand = np.where(loyal, favourite_brands[owner, pick], rng.integers(0, BRANDS_PER_CATEGORY, n))
    product = (category * BRANDS_PER_CATEGORY + brand) * ITEMS_PER_BRAND + rng.integers(0, ITEMS_PER_BRAND, n)
    quantity = rng.choice([1, 2, 3, 4], p=[0.76, 0.16, 0.05, 0.03], size=n).astype(np.int64)
    bargain = p["segment"].to_numpy()[owner] == 4
    discount = np.where(rng.random(n) < np.where(bargain, 0.6, 0.15), rng.choice([0.1, 0.2, 0.3], size=n), 0.0)
    return product, quantity, np.round(catalog["price"][product] * (1 - discount), 2)


def web_sessions(customers, accounts, purchases, signup, rng, catalog, end_day: int, volume=1.0):
    """Browsing sessions before orders and in between, thinning out before a customer leaves; none after.

    ``purchases`` is the (account, day) of every purchase order.
    """
    account, day = behaviour.browsing_days(accounts, *purchases, signup, rng, volume)
    seconds = np.minimum(_seconds(day, rng), (end_day + 1) * DAY - 1)
    order = np.lexsort((account, seconds))
    account, seconds = account[order], seconds[order]
    n = len(account)
    page_views = 1 + rng.geometric(0.25, n)
    duration = (page_views * rng.uniform(15, 95, n)).astype(np.int64)
    product = rng.integers(0, len(catalog["product_id"]), n)
    category_slug = take(catalog["category"], product).str.lower().str.replace(r"[^a-z]+", "-", regex=True)
    landing = rng.choice(6, p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05], size=n)
    base = "https://shop.contoso.example/"
    url = noise.constant(base, n)
    url = url.mask(landing == 1, base + "c/" + category_slug)
    url = url.mask(landing == 2, base + "p/" + take(catalog["product_id"], product).str.lower())
    url = url.mask(landing == 3, base + "search?q=" + take(catalog["brand"], product).str.lower().str.replace(" ", "+"))
    url = url.mask(landing == 4, base + "deals")
    url = url.mask(landing == 5, base + "account/orders")
    return pd.DataFrame(
        {
            "session_id": noise.sequential_ids("WS", n, 9),
            "customer_id": noise.rows(customers["customer_id"], account),
            "started_at": noise.datetime_text(seconds, "%Y-%m-%d", sep="T"),
            "page_views": pd.Series(page_views).astype(STR),
            "duration_seconds": pd.Series(duration).astype(STR),
            "landing_url": url,
            "device": _choose(("desktop", "mobile", "tablet"), (0.45, 0.45, 0.1), n, rng),
        }
    )


TIERS = ("Bronze", "Silver", "Gold", "Platinum")
ORDER_STATUSES = np.array(["processing", "shipped", "delivered", "cancelled", "returned"], dtype=object)
TICKET_STATUSES = np.array(["open", "pending", "closed", "solved"], dtype=object)


def loyalty_members(people, pools, emails, rng, end_day: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Loyalty programme members from a legacy system (names often in capitals, ZIP only)."""
    persons, second = members(people, "loyalty", 0.03, rng)
    who = Identity(
        people, pools, emails, persons, rng,
        nickname_p=0.15, previous_name_p=0.3, old_address_p=0.3, home_phone_p=0.3, work_email_p=0.1,
    )  # fmt: skip
    n = len(persons)
    since = who.p["customer_since"].to_numpy()
    until = who.p["active_until"].to_numpy()
    joined = np.minimum(since + rng.integers(0, 300, n), until)
    joined = np.where(second, _days_between(joined, until, rng), joined)
    segment = who.p["segment"].to_numpy()
    tier = np.clip(3 - np.minimum(segment, 3) + rng.integers(-1, 1, n), 0, 3)
    frame = pd.DataFrame(
        {
            "member_id": noise.sequential_ids("LM", n, 8),
            "first_name": who.name_noise(who.first, 0.02, 0.35, 0.02, 0.02),
            "last_name": who.name_noise(who.last, 0.02, 0.35, 0.02, 0.02),
            "email": blank(who.email_text(0.03, 0.01), rng, 0.15),
            "phone": blank(who.phone_text([0.05, 0.4, 0.3, 0.1, 0.05, 0.1, 0.0]), rng, 0.1),
            "postal_code": blank(who.zip(0.0, 0.15), rng, 0.05),
            "birth_date": blank(noise.date_text(who.birth, "%Y-%m-%d"), rng, 0.1),
            "tier": take(np.array(TIERS, dtype=object), tier),
            "joined_on": noise.date_text(joined, "%Y-%m-%d"),
        }
    )
    return frame, persons, joined


POINT_REASONS = ("purchase", "bonus", "redemption", "birthday", "referral", "expiry")


def loyalty_points(people, members_frame, persons, joined, rng, end_day: int, volume: float = 1.0) -> pd.DataFrame:
    """Points earned and spent: purchases at the member's own rate, redemptions, bonuses; none after churn."""
    p = people.iloc[persons].reset_index(drop=True)
    until = p["active_until"].to_numpy()
    years = np.maximum(until - joined, 0) / 365.25
    counts = rng.poisson(p["order_rate"].to_numpy() * years * 0.9 * volume + 0.3)
    member = np.repeat(np.arange(len(persons)), counts)
    seconds = np.minimum(_seconds(_days_between(joined[member], until[member], rng), rng), (end_day + 1) * DAY - 1)
    order = np.lexsort((member, seconds))
    member, seconds = member[order], seconds[order]
    n = len(member)
    reason = rng.choice(len(POINT_REASONS), p=[0.72, 0.08, 0.1, 0.04, 0.02, 0.04], size=n)
    points = np.select(
        [reason == 0, reason == 1, reason == 2, reason == 3, reason == 4],
        [
            np.maximum(5, rng.gamma(2.0, 40 * (1 + (p["segment"].to_numpy()[member] <= 1)), n)).astype(np.int64),
            rng.choice([50, 100, 250], size=n),
            -rng.choice([100, 250, 500, 1000], size=n),
            np.full(n, 200),
            np.full(n, 250),
        ],
        -rng.integers(10, 300, n),
    ).astype(np.int64)
    return pd.DataFrame(
        {
            "transaction_id": noise.sequential_ids("PT", n, 9),
            "member_id": noise.rows(members_frame["member_id"], member),
            "transaction_date": noise.datetime_text(seconds, "%Y-%m-%d", sep="T"),
            "points": points,
            "reason": take(np.array(POINT_REASONS, dtype=object), reason),
        }
    )


def support_tickets(people, pools, emails, rng, catalog, end_day: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Support cases typed in by agents: one record per ticket, so regular callers appear many times.

    Returns:
        (tickets, person per ticket, opened_at seconds per ticket)
    """
    idx = np.flatnonzero(people["in_support"].to_numpy())
    churned = people["churned"].to_numpy()[idx]
    counts = 1 + rng.poisson(np.where(churned, 1.0, 0.4))
    persons = np.repeat(idx, counts)
    n = len(persons)
    since = people["customer_since"].to_numpy()[persons]
    until = people["active_until"].to_numpy()[persons]
    day = _days_between(since, until, rng)
    # Customers who leave complain in the weeks before they go.
    near_churn = people["churned"].to_numpy()[persons] & chance(rng, n, 0.6)
    day = np.where(near_churn, np.maximum(until - rng.integers(0, 60, n), since), day)
    office_hour = rng.integers(8, 18, n)
    seconds = day * DAY + office_hour * 3600 + rng.integers(0, 3600, n)
    order = np.lexsort((persons, seconds))
    persons, seconds = persons[order], seconds[order]
    who = Identity(
        people, pools, emails, persons, rng,
        nickname_p=0.3, previous_name_p=0.2, old_address_p=0.2, home_phone_p=0.35, work_email_p=0.2,
    )  # fmt: skip

    style = rng.choice(4, p=[0.62, 0.12, 0.2, 0.06], size=n)
    first = who.name_noise(who.first, 0.03, 0.0, 0.0, 0.0)
    last = who.name_noise(who.last, 0.03, 0.0, 0.0, 0.0)
    name = (first + " " + last).mask(style == 1, last + ", " + first)
    name = name.mask(style == 2, (first + " " + last).str.lower()).mask(style == 3, first)
    name = respace(name, rng, 0.03)

    topic = rng.choice(len(TICKET_TOPICS), p=np.array([t[2] for t in TICKET_TOPICS]), size=n)
    subject = take(np.array([t[0] for t in TICKET_TOPICS], dtype=object), topic)
    issue = take(np.array([t[1] for t in TICKET_TOPICS], dtype=object), topic)
    product = take(catalog["product_name"], rng.integers(0, len(catalog["product_name"]), n))
    parts = issue.str.split("{product}", n=1, regex=False)
    issue = parts.str[0] + product.where(parts.str.len() > 1, "") + parts.str[1].fillna("")
    opener = _choose(TICKET_OPENERS, (3, 2, 1, 1, 0.5, 0.5, 2), n, rng)
    closer = _choose(TICKET_CLOSERS, (3, 3, 1, 1, 1, 1), n, rng)
    description = (opener + " " + issue + " " + closer).str.strip()
    age = end_day - seconds // DAY
    status = np.where(age < 3, 0, np.where(age < 10, 1, 2))
    status = np.where((status == 2) & (rng.random(n) < 0.4), 3, status)
    channel = rng.choice(4, p=[0.4, 0.3, 0.2, 0.1], size=n)
    frame = pd.DataFrame(
        {
            "ticket_id": noise.sequential_ids("T", n, 7),
            "requester_name": name,
            "requester_email": blank(who.email_text(0.04, 0.01), rng, 0.12),
            "requester_phone": blank(who.phone_text([0.2, 0.2, 0.2, 0.2, 0.1, 0.05, 0.05]), rng, 0.45),
            "opened_at": noise.datetime_text(seconds, "%Y-%m-%d"),
            "channel": take(np.array(["email", "phone", "chat", "web_form"], dtype=object), channel),
            "subject": subject,
            "description": blank(description, rng, 0.02),
            "priority": _choose(("low", "normal", "high", "urgent"), (0.25, 0.5, 0.2, 0.05), n, rng),
            "status": take(TICKET_STATUSES, status),
        }
    )
    return frame, persons, seconds


def surveys(people, tickets, persons, opened, rng, end_day: int) -> pd.DataFrame:
    """Satisfaction surveys after closed tickets: unhappy (often churning) customers rate low."""
    closed = tickets["status"].isin(["closed", "solved"]).to_numpy()
    answered = np.flatnonzero(closed & chance(rng, len(tickets), 0.55))
    satisfaction = people["satisfaction"].to_numpy()[persons[answered]]
    rating = np.clip(np.rint(satisfaction + rng.normal(0, 0.7, len(answered))), 1, 5).astype(np.int64)
    submitted = np.minimum(opened[answered] + rng.integers(3600, 5 * DAY, len(answered)), (end_day + 1) * DAY - 1)
    order = np.argsort(submitted, kind="stable")
    answered, rating, submitted = answered[order], rating[order], submitted[order]
    n = len(answered)
    comments = np.array([c for r in range(1, 6) for c in SURVEY_COMMENTS[r]], dtype=object)
    per = len(SURVEY_COMMENTS[1])
    first = take(comments, (rating - 1) * per + rng.integers(0, per, n))
    second = take(comments, (rating - 1) * per + rng.integers(0, per, n))
    comment = first.mask(chance(rng, n, 0.25) & (first != second).to_numpy(), first + " " + second)
    return pd.DataFrame(
        {
            "survey_id": noise.sequential_ids("S", n, 7),
            "ticket_id": noise.rows(tickets["ticket_id"], answered),
            "submitted_at": noise.datetime_text(submitted, "%Y-%m-%d"),
            "rating": pd.Series(rating).astype(STR),
            "comment": blank(comment, rng, 0.3),
        }
    )
