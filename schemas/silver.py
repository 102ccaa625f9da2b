"""Silver: cleansed, conformed records, one row per source record, test accounts removed.

Direct contact points (e-mail, phone, street) appear here only as keyed hashes (`*_key`,
HMAC-SHA256, for joins) and masks; their raw values are in `silver.pii_vault`, encrypted.
Amounts carry the reporting currency next to the original; timestamps are UTC.
"""

from __future__ import annotations

from schemas import C, Table

_BATCH = C("_batch_id", "string", False, "bronze batch the row came from")
_EMAIL = (C("email_key", "string", doc="HMAC-SHA256 of the standardised e-mail"),
          C("email_masked", "string", doc="e.g. a***@example.com"))

CONTACTS = Table(
    name="silver.contacts",
    doc="CRM contacts with standardised names, contact points and address; latest version per contact_id.",
    keys=("contact_id",),
    columns=(
        C("contact_id", "string", False),
        C("given_name", "string", doc="Unicode NFC, capitalised"),
        C("family_name", "string"),
        *_EMAIL,
        C("phone_key", "string", doc="HMAC-SHA256 of the E.164 phone number"),
        C("phone_masked", "string", doc="last four digits"),
        C("address_tokens", "string", doc="upper-case street with USPS abbreviations, for matching"),
        C("city", "string"),
        C("postcode", "string"),
        C("country", "string"),
        C("birth_date", "date"),
        C("gender", "string", doc="M, F or X"),
        C("loyalty_number", "string"),
        C("signup_channel", "string"),
        C("email_opt_in", "boolean"),
        C("sms_opt_in", "boolean"),
        C("created_at", "timestamp", False),
        C("updated_at", "timestamp", False),
        _BATCH,
    ),
)

PII_VAULT = Table(
    name="silver.pii_vault",
    doc="RESTRICTED. Raw contact points per source record, each column AES-256-GCM encrypted with the "
        "record key and field name as associated data. Decrypt with jobs.platform.pii.decrypt and the encryption key.",
    keys=("source", "record_id"),
    columns=(
        C("source", "string", False, "contacts, orders, tickets, surveys, campaign_events or referrals"),
        C("record_id", "string", False),
        C("email_key", "string"),
        C("phone_key", "string"),
        C("email_enc", "binary", doc="standardised e-mail"),
        C("phone_enc", "binary", doc="E.164 phone"),
        C("street_enc", "binary", doc="street as given"),
        C("_batch_id", "string", False),
    ),
)

ORDERS = Table(
    name="silver.orders",
    doc="E-commerce orders, one row per order_id; returned and cancelled orders net to zero value.",
    keys=("order_id",),
    columns=(
        C("order_id", "string", False),
        C("account_id", "string", False),
        *_EMAIL,
        C("order_ts", "timestamp", False, "UTC"),
        C("order_date", "date", False, "UTC date of order_ts"),
        C("channel", "string", False, "web or app"),
        C("status", "string", False, "completed, returned or cancelled"),
        C("currency", "string", False),
        C("line_count", "int", False),
        C("gross_amount", "double", False, "sum of quantity x unit price, order currency"),
        C("net_amount", "double", False, "gross for completed orders, 0 for returned or cancelled"),
        C("net_amount_reporting", "double", doc="net amount in the reporting currency; null if no rate"),
        _BATCH,
    ),
)

POS_TRANSACTIONS = Table(
    name="silver.pos_transactions",
    doc="Store transactions, one row per transaction_id, in UTC and the reporting currency.",
    keys=("transaction_id",),
    columns=(
        C("transaction_id", "string", False),
        C("store_id", "string", False),
        C("loyalty_number", "string", doc="null for anonymous purchases"),
        C("txn_ts", "timestamp", False, "UTC, converted from the store's zone"),
        C("txn_date", "date", False),
        C("currency", "string", False),
        C("amount", "double", False),
        C("amount_reporting", "double", doc="null if no exchange rate for the day"),
        C("line_count", "int", False),
        _BATCH,
    ),
)

ORDER_LINES = Table(
    name="silver.order_lines",
    doc="Line items of e-commerce orders and store transactions, for baskets and category analysis.",
    keys=("source", "transaction_id", "line_no"),
    columns=(
        C("source", "string", False, "orders or pos"),
        C("transaction_id", "string", False, "order_id or transaction_id"),
        C("line_no", "int", False),
        C("sku", "string", False),
        C("category", "string"),
        C("quantity", "int", False),
        C("unit_price", "double", False, "transaction currency"),
        C("line_amount_reporting", "double"),
        C("is_net", "boolean", False, "false for lines of returned or cancelled orders"),
    ),
)

EVENTS = Table(
    name="silver.events",
    doc="Web and app events, one per event_id (replays removed), with the user attached from login onward "
        "and sessions derived (30 minutes of inactivity on a device closes a session).",
    keys=("event_id",),
    columns=(
        C("event_id", "string", False),
        C("device_id", "string", False),
        C("user_id", "string", doc="account id: as sent, else from the device's latest login before the event"),
        C("session_id", "string", False),
        C("event_type", "string", False),
        C("event_ts", "timestamp", False),
        C("event_date", "date", False),
        C("platform", "string", False),
        C("sku", "string"),
        C("order_id", "string"),
        _BATCH,
    ),
    # A day's MERGE (jobs/cleanse/incremental.py) then marks the rows it replaces instead of rewriting the
    # files that hold them; an erasure purges them (jobs/delivery/erasure.py).
    properties=(("delta.enableDeletionVectors", "true"),),
)

TICKETS = Table(
    name="silver.tickets",
    doc="Support tickets with response and resolution times.",
    keys=("ticket_id",),
    columns=(
        C("ticket_id", "string", False),
        *_EMAIL,
        C("account_id", "string"),
        C("channel", "string", False),
        C("category", "string", False),
        C("priority", "string"),
        C("created_at", "timestamp", False),
        C("first_response_at", "timestamp"),
        C("resolved_at", "timestamp"),
        C("first_response_minutes", "double"),
        C("resolution_hours", "double"),
        C("text", "string", doc="free text as written"),
        _BATCH,
    ),
)

SURVEYS = Table(
    name="silver.surveys",
    doc="NPS (0-10) and CSAT (1-5) responses in range, with the NPS category.",
    keys=("response_id",),
    columns=(
        C("response_id", "string", False),
        *_EMAIL,
        C("survey_type", "string", False, "NPS or CSAT"),
        C("score", "int", False),
        C("nps_category", "string", doc="promoter (9-10), passive (7-8), detractor (0-6); NPS only"),
        C("comment", "string"),
        C("responded_at", "timestamp", False),
        _BATCH,
    ),
)

CAMPAIGN_EVENTS = Table(
    name="silver.campaign_events",
    doc="E-mail campaign interactions, one per interaction_id (replays removed).",
    keys=("interaction_id",),
    columns=(
        C("interaction_id", "string", False),
        C("campaign_id", "string", False),
        *_EMAIL,
        C("event_type", "string", False, "sent, open, click or unsubscribe"),
        C("event_ts", "timestamp", False),
        _BATCH,
    ),
)

MARKETING_SPEND = Table(
    name="silver.marketing_spend",
    doc="Marketing spend per channel per day in the reporting currency.",
    keys=("spend_id",),
    columns=(
        C("spend_id", "string", False),
        C("spend_date", "date", False),
        C("channel", "string", False),
        C("currency", "string", False),
        C("amount", "double", False),
        C("amount_reporting", "double"),
        _BATCH,
    ),
)

REFERRALS = Table(
    name="silver.referrals",
    doc="Referrals: the referrer's loyalty number and the referred person's e-mail key.",
    keys=("referral_id",),
    columns=(
        C("referral_id", "string", False),
        C("referrer_loyalty_number", "string", False),
        C("referred_email_key", "string"),
        C("referred_email_masked", "string"),
        C("referred_at", "timestamp", False),
        _BATCH,
    ),
)

FX_RATES = Table(
    name="silver.fx_rates",
    doc="Units of the reporting currency per unit of `currency`, per day (the reporting currency itself is 1).",
    keys=("rate_date", "currency"),
    columns=(
        C("rate_date", "date", False),
        C("currency", "string", False),
        C("rate", "double", False),
    ),
)

TABLES = (CONTACTS, PII_VAULT, ORDERS, POS_TRANSACTIONS, ORDER_LINES, EVENTS, TICKETS, SURVEYS, CAMPAIGN_EVENTS,
          MARKETING_SPEND, REFERRALS, FX_RATES)

# The silver table each raw source's records become (the order lines and the vault are derived from several).
OF_SOURCE = {"contacts": CONTACTS, "orders": ORDERS, "pos": POS_TRANSACTIONS, "events": EVENTS, "tickets": TICKETS,
             "surveys": SURVEYS, "campaign_events": CAMPAIGN_EVENTS, "marketing_spend": MARKETING_SPEND,
             "referrals": REFERRALS, "fx_rates": FX_RATES}

# Not a table: the form every record takes for identity matching (silver contacts, or a contact
# list given to `cdp resolve`). Contact points are keyed hashes, as in silver.
MATCH_RECORD = Table(
    name="match_record",
    doc="A record to resolve: identifiers and the attributes compared by the probabilistic matcher.",
    keys=("record_id",),
    columns=(
        C("record_id", "string", False, "'contact:<contact_id>' or '<source>:<source_record_id>'"),
        C("given_name", "string"),
        C("family_name", "string"),
        C("birth_date", "string", doc="YYYY-MM-DD as given, even when not a calendar date (a typo still "
                                      "agrees on its other parts)"),
        C("gender", "string"),
        C("email_key", "string"),
        C("phone_key", "string"),
        C("address_tokens", "string"),
        C("postcode", "string"),
        C("locality", "string", doc="city or suburb, upper case"),
        C("region", "string", doc="state or region, upper case"),
        C("loyalty_number", "string"),
    ),
)

# The identifiers each source's silver records carry, as identity-graph node kinds (kind, column): an erased
# person's nodes are on the suppression list (ops.erased_subjects), and a record carrying one is theirs.
IDENTIFIERS: dict[str, tuple[tuple[str, str], ...]] = {
    "contacts": (("contact", "contact_id"), ("email", "email_key"), ("phone", "phone_key"),
                 ("loyalty", "loyalty_number")),
    "orders": (("account", "account_id"), ("email", "email_key")),
    "pos": (("loyalty", "loyalty_number"),),
    "events": (("account", "user_id"), ("device", "device_id")),
    "tickets": (("email", "email_key"), ("account", "account_id")),
    "surveys": (("email", "email_key"),),
    "campaign_events": (("email", "email_key"),),
    "referrals": (("loyalty", "referrer_loyalty_number"), ("email", "referred_email_key")),
}
