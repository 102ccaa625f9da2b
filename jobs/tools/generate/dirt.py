"""Realistic defects, applied to clean values with a known rate and recorded as ground truth.

The array functions take one value per record and return the dirty values with the mask of the
records they changed; only the rare edits that need per-value Python (typos) loop, over the
changed records alone.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.tools.generate import text

TRANSLITERATIONS = {"ü": "ue", "ö": "oe", "ä": "ae", "ß": "ss", "é": "e", "è": "e", "ç": "c",
                    "ø": "o", "ñ": "n", "á": "a", "í": "i", "ó": "o", "ë": "e", "å": "a"}


def messy_emails(rng: np.random.Generator, emails: pa.StringArray, rate: float) -> tuple[pa.StringArray, np.ndarray]:
    """Upper case, padding, a capitalised local part with an upper-case domain, or a trailing tab."""
    mask = rng.random(len(emails)) < rate
    chosen = emails.filter(pa.array(mask))
    style = rng.integers(0, 4, len(chosen))
    parts = pc.split_pattern(chosen, "@", max_splits=1)
    domain = pc.utf8_upper(pc.list_element(parts, 1))
    styles = [pc.utf8_upper(chosen), text.concat("  ", chosen, " "),
              text.concat(pc.utf8_capitalize(pc.list_element(parts, 0)), "@", domain), text.concat(chosen, "\t")]
    return text.replace(emails, mask, text.choose(style, styles)), mask


def format_phones(rng: np.random.Generator, digits: pa.StringArray, rate: float) -> tuple[pa.StringArray, np.ndarray]:
    """NANP numbers in the canonical '+1XXXXXXXXXX' or, at `rate`, a common human format."""
    mask = rng.random(len(digits)) < rate
    chosen = digits.filter(pa.array(mask))
    a, b, c = (pc.utf8_slice_codeunits(chosen, lo, hi) for lo, hi in ((0, 3), (3, 6), (6, 10)))
    formats = [text.concat("(", a, ") ", b, "-", c), text.concat(a, ".", b, ".", c),
               text.concat("+1 ", a, " ", b, " ", c), chosen, text.concat("1-", a, "-", b, "-", c),
               text.concat(a, "-", b, "-", c)]
    varied = text.choose(rng.integers(0, len(formats), len(chosen)), formats)
    return text.replace(text.concat("+1", digits), mask, varied), mask


def typos(rng: np.random.Generator, names: pa.StringArray, rate: float) -> tuple[pa.StringArray, np.ndarray]:
    mask = rng.random(len(names)) < rate
    changed = [typo(rng, name) for name in names.filter(pa.array(mask)).to_pylist()]
    return text.replace(names, mask, text.strings(changed)), mask


def typo(rng: np.random.Generator, name: str) -> str:
    """A transliteration where the name has one, else a swapped or dropped letter."""
    if any(ch in TRANSLITERATIONS for ch in name.lower()):
        return "".join(TRANSLITERATIONS.get(ch, ch) for ch in name)
    if len(name) < 4:
        return name + name[-1]
    i = int(rng.integers(1, len(name) - 2))
    if rng.random() < 0.5:
        return name[:i] + name[i + 1] + name[i] + name[i + 2 :]
    return name[:i] + name[i + 1 :]


def swap_day_month(iso_date: str) -> str | None:
    """The date with day and month swapped (US vs European entry), or None where that would
    be impossible (day > 12) or invisible (day == month)."""
    year, month, day = iso_date.split("-")
    if int(day) > 12 or day == month:
        return None
    return f"{year}-{day}-{month}"


def swapped_dates(dates: np.ndarray) -> tuple[pa.StringArray, np.ndarray]:
    """`swap_day_month` of datetime64[D] values, and where it gives another valid date."""
    iso = text.dates(dates)
    year, month, day = (pc.utf8_slice_codeunits(iso, lo, lo + width) for lo, width in ((0, 4), (5, 2), (8, 2)))
    month_n = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day_n = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
    return text.concat(year, "-", day, "-", month), (day_n <= 12) & (day_n != month_n)
