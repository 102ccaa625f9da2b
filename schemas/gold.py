"""Gold: one row per customer and the analytics built on it."""

from __future__ import annotations

from schemas import C, Table

CUSTOMER_PROFILE = Table(
    name="gold.customer_profile",
    doc="Unified customer view, one row per customer. Walking skeleton: customers are resolved by exact "
        "match on the e-mail key (HMAC of the standardised e-mail) across contacts and orders.",
    keys=("customer_id",),
    columns=(
        C("customer_id", "string", False, "stable: derived from the resolved identity key"),
        C("given_name", "string"),
        C("family_name", "string"),
        C("email_masked", "string", doc="first letter and domain only, e.g. j***@gmail.com"),
        C("phone_masked", "string", doc="last four digits only"),
        C("city", "string"),
        C("postcode", "string"),
        C("email_opt_in", "boolean"),
        C("contact_records", "int", False, "CRM contacts resolved to this customer"),
        C("accounts", "int", False, "e-commerce accounts resolved to this customer"),
        C("first_seen", "timestamp", False),
        C("first_order_ts", "timestamp"),
        C("last_order_ts", "timestamp"),
        C("order_count", "long", False, "completed orders"),
        C("net_revenue", "double", False, "sum of net order amounts"),
        C("as_of_date", "date", False, "the run's logical date"),
    ),
)

TABLES = (CUSTOMER_PROFILE,)
