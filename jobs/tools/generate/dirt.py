"""Realistic defects, applied to clean values with a known rate and recorded as ground truth."""

from __future__ import annotations

import numpy as np

TRANSLITERATIONS = {"ü": "ue", "ö": "oe", "ä": "ae", "ß": "ss", "é": "e", "è": "e", "ç": "c",
                    "ø": "o", "ñ": "n", "á": "a", "í": "i", "ó": "o", "ë": "e", "å": "a"}


def messy_email(rng: np.random.Generator, email: str) -> str:
    style = rng.integers(0, 4)
    if style == 0:
        return email.upper()
    if style == 1:
        return f"  {email} "
    if style == 2:
        local, _, domain = email.partition("@")
        return f"{local.capitalize()}@{domain.upper()}"
    return f"{email}\t"


def format_phone(rng: np.random.Generator, digits: str, vary: bool) -> str:
    """NANP number in the canonical '+1XXXXXXXXXX' or, when `vary`, a common human format."""
    if not vary:
        return f"+1{digits}"
    a, b, c = digits[:3], digits[3:6], digits[6:]
    formats = [f"({a}) {b}-{c}", f"{a}.{b}.{c}", f"+1 {a} {b} {c}", f"{digits}", f"1-{a}-{b}-{c}", f"{a}-{b}-{c}"]
    return formats[int(rng.integers(0, len(formats)))]


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


def random_case(rng: np.random.Generator, text: str) -> str:
    style = rng.integers(0, 3)
    return text.upper() if style == 0 else text.lower() if style == 1 else f" {text}"
