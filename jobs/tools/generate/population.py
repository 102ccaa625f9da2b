"""The latent population: true people, their attributes and their buy-till-you-die behaviour.

Purchases follow BG/NBD (Fader, Hardie & Lee 2005): while alive a customer buys as a
Poisson process with rate lambda ~ Gamma(r, alpha); after each repeat purchase they drop
out with probability p ~ Beta(a, b). Order values follow Gamma-Gamma (Fader, Hardie & Lee
2005b): value ~ Gamma(spend_p, nu), nu ~ Gamma(spend_q, spend_gamma). Times are in days
from the start of the history window.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from jobs.platform.settings import GeneratorConfig
from jobs.tools.generate import text

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


TEST_GIVEN_NAME, TEST_FAMILY_NAME = "Test", "User"
# Name codes: an index into these lists (test accounts have the last of each).
GIVEN = [g for g, _ in GIVEN_NAMES] + [TEST_GIVEN_NAME]
FAMILY = [*FAMILY_NAMES, TEST_FAMILY_NAME]


def _ascii_fold(name: str) -> str:
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower().replace("'", "")


@dataclass
class Population:
    """Arrays over the people of one chunk (index i is one person); text as Arrow string arrays."""

    index: np.ndarray               # global index of each person
    person_id: pa.StringArray
    given_code: np.ndarray          # index into GIVEN
    family_code: np.ndarray         # index into FAMILY
    given_name: pa.StringArray
    family_name: pa.StringArray
    gender: pa.StringArray
    birth_date: np.ndarray          # datetime64[D]
    email: pa.StringArray
    second_email: pa.StringArray    # another mailbox of the same person, never used by anyone else
    phone_digits: pa.StringArray    # 10 national digits (NANP)
    city_index: np.ndarray
    street: pa.StringArray
    postcode: pa.StringArray
    moved: np.ndarray               # a second, newer address exists
    new_street: pa.StringArray
    new_city_index: np.ndarray
    new_postcode: pa.StringArray
    household_of: np.ndarray        # chunk index of the housemate whose name and address were taken, or -1
    signup_channel: np.ndarray      # index into SIGNUP_CHANNELS
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

    def __len__(self) -> int:
        return len(self.index)


def email_locals(given_code: np.ndarray, family_code: np.ndarray, k: np.ndarray) -> pa.StringArray:
    """Plausible mailbox names, unique per person (`k` is the person's global index)."""
    g = text.pick([_ascii_fold(name) for name in GIVEN], given_code)
    f = text.pick([_ascii_fold(name) for name in FAMILY], family_code)
    initial = text.pick([_ascii_fold(name)[:1] for name in GIVEN], given_code)
    digits = text.number(k)
    styles = [text.concat(g, ".", f, ".", digits), text.concat(initial, f, digits), text.concat(g, f, digits),
              text.concat(f, ".", g, digits)]
    return text.choose(k % 4, styles)


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


def household_root(household_of: np.ndarray) -> np.ndarray:
    """The person whose name and address each one ends up with: a chain of households (i joins
    i-1, who joined i-2) ends with everyone at the first one's address."""
    return np.maximum.accumulate(np.where(household_of >= 0, 0, np.arange(len(household_of))))


def draw_population(
    rng: np.random.Generator, first_index: int, n: int, gen: GeneratorConfig, history_days: int,
    end_date: np.datetime64
) -> Population:
    """Draw `n` people (global indices first_index..first_index+n-1) with their true traits."""
    btyd = gen.btyd
    idx = np.arange(first_index, first_index + n)
    given_code = rng.integers(0, len(GIVEN_NAMES), n)
    family_code = rng.integers(0, len(FAMILY_NAMES), n)
    gender = text.pick([sex for _, sex in GIVEN_NAMES], given_code)
    is_test = rng.random(n) < gen.test_account_share
    given_code[is_test] = GIVEN.index(TEST_GIVEN_NAME)
    family_code[is_test] = FAMILY.index(TEST_FAMILY_NAME)
    # Housemates share a family name before any address is built from it (hard negatives:
    # different people, same surname and address, own given name, birth date, e-mail, phone).
    household_of = _households(rng, is_test, gen.dirt.household_share)
    root = household_root(household_of)
    family_code = family_code[root]

    local = email_locals(given_code, family_code, idx)
    domains = rng.integers(0, len(EMAIL_DOMAINS), n)
    email = text.where(is_test, text.concat("qa+", text.number(idx), "@cdp-internal.test"),
                       text.concat(local, "@", text.pick(EMAIL_DOMAINS, domains)))
    tags = rng.integers(0, len(SECOND_MAILBOX_TAGS), n)
    domains2 = rng.integers(0, len(EMAIL_DOMAINS), n)
    # Names hold no digits, so the digits before the tag are the person's index and the address is
    # the person's own; ending in letters, it is nobody's first address. Test accounts get none:
    # their duplicates are never generated, and any address of theirs must stay inside the
    # test-account patterns that silver filters on.
    second_email = text.where(is_test, "", text.concat(local, ".", text.pick(SECOND_MAILBOX_TAGS, tags), "@",
                                                      text.pick(EMAIL_DOMAINS, domains2)))
    city_index = rng.integers(0, len(CITIES), n)
    new_city_index = np.where(rng.random(n) < 0.7, city_index, rng.integers(0, len(CITIES), n))
    areas = [(c, a) for c, city in enumerate(CITIES) for a in city[4]]
    first_area = np.array([[c for c, _ in areas].index(c) for c in range(len(CITIES))])
    n_areas = np.array([len(city[4]) for city in CITIES])
    area = first_area[city_index] + idx % n_areas[city_index]
    phone = text.concat(text.pick([a for _, a in areas], area), text.number(rng.integers(2_000_000, 9_999_999, n), 7))

    def street_of() -> pa.StringArray:
        num = rng.integers(1, 2500, n)
        return text.concat(text.number(num), " ", text.pick(STREETS, rng.integers(0, len(STREETS), n)))

    def postcode_of(cities: np.ndarray) -> pa.StringArray:
        return text.concat(text.pick([c[3] for c in CITIES], cities), text.number(rng.integers(0, 100, n), 2))

    street, postcode = street_of(), postcode_of(city_index)
    moved = rng.random(n) < gen.dirt.moved_address
    new_street, new_postcode = street_of(), postcode_of(new_city_index)
    # Both addresses (and whether there is a second) come from the housemate, so every source
    # sees one household; the phone keeps the person's own area code, like a mobile number.
    take = pa.array(root)
    street, postcode, new_street, new_postcode = (a.take(take) for a in (street, postcode, new_street, new_postcode))
    city_index, moved, new_city_index = city_index[root], moved[root], new_city_index[root]

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
        index=idx,
        person_id=text.concat("P", text.number(idx, 9)),
        given_code=given_code,
        family_code=family_code,
        given_name=text.pick(GIVEN, given_code),
        family_name=text.pick(FAMILY, family_code),
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
        signup_channel=channel,
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


@dataclass
class Purchases:
    """Every purchase of a chunk, ordered by person and then time."""

    person: np.ndarray              # chunk index of the buyer
    day: np.ndarray                 # days from the start of history
    dropout_day: np.ndarray         # per person: the day they dropped out, inf if alive or never bought
    alive: np.ndarray               # per person

    def count(self, n: int) -> np.ndarray:
        return np.bincount(self.person, minlength=n)

    def last_day(self, n: int) -> np.ndarray:
        """Per person, the day of the last purchase (nan without any)."""
        last = np.full(n, np.nan)
        final = np.flatnonzero(np.r_[self.person[1:] != self.person[:-1], True]) if len(self.person) else []
        last[self.person[final]] = self.day[final]   # ordered by time within a person
        return last


def simulate_purchases(rng: np.random.Generator, pop: Population, history_days: int) -> Purchases:
    """Purchase times under BG/NBD, with each person's dropout day (inf if alive) and alive flag.

    The first purchase happens when the person is acquired (`first_seen`); prospects make
    none. A person can drop out only after a repeat purchase, as BG/NBD assumes.
    """
    n = len(pop)
    buyers = ~pop.is_prospect
    people, days = [np.flatnonzero(buyers)], [pop.first_seen[buyers]]
    dropout_day = np.full(n, np.inf)
    current = pop.first_seen.copy()
    active = buyers.copy()
    while active.any():
        ids = np.flatnonzero(active)
        nxt = current[ids] + rng.exponential(1.0 / pop.lam[ids])
        within = nxt < history_days
        people.append(ids[within])
        days.append(nxt[within])
        current[ids] = nxt
        drops = within & (rng.random(len(ids)) < pop.p_drop[ids])
        dropout_day[ids[drops]] = nxt[drops]
        active[ids[~within | drops]] = False
    person, day = np.concatenate(people), np.concatenate(days)
    # Rounds are in time order for each person, so a stable sort by person keeps each one's times ordered.
    order = np.argsort(person, kind="stable")
    return Purchases(person[order], day[order], dropout_day, buyers & np.isinf(dropout_day))
