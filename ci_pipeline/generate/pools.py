"""Value pools the generator samples from: names, streets, cities, companies, products and text fragments.

Faker is called only here, a few thousand times per run, to build pools; every row is then drawn from the pools
with numpy, so generating a million people never calls Faker per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from faker import Faker
from faker.providers.person.en_US import Provider as PersonProvider

#: Formal first name -> the nicknames people write instead (Robert -> Bob).
NICKNAMES: dict[str, tuple[str, ...]] = {
    "Robert": ("Bob", "Rob", "Bobby"),
    "William": ("Bill", "Will", "Billy"),
    "James": ("Jim", "Jimmy", "Jamie"),
    "John": ("Jack", "Johnny"),
    "Richard": ("Rick", "Rich", "Dick"),
    "Michael": ("Mike", "Mikey"),
    "Thomas": ("Tom", "Tommy"),
    "Charles": ("Charlie", "Chuck"),
    "Joseph": ("Joe", "Joey"),
    "Christopher": ("Chris",),
    "Daniel": ("Dan", "Danny"),
    "Matthew": ("Matt",),
    "Anthony": ("Tony",),
    "Donald": ("Don",),
    "Steven": ("Steve",),
    "Stephen": ("Steve",),
    "Andrew": ("Andy", "Drew"),
    "Joshua": ("Josh",),
    "Kenneth": ("Ken", "Kenny"),
    "Edward": ("Ed", "Eddie", "Ted"),
    "Ronald": ("Ron",),
    "Timothy": ("Tim",),
    "Jeffrey": ("Jeff",),
    "Benjamin": ("Ben",),
    "Samuel": ("Sam",),
    "Gregory": ("Greg",),
    "Alexander": ("Alex",),
    "Patrick": ("Pat",),
    "Nicholas": ("Nick",),
    "Jonathan": ("Jon",),
    "Zachary": ("Zach",),
    "Nathan": ("Nate",),
    "Frederick": ("Fred",),
    "Lawrence": ("Larry",),
    "Gerald": ("Jerry",),
    "Raymond": ("Ray",),
    "Peter": ("Pete",),
    "Douglas": ("Doug",),
    "Jacob": ("Jake",),
    "David": ("Dave",),
    "Eric": ("Rick",),
    "Elizabeth": ("Liz", "Beth", "Betty"),
    "Margaret": ("Maggie", "Peggy", "Meg"),
    "Jennifer": ("Jen", "Jenny"),
    "Katherine": ("Kate", "Kathy", "Katie"),
    "Catherine": ("Cathy", "Kate"),
    "Kathleen": ("Kathy",),
    "Patricia": ("Pat", "Patty", "Trish"),
    "Susan": ("Sue", "Susie"),
    "Deborah": ("Debbie", "Deb"),
    "Rebecca": ("Becky",),
    "Barbara": ("Barb",),
    "Jessica": ("Jess",),
    "Victoria": ("Vicky", "Tori"),
    "Christina": ("Tina", "Chris"),
    "Christine": ("Chris",),
    "Samantha": ("Sam",),
    "Alexandra": ("Alex",),
    "Abigail": ("Abby",),
    "Pamela": ("Pam",),
    "Cynthia": ("Cindy",),
    "Kimberly": ("Kim",),
    "Amanda": ("Mandy",),
    "Dorothy": ("Dottie",),
    "Theresa": ("Terry",),
    "Judith": ("Judy",),
    "Melissa": ("Missy",),
    "Angela": ("Angie",),
    "Stephanie": ("Steph",),
    "Jacqueline": ("Jackie",),
    "Valerie": ("Val",),
    "Allison": ("Ally",),
}

#: Street suffix written out and abbreviated (the same street appears as "Oak Street" and "Oak St").
STREET_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("Street", "St"),
    ("Avenue", "Ave"),
    ("Road", "Rd"),
    ("Drive", "Dr"),
    ("Lane", "Ln"),
    ("Boulevard", "Blvd"),
    ("Court", "Ct"),
    ("Place", "Pl"),
    ("Terrace", "Ter"),
    ("Parkway", "Pkwy"),
)
STREET_SUFFIX_WEIGHTS = (0.28, 0.2, 0.14, 0.12, 0.08, 0.05, 0.05, 0.04, 0.02, 0.02)

EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "aol.com", "comcast.net")
EMAIL_DOMAIN_WEIGHTS = (0.42, 0.16, 0.12, 0.1, 0.09, 0.06, 0.05)

#: Category -> (brands, item nouns, typical unit price in USD).
CATALOG: dict[str, tuple[tuple[str, ...], tuple[str, ...], float]] = {
    "Electronics": (
        ("Voltix", "Lumera", "Nexon Audio", "Pixelcraft", "Ampere & Co"),
        ("Wireless Earbuds", "Bluetooth Speaker", "USB-C Charger", "Smart Watch", "27in Monitor", "Headphones"),
        89.0,
    ),
    "Home & Kitchen": (
        ("Hearthstone", "CopperLeaf", "Nordvik Home", "Casa Bella", "Brewmaster"),
        ("Chef's Knife", "Dutch Oven", "Coffee Maker", "Blender", "Bath Towel Set", "Table Lamp"),
        54.0,
    ),
    "Apparel": (
        ("Northpeak", "Urban Thread", "Linen & Loom", "Bayside", "Redwood Outfitters"),
        ("Crew T-Shirt", "Denim Jeans", "Rain Jacket", "Wool Sweater", "Chino Shorts", "Hoodie"),
        38.0,
    ),
    "Footwear": (
        ("Stride", "Trailhawk", "Solace", "Cobble & Co", "Fleetfoot"),
        ("Running Shoes", "Leather Boots", "Sandals", "Slip-On Sneakers", "Hiking Boots", "Loafers"),
        72.0,
    ),
    "Beauty": (
        ("Lumiere", "Pure Petal", "Verdant Skin", "Glow Lab", "Amberly"),
        ("Face Moisturizer", "Vitamin C Serum", "Shampoo", "Lip Balm Set", "Eau de Parfum", "Sunscreen SPF 50"),
        24.0,
    ),
    "Sports & Outdoors": (
        ("Summit Gear", "Tidewater", "IronCore", "Pathfinder", "Velo"),
        ("Yoga Mat", "Camping Tent", "Water Bottle", "Dumbbell Pair", "Bike Helmet", "Trekking Poles"),
        46.0,
    ),
    "Toys": (
        ("BrightBlocks", "Tinker Town", "Starling Toys", "Puzzleworks", "Cosmo Kids"),
        ("Building Set", "Jigsaw Puzzle", "Plush Bear", "Remote Control Car", "Board Game", "Art Kit"),
        29.0,
    ),
    "Grocery": (
        ("Green Acre", "Harvest Table", "Roast & Co", "Golden Hive", "Olive Grove"),
        ("Ground Coffee", "Granola", "Honey Jar", "Olive Oil", "Dark Chocolate", "Green Tea"),
        11.0,
    ),
    "Books": (
        ("Lantern Press", "Meridian Books", "Quill House", "Northwind Publishing", "Paperleaf"),
        ("Cookbook", "Mystery Novel", "Travel Guide", "Children's Picture Book", "Biography", "Sci-Fi Novel"),
        18.0,
    ),
    "Garden": (
        ("Evergreen", "Terra Verde", "Bloomfield", "Rootstock", "Sunpatch"),
        ("Garden Hose", "Pruning Shears", "Raised Bed Kit", "Seed Starter Set", "Solar Path Lights", "Planter"),
        34.0,
    ),
}

TICKET_TOPICS: tuple[tuple[str, str, float], ...] = (
    # (subject, issue sentence, weight)
    ("Where is my order?", "My order has not arrived yet and the tracking page has not changed for days.", 0.18),
    ("Damaged item received", "The {product} arrived damaged, the box was crushed and it does not work.", 0.12),
    ("Refund request", "I returned the {product} two weeks ago, but I still have not received my refund.", 0.12),
    ("Cannot log in", "I cannot log in to my account; the password reset email never arrives.", 0.09),
    ("Loyalty points missing", "The points for my last purchase are missing from my rewards balance.", 0.1),
    ("Wrong size delivered", "I ordered the {product} in a medium, but a large was delivered.", 0.08),
    ("Change delivery address", "Please change the delivery address on my order, I moved last month.", 0.08),
    ("Cancel my order", "I would like to cancel my order for the {product}, I ordered it by mistake.", 0.08),
    (
        "Product question",
        "Is the {product} compatible with the one I bought last year? Thanks, a quick answer helps.",
        0.1,
    ),
    ("Billing issue", "I was charged twice for the same order, please check my card statement.", 0.05),
)
TICKET_OPENERS = ("Hi,", "Hello,", "Good morning,", "Hi team,", "To whom it may concern,", "Hey,", "")
TICKET_CLOSERS = (
    "Thanks.",
    "Thank you for your help.",
    "Please call me back.",
    'This is the "third" time I am writing about this!',
    "Regards.",
    "",
)
SURVEY_COMMENTS: dict[int, tuple[str, ...]] = {
    1: (
        "Terrible service, I will not shop here again.",
        "Nobody answered for a week, very disappointing.",
        "The problem is still not solved, I am closing my account.",
        "Rude agent, slow refund, never again.",
    ),
    2: (
        "It took far too long to get an answer.",
        "The agent tried, but the refund is still missing.",
        "Not happy, I had to call three times.",
        "Poor follow-up, I expected better.",
    ),
    3: (
        "OK in the end, but slow.",
        "Problem solved, though it took a while.",
        "Average experience, nothing special.",
        "Fine, but the website should make this easier.",
    ),
    4: (
        "Good service, quick answer.",
        "Helpful agent, thanks!",
        "Solved on the first call, nice.",
        "Friendly and efficient, thank you.",
    ),
    5: (
        "Excellent service, fixed in minutes!",
        "Super helpful, thank you so much.",
        "Best customer support I have had, great job.",
        "Fast, friendly, perfect - I love this shop.",
    ),
}


@dataclass(frozen=True)
class Pools:
    """Arrays every row is drawn from. Names are indexed by position; weights sum to 1."""

    first_names: np.ndarray  # formal first names followed by every nickname
    female_first: np.ndarray  # indices into first_names
    female_weights: np.ndarray
    male_first: np.ndarray
    male_weights: np.ndarray
    nickname_of: np.ndarray  # (len(first_names), 3) index of a nickname, -1 where none
    last_names: np.ndarray
    last_weights: np.ndarray
    street_names: np.ndarray
    cities: np.ndarray
    states: np.ndarray
    zips: np.ndarray  # one ZIP code per city
    area_codes: np.ndarray  # one phone area code per city
    companies: np.ndarray
    company_domains: np.ndarray


def _weights(mapping) -> tuple[np.ndarray, np.ndarray]:
    names = np.array(list(mapping.keys()), dtype=object)
    weights = np.array(list(mapping.values()), dtype=float)
    return names, weights / weights.sum()


def build_pools(seed: int, size: int = 1000) -> Pools:
    """Build the pools for one run; the same seed gives the same pools.

    Args:
        seed: the run's seed (Faker is seeded with it).
        size: how many streets and cities to draw (a third as many companies).
    """
    fake = Faker("en_US")
    fake.seed_instance(seed)
    female, female_w = _weights(PersonProvider.first_names_female)
    male, male_w = _weights(PersonProvider.first_names_male)
    formal = list(dict.fromkeys([*female, *male]))
    nick_list = sorted({n for name in formal for n in NICKNAMES.get(name, ())} - set(formal))
    first_names = np.array(formal + nick_list, dtype=object)
    position = {name: i for i, name in enumerate(first_names)}
    nickname_of = np.full((len(first_names), 3), -1, dtype=np.int64)
    for name in formal:
        for j, nick in enumerate(NICKNAMES.get(name, ())[:3]):
            nickname_of[position[name], j] = position[nick]
    last, last_w = _weights(PersonProvider.last_names)

    trees = ["Oak", "Maple", "Cedar", "Pine", "Elm", "Willow", "Birch", "Walnut", "Chestnut", "Spruce", "Hickory"]
    numbered = ["1st", "2nd", "3rd", "4th", "5th", "6th", "7th", "8th", "9th", "10th", "12th", "14th"]
    rng = np.random.default_rng(seed)
    # Streets are named after people, as most US streets are: drawn from the name pools, not one Faker call each.
    named = [*rng.choice(last, size=size, replace=False), *rng.choice(formal, size=size // 3, replace=False)]
    streets = {*trees, *numbered, "Main", "Park", "Lake", "Hill", "Church", "Washington", "Lincoln", "Highland", *named}
    street_names = np.array(sorted(streets), dtype=object)

    city_rows = {}
    for _ in range(size * 4):
        if len(city_rows) >= size:
            break
        state = fake.state_abbr(include_territories=False, include_freely_associated_states=False)
        city_rows.setdefault((fake.city(), state), fake.zipcode_in_state(state))
    keys = sorted(city_rows)
    companies = sorted({fake.company() for _ in range(size // 3)})
    domains = [
        "".join(ch for ch in c.split(",")[0].split(" ")[0].split("-")[0].lower() if ch.isalnum()) + ".example"
        for c in companies
    ]
    codes = rng.integers(201, 990, size=len(keys))
    return Pools(
        first_names=first_names,
        female_first=np.array([position[n] for n in female]),
        female_weights=female_w,
        male_first=np.array([position[n] for n in male]),
        male_weights=male_w,
        nickname_of=nickname_of,
        last_names=last,
        last_weights=last_w,
        street_names=street_names,
        cities=np.array([c for c, _ in keys], dtype=object),
        states=np.array([s for _, s in keys], dtype=object),
        zips=np.array([city_rows[k] for k in keys], dtype=object),
        area_codes=np.where(codes % 100 == 11, codes + 1, codes),
        companies=np.array(companies, dtype=object),
        company_domains=np.array(domains, dtype=object),
    )


def product_catalog() -> dict[str, np.ndarray]:
    """Every product, ordered category -> brand -> item (product index = (cat * 5 + brand) * 6 + item)."""
    ids, names, brands, categories, prices = [], [], [], [], []
    for c, (category, (brand_names, items, price)) in enumerate(CATALOG.items()):
        for b, brand in enumerate(brand_names):
            for i, item in enumerate(items):
                ids.append(f"SKU-{(c + 1) * 10000 + b * 100 + i + 1}")
                names.append(f"{brand} {item}")
                brands.append(brand)
                categories.append(category)
                # Deterministic spread around the category price: premium brands cost more.
                prices.append(round(price * (0.6 + 0.2 * b) * (0.7 + 0.12 * i), 2) - 0.01)
    return {
        "product_id": np.array(ids, dtype=object),
        "product_name": np.array(names, dtype=object),
        "brand": np.array(brands, dtype=object),
        "category": np.array(categories, dtype=object),
        "price": np.array(prices),
    }


N_CATEGORIES = len(CATALOG)
BRANDS_PER_CATEGORY = 5
ITEMS_PER_BRAND = 6
