"""`cdp generate-contacts`: a typo-heavy contact list with ground truth, for `cdp resolve` and its tests.

The pipeline's generator has forty given and forty family names and one typo at most; real lists
are harder. Here:
- names at realistic, skewed frequencies (a few very common, a long tail), so a shared name says
  little and term-frequency adjustment matters;
- households: people sharing family name, street, postcode, locality and often a phone or e-mail,
  with different given names and birth dates, who must stay apart;
- duplicates of a person with several defects each: edits to names (first letter too), given and
  family name swapped, nicknames, birth dates missing, impossible, off by one field or day/month
  swapped, postcode typos, abbreviated localities, missing or second e-mails and phones.

Vectorised over people with numpy; per-record Python only for the edits of duplicate records.
Writes `list.csv` (schemas.raw.CONTACT_LIST columns) and `truth.csv` (source_record_id, person_id).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from jobs.tools.generate.population import FAMILY_NAMES, GIVEN_NAMES

NICKNAMES = {"William": "Bill", "Robert": "Bob", "Elizabeth": "Liz", "Jennifer": "Jen", "Michael": "Mike",
             "James": "Jim", "Richard": "Rick", "Patricia": "Pat", "Susan": "Sue", "Barbara": "Barb",
             "David": "Dave", "Mohammed": "Mo", "Olivia": "Liv", "Lukas": "Luke", "Margaret": "Peggy"}
ONSETS = ["b", "br", "c", "ch", "d", "dr", "f", "g", "gr", "h", "j", "k", "l", "m", "n", "p", "r", "s", "sh", "st",
          "t", "th", "v", "w", "z"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "ie", "y"]
CODAS = ["", "", "n", "r", "s", "l", "th", "ck", "nd", "rt", "ll", "m", "x"]
STREET_KINDS = ["Street", "Avenue", "Road", "Lane", "Drive", "Court", "Place", "Crescent"]
LOCALITY_SUFFIXES = ["", " Heights", " Park", " Springs", " Hill", " Falls", " Valley"]
STATES = ["NSW", "VIC", "QLD", "WA", "SA", "TAS", "ACT", "NT"]
KEYBOARD = "qwertyuiopasdfghjklzxcvbnm"


def _coined(rng: np.random.Generator, n: int, syllables: tuple[int, int]) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        k = int(rng.integers(syllables[0], syllables[1] + 1))
        word = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(k)) + rng.choice(CODAS)
        out.add(word.capitalize())
    return sorted(out)


def _zipf(rng: np.random.Generator, values: list[str], n: int, exponent: float) -> np.ndarray:
    """n draws from `values` with Zipf-like weights in a shuffled order (the first names are not the common ones)."""
    order = rng.permutation(len(values))
    weights = 1.0 / np.arange(1, len(values) + 1) ** exponent
    return np.asarray(values, dtype=object)[order][rng.choice(len(values), n, p=weights / weights.sum())]


def typo(rng: np.random.Generator, text: str, first_letter: bool = False) -> str:
    """One insertion, deletion, substitution or transposition; at the first letter when asked."""
    if not text:
        return text
    i = 0 if first_letter or len(text) < 2 else int(rng.integers(0, len(text)))
    kind = int(rng.integers(0, 4))
    letter = KEYBOARD[int(rng.integers(0, len(KEYBOARD)))]
    if kind == 0:
        out = text[:i] + letter + text[i:]
    elif kind == 1 and len(text) > 2:
        out = text[:i] + text[i + 1:]
    elif kind == 2:
        out = text[:i] + letter + text[i + 1:]
    else:
        j = min(i + 1, len(text) - 1)
        out = text[:i] + text[j] + text[i] + text[j + 1:] if j > i else text + letter
    return out[:1].upper() + out[1:] if text[:1].isupper() else out


def _digit_typo(rng: np.random.Generator, digits: str) -> str:
    """One digit replaced, or two neighbours transposed."""
    if len(digits) < 2:
        return digits
    i = int(rng.integers(0, len(digits) - 1))
    if rng.random() < 0.5:
        return digits[:i] + digits[i + 1] + digits[i] + digits[i + 2:]
    return digits[:i] + str(int(rng.integers(0, 10))) + digits[i + 1:]


def _birth_date_defect(rng: np.random.Generator, iso: str) -> str:
    year, month, day = iso.split("-")
    kind = int(rng.integers(0, 4))
    if kind == 0 and int(day) <= 12 and day != month:
        return f"{year}-{day}-{month}"                                      # day and month swapped
    if kind == 1:
        return f"{year}-{month}-{min(int(day) + 2, 31):02d}" if month == "02" else f"{year}-{month}-31"  # impossible
    if kind == 2:
        return f"{int(year) + int(rng.choice([-1, 1, -10, 10]))}-{month}-{day}"  # year off
    return f"{year}-{month}-{(int(day) % 28) + 1:02d}"                      # day off


class ListBuilder:
    def __init__(self, people: int, seed: int, household_share: float, duplicate_rate: float):
        rng = self.rng = np.random.default_rng(seed)
        given_pool = [g for g, _ in GIVEN_NAMES] + _coined(rng, 600, (1, 3))
        family_pool = list(FAMILY_NAMES) + _coined(rng, 4000, (2, 3))
        self.localities = [(name + rng.choice(LOCALITY_SUFFIXES), STATES[int(rng.integers(0, len(STATES)))],
                            f"{int(rng.integers(1000, 9999))}")
                           for name in _coined(rng, max(60, people // 400), (2, 3))]
        streets = _coined(rng, max(200, people // 50), (2, 3))
        n = people
        self.person = np.array([f"P{i:08d}" for i in range(n)], dtype=object)
        # Top given name about 5% of people, top family name about 1.5%, as in US and Australian records.
        self.given = _zipf(rng, given_pool, n, 0.7)
        self.family = _zipf(rng, family_pool, n, 0.6)
        self.dob = (np.datetime64("1940-01-01") + rng.integers(0, 365 * 65, n)).astype(str)
        self.locality = rng.integers(0, len(self.localities), n)
        self.street = np.array([f"{int(rng.integers(1, 400))} {streets[int(rng.integers(0, len(streets)))]} "
                                f"{STREET_KINDS[int(rng.integers(0, len(STREET_KINDS)))]}" for _ in range(n)],
                               dtype=object)
        self.email = np.array([f"{g.lower()}.{f.lower()}{int(rng.integers(1, 999))}@example.com"
                               for g, f in zip(self.given, self.family)], dtype=object)
        self.phone = np.array([f"+61 4{int(rng.integers(10_000_000, 99_999_999))}" for _ in range(n)], dtype=object)
        # Households: person i moves in with i-1 (family name, street, locality; the phone mostly, the
        # e-mail sometimes).
        joins = np.flatnonzero(rng.random(n) < household_share)
        joins = joins[joins > 0]
        for i in joins:
            for column in (self.family, self.street, self.locality):
                column[i] = column[i - 1]
            if rng.random() < 0.7:
                self.phone[i] = self.phone[i - 1]
            if rng.random() < 0.2:
                self.email[i] = self.email[i - 1]
        self.households = len(joins)
        self.duplicates = rng.poisson(duplicate_rate, n)

    def record(self, i: int, k: int, defects: int) -> list[str]:
        rng = self.rng
        locality, state, postcode = self.localities[self.locality[i]]
        row = {"first_name": self.given[i], "last_name": self.family[i], "email": self.email[i],
               "phone": self.phone[i], "street": self.street[i], "city": locality, "postcode": postcode,
               "region": state, "dob": self.dob[i]}
        for _ in range(defects):
            kind = int(rng.integers(0, 10))
            if kind == 0:
                row["first_name"] = typo(rng, row["first_name"], first_letter=rng.random() < 0.2)
            elif kind == 1:
                row["last_name"] = typo(rng, typo(rng, row["last_name"]) if rng.random() < 0.3 else row["last_name"],
                                        first_letter=rng.random() < 0.2)
            elif kind == 2:
                row["first_name"], row["last_name"] = row["last_name"], row["first_name"]
            elif kind == 3:
                row["first_name"] = NICKNAMES.get(row["first_name"], row["first_name"][:3])
            elif kind == 4 and row["dob"]:
                row["dob"] = "" if rng.random() < 0.4 else _birth_date_defect(rng, row["dob"])
            elif kind == 5:
                row["postcode"] = _digit_typo(rng, row["postcode"])
            elif kind == 6:
                row["city"] = row["city"].split(" ")[0] if " " in row["city"] else row["city"][:-1]
            elif kind == 7:
                row["street"] = typo(rng, row["street"].replace("Street", "St").replace("Avenue", "Ave"))
            elif kind == 8:
                second = f"{row['first_name'].lower()}{int(rng.integers(1, 99))}@mail.org"
                row["email"] = "" if rng.random() < 0.6 else second
            else:
                row[str(rng.choice(["phone", "street", "postcode", "email"]))] = ""
        return ["list", f"R{i:08d}-{k}", row["first_name"], row["last_name"], row["email"], row["phone"],
                row["street"], "", row["city"], row["postcode"], row["region"], "AU", row["dob"], "", ""]


HEADER = ["source", "source_record_id", "first_name", "last_name", "email", "phone", "street", "address_line2", "city",
          "postcode", "region", "country", "dob", "gender", "loyalty_id"]


def generate_contact_list(out: Path, people: int, seed: int = 7, household_share: float = 0.15,
                          duplicate_rate: float = 0.8, max_defects: int = 4) -> dict[str, int]:
    """Write out/list.csv and out/truth.csv; returns the counts."""
    builder = ListBuilder(people, seed, household_share, duplicate_rate)
    out.mkdir(parents=True, exist_ok=True)
    records = 0
    with (out / "list.csv").open("w", newline="") as lf, (out / "truth.csv").open("w", newline="") as tf:
        rows, truth = csv.writer(lf), csv.writer(tf)
        rows.writerow(HEADER)
        truth.writerow(["source_record_id", "person_id"])
        for i in range(people):
            for k in range(1 + int(builder.duplicates[i])):
                # The first record is clean but for an occasional missing field; duplicates carry 1..max defects.
                defects = 0 if k == 0 else int(builder.rng.integers(1, max_defects + 1))
                row = builder.record(i, k, defects)
                rows.writerow(row)
                truth.writerow([row[1], builder.person[i]])
                records += 1
    return {"people": people, "records": records, "households": builder.households}
