"""Silver: cleansed, conformed records, one row per source record, test accounts removed."""

from __future__ import annotations

from schemas import C, Table

CONTACTS = Table(
    name="silver.contacts",
    doc="CRM contacts with standardised names, e-mail, phone (E.164) and address; latest version per contact_id.",
    keys=("contact_id",),
    columns=(
        C("contact_id", "string", False),
        C("given_name", "string"),
        C("family_name", "string"),
        C("email", "string", doc="trimmed, lower-cased, syntax-checked; null when invalid"),
        C("phone_e164", "string", doc="E.164; null when not a valid number"),
        C("street", "string", doc="upper-case, USPS abbreviations"),
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
        C("_batch_id", "string", False, "bronze batch the version came from"),
    ),
)

ORDERS = Table(
    name="silver.orders",
    doc="E-commerce orders, one row per order_id; returns and cancellations net to zero value.",
    keys=("order_id",),
    columns=(
        C("order_id", "string", False),
        C("account_id", "string", False),
        C("email", "string", doc="standardised; null when missing or invalid"),
        C("order_ts", "timestamp", False, "UTC"),
        C("order_date", "date", False, "UTC date of order_ts"),
        C("channel", "string", False),
        C("status", "string", False),
        C("currency", "string", False),
        C("line_count", "int", False),
        C("gross_amount", "double", False, "sum of quantity x unit price, order currency"),
        C("net_amount", "double", False, "gross for completed orders, 0 for returned or cancelled"),
        C("_batch_id", "string", False),
    ),
)

TABLES = (CONTACTS, ORDERS)
