"""Gold: resolved identities, one row per customer, and the analytics built on them."""

from __future__ import annotations

from schemas import C, Table

IDENTITY_GRAPH = Table(
    name="gold.identity_graph",
    doc="Every identifier and CRM contact record mapped to its customer. Updated by MERGE after each "
        "resolution run that passes its guards: a node's customer_id changes only when its customer was "
        "merged or split (see gold.customer_id_history).",
    keys=("node",),
    columns=(
        C("node", "string", False, "'<type>:<value>', e.g. contact:C-1, email:<hmac>, account:A-1, device:D-1"),
        C("node_type", "string", False, "contact, email, phone, loyalty, account or device"),
        C("customer_id", "string", False),
        C("first_seen_date", "date", False, "logical date of the run that first resolved the node"),
        C("assigned_date", "date", False, "logical date of the run that gave the node its current customer_id"),
        C("run_id", "string", False, "run that last changed the row"),
    ),
)

CUSTOMER_ID_HISTORY = Table(
    name="gold.customer_id_history",
    doc="Customer ids that changed: follow old_customer_id to new_customer_id. 'merged': the old customer "
        "joined another and its id is retired; 'split': part of the old customer's nodes left it (the old id "
        "lives on); 'removed': none of the old customer's nodes remain (erasure, or an earlier as-of date).",
    keys=("run_id", "old_customer_id", "new_customer_id"),
    columns=(
        C("run_id", "string", False),
        C("as_of_date", "date", False),
        C("change", "string", False, "merged, split or removed"),
        C("old_customer_id", "string", False),
        C("new_customer_id", "string", doc="null when removed"),
        C("nodes_moved", "long", False),
        C("recorded_at", "timestamp", False),
    ),
)

CUSTOMER_PROFILE = Table(
    name="gold.customer_profile",
    doc="Unified customer view (customer 360), one row per resolved customer: the golden record built by "
        "the survivorship rules in conf (identity.survivorship), contact points masked, and activity "
        "summarised across every channel.",
    keys=("customer_id",),
    columns=(
        C("customer_id", "string", False, "stable across runs (gold.identity_graph)"),
        C("given_name", "string"),
        C("family_name", "string"),
        C("email_masked", "string", doc="first letter and domain only, e.g. j***@gmail.com"),
        C("phone_masked", "string", doc="last four digits only"),
        C("city", "string"),
        C("postcode", "string"),
        C("country", "string"),
        C("gender", "string", doc="M, F or X"),
        C("birth_year", "int"),
        C("age", "int", doc="whole years at the as-of date"),
        C("age_band", "string", doc="young (18-30), middle (31-50), senior (51+); null if unknown or under 18"),
        C("email_opt_in", "boolean", doc="consent to e-mail marketing (golden record)"),
        C("sms_opt_in", "boolean"),
        C("unsubscribed", "boolean", False, "unsubscribed from an e-mail campaign: overrides email_opt_in"),
        C("loyalty_member", "boolean", False),
        C("signup_channel", "string"),
        C("contact_records", "int", False, "CRM contacts resolved to this customer"),
        C("accounts", "int", False, "e-commerce accounts resolved to this customer"),
        C("devices", "int", False, "web/app devices linked by a login"),
        C("channels", "array<string>", False, "channels with activity: web, app, store, email, support, survey"),
        C("first_seen", "timestamp", False, "earliest record of any channel"),
        C("last_seen", "timestamp", False, "latest record of any channel"),
        C("first_order_ts", "timestamp", doc="first completed purchase, online or in store"),
        C("last_order_ts", "timestamp"),
        C("order_count", "long", False, "completed online orders"),
        C("store_transactions", "long", False),
        C("net_revenue", "double", False, "net online orders plus store purchases, reporting currency"),
        C("average_order_value", "double", doc="net revenue per purchase (online and store)"),
        C("returned_orders", "long", False, "online orders returned or cancelled"),
        C("tickets", "long", False),
        C("open_tickets", "long", False, "tickets not resolved at the as-of date"),
        C("avg_first_response_minutes", "double"),
        C("avg_resolution_hours", "double"),
        C("latest_nps", "int"),
        C("latest_csat", "int"),
        C("referrals_made", "long", False),
        C("as_of_date", "date", False, "the run's logical date"),
    ),
)

CUSTOMER_VALUE = Table(
    name="gold.customer_value",
    doc="Customer lifetime value per customer with a purchase, per as-of date: BG/NBD purchase forecast and "
        "P(alive), Gamma-Gamma spend, and CLV = historical + current + potential value (domain model section 4). "
        "Amounts in the reporting currency; values are margin (revenue x clv.margin).",
    keys=("as_of_date", "customer_id"),
    partition_by=("as_of_date",),
    columns=(
        C("as_of_date", "date", False),
        C("customer_id", "string", False),
        C("time_unit", "string", False, "day or week: the unit of recency and T"),
        C("frequency", "long", False, "repeat transactions (days with a purchase after the first)"),
        C("recency", "double", False, "first to last transaction, in the time unit"),
        C("T", "double", False, "first transaction to the as-of date, in the time unit"),
        C("monetary_value", "double", False, "mean value of repeat transactions; 0 without a repeat"),
        C("p_alive", "double", False, "BG/NBD probability that the customer is still active"),
        C("churn_risk", "double", False, "1 - p_alive"),
        C("churn_probability", "double", doc="MLlib classifier (engagement, service, surveys): P(no purchase in "
                                            "the next clv.churn_window_days)"),
        C("expected_purchases", "double", False, "expected transactions over clv_horizon_days"),
        C("expected_spend", "double", False, "Gamma-Gamma expected value per transaction"),
        C("historical_value", "double", False, "margin realised so far (net revenue x margin)"),
        C("current_value", "double", False, "CLP: expected margin over the horizon, discounted per period"),
        C("potential_value", "double", False, "referral value: referral_credit x value of the customers referred"),
        C("clv", "double", False, "historical + current + potential value"),
        C("clv_horizon_days", "int", False),
        C("model_version", "string", False, "the ops.clv_models row that scored this"),
    ),
)

CUSTOMER_FORECAST = Table(
    name="gold.customer_forecast",
    doc="Expected purchases and revenue per customer over each configured horizon (clv.horizons_days).",
    keys=("as_of_date", "customer_id", "horizon_days"),
    partition_by=("as_of_date",),
    columns=(
        C("as_of_date", "date", False),
        C("customer_id", "string", False),
        C("horizon_days", "int", False),
        C("expected_purchases", "double", False),
        C("expected_revenue", "double", False, "expected purchases x expected spend, undiscounted"),
        C("model_version", "string", False),
    ),
)

TABLES = (IDENTITY_GRAPH, CUSTOMER_ID_HISTORY, CUSTOMER_PROFILE, CUSTOMER_VALUE, CUSTOMER_FORECAST)
