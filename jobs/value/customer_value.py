"""CLV parts per customer: historical (margin so far), current (scored), potential (referrals)."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.identity.graph import attach_customer
from jobs.value import clv


def customer_values(scored: DataFrame, profile: DataFrame, referrals: DataFrame, graph: DataFrame, margin: float,
                    referral_credit: float, value: clv.ValueSettings) -> DataFrame:
    """Per scored customer: historical value (net revenue so far x margin), current value (the model's
    expected margin over the horizon), potential value (`referral_credit` of the historical + current
    value of every customer they referred) and their sum, the CLV."""
    historical = profile.select("customer_id", (F.col("net_revenue") * margin).alias("historical_value"))
    own = scored.join(historical, "customer_id", "left").withColumn(
        "historical_value", F.coalesce("historical_value", F.lit(0.0)))
    # A referrer earns a share of the value of each customer they brought.
    referred_value = own.select(F.col("customer_id").alias("referred_customer"),
                                (F.col("historical_value") + F.col("current_value")).alias("referred_value"))
    links = attach_customer(referrals, "referrals", graph).withColumnRenamed("customer_id", "referrer") \
        .join(attach_customer(referrals, "referred", graph).select(
            "referral_id", F.col("customer_id").alias("referred_customer")), "referral_id")
    potential = links.join(referred_value, "referred_customer").groupBy(F.col("referrer").alias("customer_id")).agg(
        (F.sum("referred_value") * referral_credit).alias("potential_value"))
    result = own.join(potential, "customer_id", "left").withColumn(
        "potential_value", F.coalesce("potential_value", F.lit(0.0)))
    return result.select(
        "customer_id", F.lit(value.unit).alias("time_unit"), "frequency", "recency", "T", "monetary_value",
        "p_alive", (1 - F.col("p_alive")).alias("churn_risk"), "expected_purchases", "expected_spend",
        "historical_value", "current_value", "potential_value",
        (F.col("historical_value") + F.col("current_value") + F.col("potential_value")).alias("clv"),
        F.lit(value.clv_horizon_days).alias("clv_horizon_days"))
