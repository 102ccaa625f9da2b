"""The audience view: what an audience's condition (conf/audiences.yaml) is written over.

One row per customer of gold.customer_profile as of a date, with that date's value scores
(gold.customer_value) and segments (gold.customer_segments), consent, last-purchase facts and the
percentile ranks of the scores. It is computed, never stored (`jobs.delivery.audience.audience_view`),
and conditions are checked against these columns before anything runs. Contact points appear masked
only: the raw ones are attached for the destination when an audience is exported.
"""

from __future__ import annotations

from schemas import C, Table

_PERCENTILE = "percentile rank 0-100 among customers with a score (0 = lowest, 100 = highest); null without one"

AUDIENCE_VIEW = Table(
    name="audience view",
    doc="One row per customer as of the run's date. A condition is one SQL boolean expression over these "
        "columns (Spark SQL: `rfm_segment = 'Champions'`, `clv_percentile >= 70 AND email_consent`, "
        "`lifecycle_stage IN ('at_risk', 'churned')`); a customer is a member where it is true (null is not). "
        "Value and segment columns are null for customers the value and segments stages did not score that day.",
    keys=("customer_id",),
    columns=(
        C("customer_id", "string", False),
        C("as_of_date", "date", False, "the run's date"),
        # the golden record
        C("email_masked", "string", doc="first letter and domain only: for previews"),
        C("phone_masked", "string", doc="last four digits only"),
        C("city", "string"),
        C("country", "string"),
        C("gender", "string", doc="M, F or X"),
        C("age", "int"),
        C("age_band", "string", doc="young, middle or senior"),
        C("loyalty_member", "boolean", False),
        C("signup_channel", "string"),
        C("channels", "array<string>", False, "web, app, store, email, support, survey: "
                                              "`array_contains(channels, 'app')`"),
        # consent
        C("email_opt_in", "boolean"),
        C("sms_opt_in", "boolean"),
        C("unsubscribed", "boolean", False),
        C("email_consent", "boolean", False, "may be e-mailed: opted in and not unsubscribed (what e-mail "
                                             "destinations require)"),
        C("sms_consent", "boolean", False, "opted in to SMS"),
        # purchases and service
        C("order_count", "long", False, "completed online orders"),
        C("store_transactions", "long", False),
        C("net_revenue", "double", False, "reporting currency"),
        C("average_order_value", "double"),
        C("first_purchase_date", "date", doc="first completed purchase, online or in store"),
        C("last_purchase_date", "date"),
        C("days_since_last_purchase", "int", doc="null without a purchase"),
        C("open_tickets", "long", False),
        C("latest_nps", "int"),
        C("latest_csat", "int"),
        C("referrals_made", "long", False),
        # value (gold.customer_value)
        C("clv", "double", doc="historical + current + potential value"),
        C("current_value", "double"),
        C("potential_value", "double"),
        C("p_alive", "double"),
        C("churn_probability", "double", doc="P(no purchase in clv.churn_window_days)"),
        C("purchase_probability", "double", doc="P(a purchase in clv.intent_window_days)"),
        C("expected_purchases", "double"),
        C("clv_percentile", "double", doc=_PERCENTILE + ": `clv_percentile >= 70` is the top 30 %"),
        C("churn_percentile", "double", doc="of churn_probability; " + _PERCENTILE),
        C("purchase_percentile", "double", doc="of purchase_probability; " + _PERCENTILE),
        # segments (gold.customer_segments)
        C("rfm_segment", "string", doc="Champions, Loyal, ... (segments.rfm_segments)"),
        C("r_score", "int"),
        C("f_score", "int"),
        C("m_score", "int"),
        C("cluster", "int"),
        C("cluster_label", "string"),
        C("value_tier", "string", doc="high, medium or low"),
        C("value_quadrant", "string", doc="platinum, gold, iron or lead"),
        C("lifecycle_stage", "string", doc="prospect, new, growing, mature, at_risk or churned"),
        C("lifecycle_action", "string"),
        C("relationship_stage", "string"),
        C("purchase_intent", "string", doc="high, medium or low"),
        C("preferred_channel", "string", doc="online, store or none"),
    ),
)
