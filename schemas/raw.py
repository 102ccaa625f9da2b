"""Contracts of the raw sources in the landing zone (`landing/<source>/<batch date>/`).

The generator writes these and ingestion reads them; a user's own files must follow the
same contract. Fields not marked required may be empty. Extra columns are accepted and
recorded as schema drift; a missing required column or a type change fails the batch.
"""

from __future__ import annotations

from schemas import C, Range, RawSource

# How each format is read (shown with every source in docs/tables.md).
DIALECTS = {
    "csv": "UTF-8 (a byte-order mark is dropped; other bytes are BAD_ENCODING), optionally gzip-compressed "
           "(`.gz`). The first line is a header naming the columns, in any order, quoted or not. Fields are "
           "separated by commas and may be quoted with `\"`, a quote inside doubled. Lines end in LF or CRLF. One "
           "record per physical line: a quoted field holding a line break leaves two halves with unbalanced "
           "quotes, both quarantined as MALFORMED_ROW. An empty file or a header alone is accounted as `empty`.",
    "jsonl": "UTF-8 (other bytes are BAD_ENCODING), optionally gzip-compressed (`.gz`), one JSON object per line, "
             "LF or CRLF. A key given twice, at the top or in a nested object, is MALFORMED_ROW. A nested value "
             "of the wrong type (a quantity of \"two\" or 2.5) is TYPE_MISMATCH; NaN and Infinity are read, then "
             "quarantined as NON_FINITE. A number, boolean, object or array in a text field is kept as its JSON "
             "text (an e-mail given as an object then fails e-mail validation in silver).",
}

ORDER_LINE = "struct<sku:string,category:string,quantity:int,unit_price:double>"

CONTACTS = RawSource(
    name="contacts",
    format="csv",
    doc="CRM contacts, one row per contact record; a person may have several (systems, moves).",
    record_id="contact_id",
    timestamp="updated_at",
    columns=(
        C("contact_id", "string", False, "CRM record key"),
        C("first_name", "string"),
        C("last_name", "string"),
        C("email", "string"),
        C("phone", "string", doc="any common format; normalised to E.164 in silver"),
        C("street", "string"),
        C("city", "string"),
        C("postcode", "string"),
        C("country", "string"),
        C("birth_date", "date"),
        C("gender", "string"),
        C("loyalty_number", "string"),
        C("signup_channel", "string"),
        C("email_opt_in", "boolean"),
        C("sms_opt_in", "boolean"),
        C("created_at", "timestamp", False),
        C("updated_at", "timestamp", False),
    ),
)

ORDERS = RawSource(
    name="orders",
    format="jsonl",
    doc="E-commerce orders with their line items, one JSON object per line.",
    record_id="order_id",
    timestamp="order_ts",
    columns=(
        C("order_id", "string", False),
        C("account_id", "string", False, "e-commerce account of the buyer"),
        C("email", "string"),
        C("order_ts", "timestamp", False),
        C("channel", "string", False, "web or app"),
        C("currency", "string", False),
        C("status", "string", False, "completed, returned or cancelled"),
        C("shipping_postcode", "string"),
        C("lines", f"array<{ORDER_LINE}>", False, ranges=(
            Range(1, 10_000, field="quantity", plausible=True),
            Range(0, 100_000, field="unit_price", plausible=True))),
    ),
)

POS = RawSource(
    name="pos",
    format="csv",
    doc="Store point-of-sale transactions in the store's local time and currency.",
    record_id="transaction_id",
    timestamp="local_ts",
    timezone="Europe/Berlin",
    columns=(
        C("transaction_id", "string", False),
        C("store_id", "string", False),
        C("loyalty_number", "string", doc="empty for anonymous purchases"),
        C("local_ts", "timestamp_ntz", False, "store local time, no zone"),
        C("currency", "string", False),
        C("amount", "double", False, ranges=(Range(0, 1_000_000, plausible=True),)),
        C("items", "string", False, "'sku:category:quantity:unit_price' joined by '|'"),
    ),
)

EVENTS = RawSource(
    name="events",
    format="jsonl",
    doc="Web and app events; user_id is set from the login event of a session onward.",
    record_id="event_id",
    timestamp="event_ts",
    columns=(
        C("event_id", "string", False),
        C("device_id", "string", False),
        C("user_id", "string", doc="account id once logged in"),
        C("session_hint", "string", doc="client session token, when the client sends one"),
        C("event_type", "string", False),
        C("event_ts", "timestamp", False),
        C("platform", "string", False),
        C("sku", "string"),
        C("order_id", "string"),
    ),
)

TICKETS = RawSource(
    name="tickets",
    format="csv",
    doc="Support tickets with free text.",
    record_id="ticket_id",
    timestamp="created_at",
    columns=(
        C("ticket_id", "string", False),
        C("email", "string"),
        C("account_id", "string"),
        C("channel", "string", False),
        C("category", "string", False),
        C("priority", "string"),
        C("created_at", "timestamp", False),
        C("first_response_at", "timestamp"),
        C("resolved_at", "timestamp"),
        C("text", "string"),
    ),
)

SURVEYS = RawSource(
    name="surveys",
    format="csv",
    doc="NPS (0-10) and CSAT (1-5) survey responses with optional comments.",
    record_id="response_id",
    timestamp="responded_at",
    columns=(
        C("response_id", "string", False),
        C("email", "string"),
        C("survey_type", "string", False),
        C("score", "int", False, ranges=(Range(0, 10, when=("survey_type", "NPS")),
                                         Range(1, 5, when=("survey_type", "CSAT")))),
        C("comment", "string"),
        C("responded_at", "timestamp", False),
    ),
)

CAMPAIGN_EVENTS = RawSource(
    name="campaign_events",
    format="csv",
    doc="E-mail campaign interactions: sent, open, click, unsubscribe.",
    record_id="interaction_id",
    timestamp="event_ts",
    columns=(
        C("interaction_id", "string", False),
        C("campaign_id", "string", False),
        C("email", "string", False),
        C("event_type", "string", False),
        C("event_ts", "timestamp", False),
    ),
)

MARKETING_SPEND = RawSource(
    name="marketing_spend",
    format="csv",
    doc="Marketing spend per channel per day.",
    record_id="spend_id",
    timestamp="spend_date",
    columns=(
        C("spend_id", "string", False),
        C("spend_date", "date", False),
        C("channel", "string", False),
        C("currency", "string", False),
        C("amount", "double", False, ranges=(Range(0, 100_000_000, plausible=True),)),
    ),
)

REFERRALS = RawSource(
    name="referrals",
    format="csv",
    doc="Loyalty-programme referrals: who brought whom.",
    record_id="referral_id",
    timestamp="referred_at",
    columns=(
        C("referral_id", "string", False),
        C("referrer_loyalty_number", "string", False),
        C("referred_email", "string", False),
        C("referred_at", "timestamp", False),
    ),
)

FX_RATES = RawSource(
    name="fx_rates",
    format="csv",
    doc="Daily exchange rates: units of the reporting currency per unit of `currency`.",
    record_id="rate_id",
    timestamp="rate_date",
    columns=(
        C("rate_id", "string", False),
        C("rate_date", "date", False),
        C("currency", "string", False),
        C("rate", "double", False, ranges=(Range(0, 1_000_000, above_minimum=True, plausible=True),)),
    ),
)

SOURCES: dict[str, RawSource] = {
    s.name: s
    for s in (CONTACTS, ORDERS, POS, EVENTS, TICKETS, SURVEYS, CAMPAIGN_EVENTS, MARKETING_SPEND, REFERRALS, FX_RATES)
}

def plausible_ranges() -> dict[str, Range]:
    """Every range of the contracts with a plausibility limit, by 'source.column' or 'source.column.field'
    (conf `ingest.plausible_maximum` changes the limit)."""
    return {".".join(filter(None, (s.name, c.name, r.field))): r
            for s in SOURCES.values() for c in s.columns for r in c.ranges if r.plausible and r.maximum is not None}


def plausible_maximums() -> dict[str, float]:
    """Every plausibility limit of the contracts with its default."""
    return {name: r.maximum for name, r in plausible_ranges().items()}


# Not landed by the pipeline: the standard contact schema of `cdp resolve --input FILE` (CSV with a
# header, or Parquet). A missing column reads as null.
CONTACT_LIST = RawSource(
    name="contact_list",
    format="csv or parquet",
    doc="A contact list to resolve into customers with `cdp resolve`. Every column is optional except "
        "source and source_record_id; lists with names, addresses and birth dates only are matched by the "
        "probabilistic model.",
    record_id="source_record_id",
    timestamp="-",
    columns=(
        C("source", "string", False, "system the record comes from"),
        C("source_record_id", "string", False, "the record's id in that system"),
        C("first_name", "string"),
        C("last_name", "string"),
        C("email", "string"),
        C("phone", "string", doc="any format; numbers without a country code use cleanse.default_phone_region"),
        C("street", "string"),
        C("address_line2", "string"),
        C("city", "string"),
        C("postcode", "string"),
        C("region", "string"),
        C("country", "string"),
        C("dob", "string", doc="year, month, day as eight digits in that order (YYYY-MM-DD, YYYYMMDD); an "
                               "impossible date (a typo) is still compared, as text"),
        C("gender", "string"),
        C("loyalty_id", "string"),
    ),
)
