"""The latent population: true people, their attributes and their buy-till-you-die behaviour.

Purchases follow BG/NBD (Fader, Hardie & Lee 2005): while alive a customer buys as a
Poisson process with rate lambda ~ Gamma(r, alpha); after each repeat purchase they drop
out with probability p ~ Beta(a, b). Order values follow Gamma-Gamma (Fader, Hardie & Lee
2005b): value ~ Gamma(spend_p, nu), nu ~ Gamma(spend_q, spend_gamma). Times are in days
from the start of the history window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jobs.platform.settings import GeneratorConfig

GIVEN_NAMES = [
    ("James", "M"), ("Mary", "F"), ("Robert", "M"), ("Patricia", "F"), ("John", "M"), ("Jennifer", "F"),
    ("Michael", "M"), ("Linda", "F"), ("David", "M"), ("Elizabeth", "F"), ("William", "M"), ("Barbara", "F"),
    ("Richard", "M"), ("Susan", "F"), ("José", "M"), ("María", "F"), ("Jürgen", "M"), ("Zoë", "F"),
    ("François", "M"), ("Chloé", "F"), ("Søren", "M"), ("Björk", "F"), ("Wei", "M"), ("Mei", "F"),
    ("Aarav", "M"), ("Priya", "F"), ("Mohammed", "M"), ("Fatima", "F"), ("Olumide", "M"), ("Ngozi", "F"),
    ("Hiroshi", "M"), ("Yuki", "F"), ("Mateo", "M"), ("Lucía", "F"), ("Noah", "M"), ("Emma", "F"),
    ("Liam", "M"), ("Olivia", "F"), ("Lukas", "M"), ("Anna", "F"),
]
FAMILY_NAMES = [
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernández", "López", "González", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Müller", "Schäfer", "Groß", "Dubois", "Lefèvre", "Nørgaard", "Wang", "Li", "Zhang", "Chen",
    "Patel", "Sharma", "Khan", "Okafor", "Adeyemi", "Tanaka", "Suzuki", "O'Brien", "Kowalski", "Nguyen",
]
EMAIL_DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "icloud.com", "proton.me", "web.de", "mail.com"]
# Labels of a person's second mailbox; letters only, so the address cannot be anyone's first one.
SECOND_MAILBOX_TAGS = ["shop", "home", "private", "mail", "deals"]
# (city, region, state/postcode prefix, area codes)
CITIES = [
    ("New York", "Northeast", "NY", "100", ["212", "646", "718"]),
    ("Boston", "Northeast", "MA", "021", ["617", "857"]),
    ("Philadelphia", "Northeast", "PA", "191", ["215", "267"]),
    ("Chicago", "Midwest", "IL", "606", ["312", "773"]),
    ("Minneapolis", "Midwest", "MN", "554", ["612"]),
    ("Atlanta", "South", "GA", "303", ["404", "678"]),
    ("Houston", "South", "TX", "770", ["713", "832"]),
    ("Miami", "South", "FL", "331", ["305", "786"]),
    ("Denver", "West", "CO", "802", ["303", "720"]),
    ("Seattle", "West", "WA", "981", ["206"]),
    ("San Francisco", "West", "CA", "941", ["415", "628"]),
    ("Los Angeles", "West", "CA", "900", ["213", "310"]),
]
STREETS = ["Main Street", "Oak Avenue", "Maple Drive", "Cedar Lane", "Park Road", "Elm Street",
           "Washington Boulevard", "Lake View Court", "Hill Street", "2nd Avenue"]
SIGNUP_CHANNELS = ["web", "app", "store", "referral", "social", "search"]
SIGNUP_WEIGHTS = [0.32, 0.18, 0.2, 0.08, 0.12, 0.1]
CATEGORIES = ["apparel", "shoes", "beauty", "home", "electronics", "sports", "books", "toys", "grocery", "garden"]


@dataclass
class Population:
    """Arrays over the people of one chunk (index i is one person)."""

    person_id: np.ndarray
    given_name: np.ndarray
    family_name: np.ndarray
    gender: np.ndarray
    birth_date: np.ndarray          # datetime64[D]
    email: np.ndarray
    second_email: np.ndarray        # another mailbox of the same person, never used by anyone else
    phone_digits: np.ndarray        # 10 national digits (NANP)
    city_index: np.ndarray
    street: np.ndarray
    postcode: np.ndarray
    moved: np.ndarray               # a second, newer address exists
    new_street: np.ndarray
    new_city_index: np.ndarray
    new_postcode: np.ndarray
    household_of: np.ndarray        # chunk index of the housemate whose name and address were taken, or -1
    signup_channel: np.ndarray
    email_opt_in: np.ndarray
    sms_opt_in: np.ndarray
    is_test: np.ndarray
    is_prospect: np.ndarray
    first_seen: np.ndarray          # day the person became known (contact created)
    lam: np.ndarray                 # purchase rate per day
    p_drop: np.ndarray              # dropout probability after each repeat purchase
    nu: np.ndarray                  # Gamma-Gamma rate of the person's order values
    engagement: np.ndarray          # 0..1: event, e-mail and survey activity
    satisfaction: np.ndarray        # 0..1: drives NPS/CSAT and complaints
    support_need: np.ndarray        # expected tickets per year
    store_share: np.ndarray         # share of purchases made in a store (POS)
    category_pref: np.ndarray       # (n, len(CATEGORIES)) probabilities
    second_account: np.ndarray      # has two e-commerce accounts
    has_loyalty: np.ndarray


def _email_local(given: str, family: str, k: int) -> str:
    """A plausible mailbox name, unique per person (`k` is the person's global index)."""
    import unicodedata

    def ascii_fold(s: str) -> str:
        return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode().lower().replace("'", "")

    g, f = ascii_fold(given), ascii_fold(family)
    return [f"{g}.{f}.{k}", f"{g[0]}{f}{k}", f"{g}{f}{k}", f"{f}.{g}{k}"][k % 4]


def _second_email(given: str, family: str, k: int, tag: str, domain: str) -> str:
    """A second mailbox of person `k`: names hold no digits, so the digits before the tag are
    `k` and the address is the person's own; ending in letters, it is nobody's first address."""
    return f"{_email_local(given, family, k)}.{tag}@{domain}"


def _households(rng: np.random.Generator, is_test: np.ndarray, share: float) -> np.ndarray:
    """For each person, the chunk index of the housemate they moved in with, or -1.

    The housemate is the previous person of the chunk, so the choice depends only on the
    chunk's stream; test accounts neither join nor host a household.
    """
    n = len(is_test)
    joins = rng.random(n) < share
    joins[0] = False
    joins[1:] &= ~is_test[1:] & ~is_test[:-1]
    return np.where(joins, np.arange(n) - 1, -1)


def _move_in(household_of: np.ndarray, *columns: np.ndarray) -> None:
    """Copy the housemate's values of `columns` in place. In index order, so a chain of
    households (i joins i-1, who joined i-2) ends with everyone at the same address."""
    for i in np.flatnonzero(household_of >= 0):
        for column in columns:
            column[i] = column[household_of[i]]


def draw_population(
    rng: np.random.Generator, first_index: int, n: int, gen: GeneratorConfig, history_days: int,
    end_date: np.datetime64
) -> Population:
    """Draw `n` people (global indices first_index..first_index+n-1) with their true traits."""
    btyd = gen.btyd
    idx = np.arange(first_index, first_index + n)
    given_i = rng.integers(0, len(GIVEN_NAMES), n)
    family_i = rng.integers(0, len(FAMILY_NAMES), n)
    given = np.array([GIVEN_NAMES[i][0] for i in given_i], dtype=object)
    gender = np.array([GIVEN_NAMES[i][1] for i in given_i], dtype=object)
    family = np.array([FAMILY_NAMES[i] for i in family_i], dtype=object)
    is_test = rng.random(n) < gen.test_account_share
    given[is_test] = "Test"
    family[is_test] = "User"
    # Housemates share a family name before any address is built from it (hard negatives:
    # different people, same surname and address, own given name, birth date, e-mail, phone).
    household_of = _households(rng, is_test, gen.dirt.household_share)
    _move_in(household_of, family)

    domains = rng.integers(0, len(EMAIL_DOMAINS), n)
    email = np.array(
        [
            f"qa+{i}@cdp-internal.test" if t else f"{_email_local(g, f, int(i))}@{EMAIL_DOMAINS[d]}"
            for i, g, f, d, t in zip(idx, given, family, domains, is_test)
        ],
        dtype=object,
    )
    tags = rng.integers(0, len(SECOND_MAILBOX_TAGS), n)
    domains2 = rng.integers(0, len(EMAIL_DOMAINS), n)
    # Test accounts get none: their duplicates are never generated, and any address of theirs
    # must stay inside the test-account patterns that silver filters on.
    second_email = np.array(
        [
            "" if t else _second_email(g, f, int(i), SECOND_MAILBOX_TAGS[tg], EMAIL_DOMAINS[d])
            for i, g, f, tg, d, t in zip(idx, given, family, tags, domains2, is_test)
        ],
        dtype=object,
    )
    city_index = rng.integers(0, len(CITIES), n)
    new_city_index = np.where(rng.random(n) < 0.7, city_index, rng.integers(0, len(CITIES), n))
    area = np.array([CITIES[c][4][k % len(CITIES[c][4])] for c, k in zip(city_index, idx)], dtype=object)
    line = rng.integers(2_000_000, 9_999_999, n)
    phone = np.array([f"{a}{ln:07d}" for a, ln in zip(area, line)], dtype=object)

    def street_of(k: np.ndarray) -> np.ndarray:
        num = rng.integers(1, 2500, len(k))
        return np.array([f"{x} {STREETS[s]}" for x, s in zip(num, rng.integers(0, len(STREETS), len(k)))], dtype=object)

    def postcode_of(cities: np.ndarray) -> np.ndarray:
        digits = rng.integers(0, 100, len(cities))
        return np.array([f"{CITIES[c][3]}{d:02d}" for c, d in zip(cities, digits)], dtype=object)

    street, postcode = street_of(idx), postcode_of(city_index)
    moved = rng.random(n) < gen.dirt.moved_address
    new_street, new_postcode = street_of(idx), postcode_of(new_city_index)
    # Both addresses (and whether there is a second) come from the housemate, so every source
    # sees one household; the phone keeps the person's own area code, like a mobile number.
    _move_in(household_of, city_index, street, postcode, moved, new_city_index, new_street, new_postcode)

    age_days = rng.integers(18 * 365, 80 * 365, n)
    birth_date = end_date - age_days.astype("timedelta64[D]")

    channel = rng.choice(len(SIGNUP_CHANNELS), n, p=SIGNUP_WEIGHTS)
    is_prospect = rng.random(n) < gen.prospect_share
    first_seen = rng.uniform(0, history_days, n)

    lam = rng.gamma(btyd.r, 1.0 / btyd.alpha, n)
    p_drop = rng.beta(btyd.a, btyd.b, n)
    nu = rng.gamma(btyd.spend_q, 1.0 / btyd.spend_gamma, n)

    pref = rng.dirichlet(np.full(len(CATEGORIES), 0.4), n)
    return Population(
        person_id=np.array([f"P{i:09d}" for i in idx], dtype=object),
        given_name=given,
        family_name=family,
        gender=gender,
        birth_date=birth_date,
        email=email,
        second_email=second_email,
        phone_digits=phone,
        city_index=city_index,
        street=street,
        postcode=postcode,
        moved=moved,
        new_street=new_street,
        new_city_index=new_city_index,
        new_postcode=new_postcode,
        household_of=household_of,
        signup_channel=np.array([SIGNUP_CHANNELS[c] for c in channel], dtype=object),
        email_opt_in=rng.random(n) < 0.7,
        sms_opt_in=rng.random(n) < 0.35,
        is_test=is_test,
        is_prospect=is_prospect,
        first_seen=first_seen,
        lam=lam,
        p_drop=p_drop,
        nu=nu,
        engagement=rng.beta(2, 3, n),
        satisfaction=rng.beta(5, 2, n),
        support_need=rng.gamma(1.0, 0.8, n),
        store_share=np.where(rng.random(n) < 0.4, rng.beta(2, 2, n), 0.0),
        category_pref=pref,
        second_account=rng.random(n) < 0.05,
        has_loyalty=rng.random(n) < 0.6,
    )


def simulate_purchases(
    rng: np.random.Generator, pop: Population, history_days: int
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Purchase times per person under BG/NBD, the dropout day (inf if alive) and alive flags.

    The first purchase happens when the person is acquired (`first_seen`); prospects make
    none. A person can drop out only after a repeat purchase, as BG/NBD assumes.
    """
    n = len(pop.person_id)
    buyers = ~pop.is_prospect
    times: list[list[float]] = [[float(pop.first_seen[i])] if buyers[i] else [] for i in range(n)]
    dropout_day = np.full(n, np.inf)
    current = pop.first_seen.copy()
    active = buyers.copy()
    while active.any():
        ids = np.flatnonzero(active)
        nxt = current[ids] + rng.exponential(1.0 / pop.lam[ids])
        within = nxt < history_days
        for i, t in zip(ids[within], nxt[within]):
            times[i].append(float(t))
        current[ids] = nxt
        drops = within & (rng.random(len(ids)) < pop.p_drop[ids])
        dropout_day[ids[drops]] = nxt[drops]
        active[ids[~within | drops]] = False
    alive = buyers & np.isinf(dropout_day)
    return [np.array(t) for t in times], dropout_day, alive
