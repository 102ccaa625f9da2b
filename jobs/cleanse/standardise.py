"""Column standardisers built on the libraries made for them, as vectorised pandas UDFs.

email-validator checks syntax (no DNS: the pipeline must not depend on the network),
phonenumbers parses any human format into E.164, unicodedata normalises names. Each UDF
works on whole Arrow batches, and returns null for values that cannot be standardised.
They cost tens of microseconds a value, and a value recurs (a customer's e-mail on every
order, a city on every contact), so frames call them once per distinct value (`per_distinct`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T


def per_distinct(df: DataFrame, column: str, standardiser: Callable[[Column], Column], out: str) -> DataFrame:
    """`df` with `out` = `standardiser(column)`, computed once per distinct value of `column` in a lookup
    joined back on the value (null values stay null without a call)."""
    value = f"_{out}_value"
    lookup = df.select(F.col(column).alias(value)).where(F.col(value).isNotNull()).distinct() \
        .select(value, standardiser(F.col(value)).alias(out))
    return df.join(lookup, F.col(column) == F.col(value), "left").drop(value)


# RFC 5322 lets a local part hold = | ! / ' and more, so `=cmd|'/Ccalc'!A0@example.com` is valid syntax; mail
# providers deliver to far fewer. The default policy (conf cleanse.email_local_part): letters and digits
# in any script, then also . _ % + ' -; never a leading character a spreadsheet reads as a formula.
DELIVERABLE_LOCAL_PART = r"^\w[\w.%+'-]*$"


def _email_udf_for(local_part: str):
    @F.pandas_udf(T.StringType())
    def to_email(raw: pd.Series) -> pd.Series:
        from email_validator import EmailNotValidError, validate_email

        deliverable = re.compile(local_part)

        def one(value: str | None) -> str | None:
            if value is None:
                return None
            text = value.strip().lower()
            if not text:
                return None
            try:
                valid = validate_email(text, check_deliverability=False, allow_smtputf8=True, test_environment=True)
            except EmailNotValidError:
                return None
            return valid.normalized.lower() if deliverable.match(valid.local_part.lower()) else None

        return raw.map(one)

    return to_email


def email(col: Column | str, local_part: str = DELIVERABLE_LOCAL_PART) -> Column:
    """Trimmed, lower-cased, syntax-checked e-mail address whose local part matches the `local_part` policy
    (a regular expression); null otherwise."""
    return _email_udf_for(local_part)(F.col(col) if isinstance(col, str) else col)


def _phone_udf_for(region: str):
    @F.pandas_udf(T.StringType())
    def to_e164(raw: pd.Series) -> pd.Series:
        import phonenumbers

        def one(value: str | None) -> str | None:
            if value is None or not value.strip():
                return None
            try:
                number = phonenumbers.parse(value, region)
            except phonenumbers.NumberParseException:
                return None
            if not phonenumbers.is_valid_number(number):
                return None
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

        return raw.map(one)

    return to_e164


def phone_e164(col: Column | str, default_region: str) -> Column:
    """Phone number in E.164 ('+14155550123'); numbers without a country code use `default_region`."""
    return _phone_udf_for(default_region)(F.col(col) if isinstance(col, str) else col)


_WORD = re.compile(r"[^\s\-']+")


@F.pandas_udf(T.StringType())
def _name_udf(raw: pd.Series) -> pd.Series:
    def one(value: str | None) -> str | None:
        if value is None:
            return None
        text = " ".join(unicodedata.normalize("NFC", value).split())
        # Capitalise each part of a word, so O'Brien and Anne-Marie stay readable.
        return _WORD.sub(lambda m: m.group(0)[:1].upper() + m.group(0)[1:].lower(), text) or None

    return raw.map(one)


def person_name(col: Column | str) -> Column:
    """Unicode NFC, collapsed whitespace, capitalised words; null when empty."""
    return _name_udf(F.col(col) if isinstance(col, str) else col)


def address_tokens(col: Column | str) -> Column:
    """Upper-case address with common suffixes abbreviated (USPS style) and punctuation removed."""
    c = F.upper(F.regexp_replace(F.col(col) if isinstance(col, str) else col, r"[.,#]", " "))
    for long, short in (("STREET", "ST"), ("AVENUE", "AVE"), ("DRIVE", "DR"), ("LANE", "LN"), ("ROAD", "RD"),
                        ("BOULEVARD", "BLVD"), ("COURT", "CT")):
        c = F.regexp_replace(c, rf"\b{long}\b", short)
    return F.trim(F.regexp_replace(c, r"\s+", " "))
