"""Gold customer profile (customer 360): golden record by survivorship, activity across channels.

Every silver record finds its customer through the identifier it carries (the published
identity graph); the golden record takes, per attribute, the observation the configured
survivorship rule prefers; activity is summarised per channel and joined on customer_id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import reduce
from typing import get_args

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.identity.graph import attach_customer
from jobs.platform.settings import SurvivorshipConfig, SurvivorshipRule

RULES: tuple[str, ...] = get_args(SurvivorshipRule)


@dataclass(frozen=True)
class Survivorship:
    rules: dict[str, str]          # attribute -> rule
    source_trust: list[str]        # most trusted source first

    @classmethod
    def from_conf(cls, conf: SurvivorshipConfig) -> Survivorship:
        # The rules are among RULES: SurvivorshipConfig admits no other.
        return cls(dict(conf.rules), list(conf.source_trust))


def _observations(df: DataFrame, source: str, observed_at: str, attributes: dict[str, Column]) -> DataFrame:
    """(customer_id, attribute, value, observed_at, source) for each non-null attribute of each record."""
    rows = F.explode(F.array(*[F.struct(F.lit(name).alias("attribute"), value.cast("string").alias("value"))
                               for name, value in attributes.items()]))
    return df.select("customer_id", F.col(observed_at).alias("observed_at"), rows.alias("o")).select(
        "customer_id", "o.attribute", "o.value", "observed_at", F.lit(source).alias("source")
    ).where(F.col("value").isNotNull())


def golden_record(observations: DataFrame, survivorship: Survivorship) -> DataFrame:
    """One row per customer, a string column per attribute: the observation its rule prefers."""
    rule = F.coalesce(*[F.when(F.col("attribute") == a, F.lit(r)) for a, r in survivorship.rules.items()],
                      F.lit("most_recent"))
    trust = F.array_position(F.array(*[F.lit(s) for s in survivorship.source_trust]), F.col("source"))
    frequency = F.count("*").over(Window.partitionBy("customer_id", "attribute", "value"))
    seconds = F.col("observed_at").cast("double")
    # The smallest (primary, secondary, value) wins: each rule maps to a sort key of that shape.
    primary = (F.when(rule == "most_frequent", -frequency)
               .when(rule == "most_trusted", F.when(trust > 0, trust).otherwise(F.lit(1_000_000)))
               .otherwise(0)).cast("double")
    secondary = F.when(rule == "earliest", seconds).otherwise(-seconds)
    ranked = observations.select("customer_id", "attribute", "value",
                                 F.struct(primary.alias("p"), secondary.alias("s"), F.col("value").alias("v"))
                                 .alias("rank"))
    winners = ranked.groupBy("customer_id", "attribute").agg(F.min_by("value", "rank").alias("value"))
    return winners.groupBy("customer_id").pivot("attribute", sorted(survivorship.rules)).agg(F.first("value"))


def age_band(age: Column) -> Column:
    """Domain model bands: young 18-30, middle 31-50, senior 51+."""
    return F.when(age.between(18, 30), "young").when(age.between(31, 50), "middle").when(age >= 51, "senior")


def build_customer_profile(graph: DataFrame, silver: dict[str, DataFrame], survivorship: Survivorship,
                           as_of: date) -> DataFrame:
    """One row per customer of `graph` from the silver tables keyed by source name
    (contacts, orders, pos, tickets, surveys, campaign_events, events, referrals)."""
    t = {source: attach_customer(df, source, graph) for source, df in silver.items()}
    contacts, orders, pos, tickets = t["contacts"], t["orders"], t["pos"], t["tickets"]
    surveys, campaigns, events = t["surveys"], t["campaign_events"], t["events"]
    referred = attach_customer(silver["referrals"], "referred", graph)

    address = F.to_json(F.struct("city", "postcode", "country"))
    observations = reduce(DataFrame.unionByName, [
        _observations(contacts, "contacts", "updated_at", {
            "given_name": F.col("given_name"), "family_name": F.col("family_name"),
            "birth_date": F.col("birth_date"), "gender": F.col("gender"), "email": F.col("email_masked"),
            "phone": F.col("phone_masked"),
            "address": F.when(F.col("city").isNotNull() | F.col("postcode").isNotNull(), address),
            "email_opt_in": F.col("email_opt_in"), "sms_opt_in": F.col("sms_opt_in"),
            "signup_channel": F.col("signup_channel")}),
        _observations(orders, "orders", "order_ts", {"email": F.col("email_masked")}),
        _observations(tickets, "tickets", "created_at", {"email": F.col("email_masked")}),
        _observations(surveys, "surveys", "responded_at", {"email": F.col("email_masked")}),
        _observations(campaigns, "campaign_events", "event_ts", {"email": F.col("email_masked")}),
        _observations(referred, "referrals", "referred_at", {"email": F.col("referred_email_masked")}),
    ])
    golden = golden_record(observations.where(F.col("customer_id").isNotNull()), survivorship)
    address_struct = F.from_json("address", "city string, postcode string, country string")
    birth_date = F.col("birth_date").cast("date")
    age = F.floor(F.months_between(F.lit(as_of), birth_date) / 12).cast("int")
    golden = golden.select(
        "customer_id", "given_name", "family_name", F.col("email").alias("email_masked"),
        F.col("phone").alias("phone_masked"), address_struct.city.alias("city"),
        address_struct.postcode.alias("postcode"), address_struct.country.alias("country"), "gender",
        F.year(birth_date).alias("birth_year"), age.alias("age"), age_band(age).alias("age_band"),
        F.col("email_opt_in").cast("boolean").alias("email_opt_in"),
        F.col("sms_opt_in").cast("boolean").alias("sms_opt_in"), "signup_channel")

    identifiers = graph.groupBy("customer_id").agg(
        F.count(F.when(F.col("node").startswith("contact:"), 1)).cast("int").alias("contact_records"),
        F.count(F.when(F.col("node").startswith("account:"), 1)).cast("int").alias("accounts"),
        F.count(F.when(F.col("node").startswith("device:"), 1)).cast("int").alias("devices"),
        (F.count(F.when(F.col("node").startswith("loyalty:"), 1)) > 0).alias("loyalty_member"))

    completed = F.col("status") == "completed"
    online = orders.groupBy("customer_id").agg(
        F.count(F.when(completed, 1)).alias("order_count"),
        F.count(F.when(~completed, 1)).alias("returned_orders"),
        F.sum(F.when(completed, F.col("net_amount_reporting"))).alias("online_revenue"),
        F.min(F.when(completed, F.col("order_ts"))).alias("first_online_ts"),
        F.max(F.when(completed, F.col("order_ts"))).alias("last_online_ts"))
    store = pos.groupBy("customer_id").agg(
        F.count("*").alias("store_transactions"), F.sum("amount_reporting").alias("store_revenue"),
        F.min("txn_ts").alias("first_store_ts"), F.max("txn_ts").alias("last_store_ts"))
    end_of_day = F.lit(as_of).cast("timestamp") + F.expr("INTERVAL 1 DAY")
    service = tickets.groupBy("customer_id").agg(
        F.count("*").alias("tickets"),
        F.count(F.when(F.col("resolved_at").isNull() | (F.col("resolved_at") >= end_of_day), 1)).alias("open_tickets"),
        F.avg("first_response_minutes").alias("avg_first_response_minutes"),
        F.avg("resolution_hours").alias("avg_resolution_hours"))
    scores = surveys.groupBy("customer_id").agg(
        F.max_by(F.when(F.col("survey_type") == "NPS", F.col("score")),
                 F.when(F.col("survey_type") == "NPS", F.col("responded_at"))).alias("latest_nps"),
        F.max_by(F.when(F.col("survey_type") == "CSAT", F.col("score")),
                 F.when(F.col("survey_type") == "CSAT", F.col("responded_at"))).alias("latest_csat"))
    email = campaigns.groupBy("customer_id").agg(
        (F.count(F.when(F.col("event_type") == "unsubscribe", 1)) > 0).alias("unsubscribed"))
    referrals = t["referrals"].groupBy("customer_id").agg(F.count("*").alias("referrals_made"))

    def seen(df: DataFrame, ts: str, channel: Column | None) -> DataFrame:
        return df.select("customer_id", F.col(ts).alias("ts"),
                         (channel if channel is not None else F.lit(None).cast("string")).alias("channel"))

    app = F.when(F.col("platform").isin("ios", "android"), "app").otherwise("web")
    activity = reduce(DataFrame.unionByName, [
        seen(contacts, "created_at", None), seen(contacts, "updated_at", None),
        seen(orders, "order_ts", F.col("channel")), seen(pos, "txn_ts", F.lit("store")),
        seen(tickets, "created_at", F.lit("support")), seen(surveys, "responded_at", F.lit("survey")),
        seen(campaigns, "event_ts", F.lit("email")), seen(events, "event_ts", app),
        seen(t["referrals"], "referred_at", None), seen(referred, "referred_at", None),
    ]).where(F.col("customer_id").isNotNull()).groupBy("customer_id").agg(
        F.min("ts").alias("first_seen"), F.max("ts").alias("last_seen"),
        F.array_sort(F.collect_set("channel")).alias("channels"))

    profile = reduce(lambda left, right: left.join(right, "customer_id", "left"),
                     [identifiers, golden, activity, online, store, service, scores, email, referrals])
    purchases = F.coalesce("order_count", F.lit(0)) + F.coalesce("store_transactions", F.lit(0))
    revenue = F.coalesce("online_revenue", F.lit(0.0)) + F.coalesce("store_revenue", F.lit(0.0))
    zero = F.lit(0).cast("long")
    return profile.select(
        "customer_id", "given_name", "family_name", "email_masked", "phone_masked", "city", "postcode", "country",
        "gender", "birth_year", "age", "age_band", "email_opt_in", "sms_opt_in",
        F.coalesce("unsubscribed", F.lit(False)).alias("unsubscribed"), "loyalty_member", "signup_channel",
        "contact_records", "accounts", "devices", "channels", "first_seen", "last_seen",
        F.least("first_online_ts", "first_store_ts").alias("first_order_ts"),
        F.greatest("last_online_ts", "last_store_ts").alias("last_order_ts"),
        F.coalesce("order_count", zero).alias("order_count"),
        F.coalesce("store_transactions", zero).alias("store_transactions"),
        F.round(revenue, 2).alias("net_revenue"),
        # From whole cents in decimal: a double sum depends on the order Spark adds in, and at a half cent
        # that flipped the rounded mean between two runs of the same data (found by `cdp rebuild`).
        F.when(purchases > 0, F.round(F.round(revenue, 2).cast("decimal(20,2)") / purchases, 2).cast("double"))
        .alias("average_order_value"),
        F.coalesce("returned_orders", zero).alias("returned_orders"),
        F.coalesce("tickets", zero).alias("tickets"), F.coalesce("open_tickets", zero).alias("open_tickets"),
        "avg_first_response_minutes", "avg_resolution_hours", "latest_nps", "latest_csat",
        F.coalesce("referrals_made", zero).alias("referrals_made"),
        F.lit(as_of).alias("as_of_date"),
    )
