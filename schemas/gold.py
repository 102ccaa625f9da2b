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
        C("match_fingerprint", "long", doc="contact records: hash of the match form the run scored (a record "
                                            "whose fingerprint changed is scored again by an incremental run)"),
    ),
)

IDENTITY_LINKS = Table(
    name="gold.identity_links",
    doc="Every probabilistic link between two contact records in the published resolution, with the match "
        "weight each comparison gave it (log2 Bayes factor, term-frequency adjusted): why two records are one "
        "customer. `cdp explain-customer` prints them. Replaced whole by each published resolution.",
    keys=("src", "dst"),
    columns=(
        C("src", "string", False, "contact record node, e.g. contact:C-1"),
        C("dst", "string", False, "the other contact record node"),
        C("customer_id", "string", False, "the customer both records belong to"),
        C("match_probability", "double", False),
        C("match_weight", "double", False, "log2 odds of a match: the prior plus the comparisons' weights"),
        C("weights", "map<string,double>", False, "comparison -> its match weight (0 when unknown on a side)"),
        C("run_id", "string", False, "run that published the link"),
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
        C("purchase_probability", "double", doc="purchase intent, logistic regression on the churn features: "
                                               "P(a purchase in the next clv.intent_window_days)"),
        C("expected_purchases", "double", False, "expected transactions over clv_horizon_days"),
        C("expected_spend", "double", False, "Gamma-Gamma expected value per transaction"),
        C("historical_value", "double", False, "margin realised so far (net revenue x margin)"),
        C("current_value", "double", False, "CLP: expected margin over the horizon, discounted per period"),
        C("peer_value", "double", False, "clv.growth.peer_quantile of current value among customers of the same "
                                         "market segment (clv.growth.peer_columns)"),
        C("growth_value", "double", False, "share-of-wallet gap: p_alive x (peer_value - current_value), at least 0"),
        C("referrals_made", "long", False, "referrals this customer made so far"),
        C("expected_referrals", "double", False, "referrals expected over the CLV horizon: p_alive x the customer's "
                                                 "referral rate (shrunk towards everyone's) x the horizon"),
        C("word_of_mouth_value", "double", False, "referral_credit x (value of the customers referred so far + "
                                                  "expected_referrals x a referred customer's mean value)"),
        C("potential_value", "double", False, "growth_value + word_of_mouth_value"),
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

CUSTOMER_SEGMENTS = Table(
    name="gold.customer_segments",
    doc="Every customer's scores and segments as of a date (one wide row): RFM, behavioural cluster, value tier "
        "and value-matrix quadrant, attribute segments and both lifecycle models. Thresholds in conf `segments:`.",
    keys=("as_of_date", "customer_id"),
    partition_by=("as_of_date",),
    columns=(
        C("as_of_date", "date", False),
        C("customer_id", "string", False),
        C("recency_days", "int", doc="days from the last purchase to the as-of date; null for prospects"),
        C("frequency", "long", False, "transactions (days with a purchase) up to the as-of date"),
        C("monetary", "double", False, "net revenue up to the as-of date, reporting currency"),
        C("r_score", "int", doc="1-5, quintile of recency (5 = most recent); null for prospects"),
        C("f_score", "int", doc="1-5, quintile of frequency"),
        C("m_score", "int", doc="1-5, quintile of monetary"),
        C("rfm_segment", "string", doc="named RFM segment (segments.rfm_segments, first rule that matches)"),
        C("cluster", "int", doc="K-means cluster id (buying customers only)"),
        C("cluster_label", "string", doc="readable label of the cluster, from its centroid"),
        C("value_tier", "string", doc="high, medium or low by cumulative CLV share"),
        C("value_quadrant", "string", doc="platinum, gold, iron or lead: current x potential value"),
        C("age_band", "string"),
        C("region", "string", doc="country of the golden record"),
        C("preferred_channel", "string", False, "online or store, by number of purchases (ties online); none "
                                                "for prospects"),
        C("consent_status", "string", False, "opted_in, opted_out or unknown (e-mail marketing)"),
        C("lifecycle_stage", "string", False, "prospect, new, growing, mature, at_risk or churned: the state machine "
                                              "of lifecycle.transitions"),
        C("lifecycle_action", "string", False, "what marketing does with the stage (lifecycle.actions)"),
        C("lifecycle_pattern", "string", doc="early_abort, midway_failure, early_exit or long_term_retention, once "
                                             "the path is decided; null before"),
        C("relationship_stage", "string", False, "exploration, formation, stability or decline, from tenure and "
                                                 "the level and trend of purchase intensity"),
        C("purchase_intent", "string", doc="high, medium or low purchase_probability (segments.intent_bands); null "
                                           "without a score"),
    ),
)

LIFECYCLE_HISTORY = Table(
    name="gold.lifecycle_history",
    doc="Validity intervals of every customer's stage in both lifecycle models. A row opens when the stage "
        "changes (previous_stage says from what) and closes (valid_to) at the next change; the open row has "
        "valid_to null. Rerunning a date rebuilds the history from that date, so it is never duplicated.",
    keys=("model", "customer_id", "valid_from"),
    columns=(
        C("model", "string", False, "lifecycle (five stages + at_risk) or relationship (four stages)"),
        C("customer_id", "string", False),
        C("stage", "string", False),
        C("previous_stage", "string", doc="the stage this row moved from; null for a customer's first row"),
        C("reason", "string", doc="why: the transition's event (first_purchase, repeat_purchase, stable_buying, "
                                  "warning:<signal>, lapsed:<signal>, recovered, reactivated; initial for a first "
                                  "row) or, for the relationship model, the signal that decided the stage"),
        C("valid_from", "date", False, "as-of date of the run that saw the stage first"),
        C("valid_to", "date", doc="as-of date of the run that saw the next stage; null while current"),
    ),
)

SEGMENT_MEMBERSHIP = Table(
    name="gold.segment_membership",
    doc="One row per customer per segment per as-of date, with the date the customer entered the segment "
        "(carried over while they stay), so two dates diff into who joined and who left.",
    keys=("as_of_date", "segment_type", "segment", "customer_id"),
    partition_by=("as_of_date",),
    columns=(
        C("as_of_date", "date", False),
        C("segment_type", "string", False, "the gold.customer_segments column: rfm_segment, cluster_label, "
                                           "value_tier, value_quadrant, age_band, region, preferred_channel, "
                                           "consent_status, lifecycle_stage or relationship_stage"),
        C("segment", "string", False),
        C("customer_id", "string", False),
        C("entered_on", "date", False, "first as-of date of the current uninterrupted membership"),
    ),
)

AUDIENCE_MEMBERSHIP = Table(
    name="gold.audience_membership",
    doc="Who each audience (conf/audiences.yaml) should reach at its destination now: the customers meeting its "
        "condition who have the destination's consent and a contact point of its policy and are not erased. The "
        "export stage MERGEs each synced audience's members, so only entries (inserts) and exits (deletes) change "
        "it, and its change data feed is what each sync sends (ops.audience_syncs holds how far each destination "
        "has acknowledged it).",
    keys=("audience", "customer_id"),
    properties=(("delta.enableChangeDataFeed", "true"),),
    columns=(
        C("audience", "string", False, "the audience's name"),
        C("customer_id", "string", False),
        C("entered_on", "date", False, "as-of date of the sync that added the customer"),
    ),
)

CLUSTER_PROFILES = Table(
    name="gold.cluster_profiles",
    doc="The behavioural clusters of an as-of date: size, centroid in original units, label, and the "
        "silhouette of every k tried (the chosen k has chosen = true).",
    keys=("as_of_date", "cluster"),
    partition_by=("as_of_date",),
    columns=(
        C("as_of_date", "date", False),
        C("cluster", "int", False),
        C("cluster_label", "string", False),
        C("customers", "long", False),
        C("centroid", "map<string,double>", False, "feature -> mean in original units"),
        C("k", "int", False),
        C("silhouette", "double", False, "mean silhouette (Euclidean, standardised features) of the chosen k, "
          "on up to 3,000 of the customers the model was fitted on"),
        C("silhouette_by_k", "map<int,double>", False),
    ),
)

VALUE_MATRIX = Table(
    name="gold.value_matrix",
    doc="The customer value matrix of an as-of date: current x potential value quadrants with their size, "
        "worth and the investment and retention strategy attached (conf segments.value_matrix.strategies).",
    keys=("as_of_date", "value_quadrant"),
    partition_by=("as_of_date",),
    columns=(
        C("as_of_date", "date", False),
        C("value_quadrant", "string", False, "platinum, gold, iron or lead"),
        C("customers", "long", False),
        C("customer_share", "double", False),
        C("current_value", "double", False, "sum over the quadrant's customers"),
        C("potential_value", "double", False),
        C("clv", "double", False),
        C("investment", "string", False),
        C("strategy", "string", False),
    ),
)

KPI = Table(
    name="gold.kpi",
    doc="KPIs by period and segment, long form: one row per (period grain, period start, segment, KPI). "
        "Ratios carry their numerator and denominator so they can be re-aggregated.",
    keys=("as_of_date", "grain", "period_start", "segment_type", "segment", "kpi"),
    partition_by=("as_of_date",),
    columns=(
        C("as_of_date", "date", False),
        C("grain", "string", False, "day, week (Monday start) or month"),
        C("period_start", "date", False),
        C("segment_type", "string", False, "'all' or a segment type of gold.segment_membership (current "
                                           "membership), or 'channel' for CAC and ROAS"),
        C("segment", "string", False),
        C("kpi", "string", False),
        C("value", "double", doc="null when the denominator is 0"),
        C("numerator", "double"),
        C("denominator", "double"),
    ),
)

ASSOCIATION_RULES = Table(
    name="gold.association_rules",
    doc="FP-Growth rules over order baskets (online orders and store purchases) by category and by product.",
    keys=("as_of_date", "basket_level", "antecedent", "consequent"),
    partition_by=("as_of_date",),
    columns=(
        C("as_of_date", "date", False),
        C("basket_level", "string", False, "category or product"),
        C("antecedent", "array<string>", False),
        C("consequent", "array<string>", False),
        C("support", "double", False, "share of baskets holding antecedent and consequent"),
        C("confidence", "double", False),
        C("lift", "double", False),
        C("rank", "int", False, "1 = best by lift, then confidence"),
    ),
)

CROSS_SELL = Table(
    name="gold.cross_sell",
    doc="Per-customer cross-sell suggestions: items a customer has not bought that rules predict from what "
        "they have bought, best first.",
    keys=("as_of_date", "customer_id", "basket_level", "item"),
    partition_by=("as_of_date",),
    columns=(
        C("as_of_date", "date", False),
        C("customer_id", "string", False),
        C("basket_level", "string", False),
        C("item", "string", False, "category or sku suggested"),
        C("confidence", "double", False, "of the best rule suggesting it"),
        C("lift", "double", False),
        C("rank", "int", False),
    ),
)

CUSTOMER_SENTIMENT = Table(
    name="gold.customer_sentiment",
    doc="Sentiment of each customer's feedback text (survey comments, ticket text) as of a date: English scored "
        "with VADER, Chinese with SnowNLP (both shipped in their packages), on one -1..1 scale.",
    keys=("as_of_date", "customer_id"),
    partition_by=("as_of_date",),
    columns=(
        C("as_of_date", "date", False),
        C("customer_id", "string", False),
        C("language", "string", False, "en or zh: the language of most of the customer's texts (by script)"),
        C("texts", "long", False, "feedback texts scored"),
        C("avg_sentiment", "double", False, "mean score, -1 (negative) to 1 (positive): VADER's compound for "
                                            "English, 2 x SnowNLP's positive probability - 1 for Chinese"),
        C("negative_share", "double", False, "share of texts with compound <= -0.05"),
        C("latest_sentiment", "double", False),
        C("latest_feedback_at", "timestamp", False),
    ),
)

TABLES = (IDENTITY_GRAPH, IDENTITY_LINKS, CUSTOMER_ID_HISTORY, CUSTOMER_PROFILE, CUSTOMER_VALUE, CUSTOMER_FORECAST,
          CUSTOMER_SEGMENTS, LIFECYCLE_HISTORY, SEGMENT_MEMBERSHIP, AUDIENCE_MEMBERSHIP, CLUSTER_PROFILES,
          VALUE_MATRIX, KPI, ASSOCIATION_RULES, CROSS_SELL, CUSTOMER_SENTIMENT)
