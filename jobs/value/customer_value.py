"""CLV parts per customer (domain model section 4): historical, current and potential value.

Potential value is growth value plus word-of-mouth value:
- growth: the share-of-wallet gap. Customers of the same market segment (conf `clv.growth.peer_columns`)
  have wallets of a like size, so the upper quantile of their current value is what this customer could
  be worth to us; the gap to it, weighted by P(alive) (a lost customer grows nothing), is growth.
- word of mouth: `referral_credit` of the value of the customers referred so far, plus the same credit on
  the referrals still to come: the customer's referral rate (shrunk towards everyone's rate), over the
  CLV horizon, while alive, times the mean value of a referred customer.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.identity.graph import attach_customer
from jobs.platform.settings import ClvConfig
from jobs.value import clv

DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class PotentialSettings:
    referral_credit: float            # share of a referred customer's value credited to the referrer
    peer_columns: tuple[str, ...]     # profile columns that define a market segment of peers
    peer_quantile: float              # the peers' current value a customer could reach
    min_peers: int                    # smaller segments are compared with every buying customer
    referral_prior_years: float       # weight of everyone's referral rate in a customer's own

    @classmethod
    def from_conf(cls, conf: ClvConfig) -> PotentialSettings:
        growth = conf.growth
        return cls(conf.referral_credit, tuple(growth.peer_columns), growth.peer_quantile,
                   growth.min_peers, conf.referral_prior_years)


def growth_values(own: DataFrame, profile: DataFrame, settings: PotentialSettings) -> DataFrame:
    """(customer_id, peer_value, growth_value): the `peer_quantile` of current value among customers of the
    same `peer_columns` (every customer's where fewer than `min_peers` share them), and p_alive x the gap."""
    peers = own.select("customer_id", "current_value", "p_alive").join(
        profile.select("customer_id", *settings.peer_columns), "customer_id", "left")
    quantile = F.percentile_approx("current_value", settings.peer_quantile)
    overall = peers.agg(quantile.alias("overall")).first()["overall"] or 0.0
    groups = peers.groupBy(*settings.peer_columns).agg(quantile.alias("group_value"), F.count("*").alias("n"))
    # eqNullSafe: an unknown age band is a segment of its own, not a lost join.
    on = [peers[c].eqNullSafe(groups[c]) for c in settings.peer_columns]
    peer_value = F.when(F.col("n") >= settings.min_peers, F.col("group_value")).otherwise(F.lit(overall))
    return peers.join(groups, on, "left").select(
        "customer_id", peer_value.alias("peer_value"),
        (F.col("p_alive") * F.greatest(peer_value - F.col("current_value"), F.lit(0.0))).alias("growth_value"))


def referral_values(own: DataFrame, referrals: DataFrame, graph: DataFrame, settings: PotentialSettings,
                    value: clv.ValueSettings) -> DataFrame:
    """(customer_id, referrals_made, expected_referrals, word_of_mouth_value) for every scored customer."""
    worth = own.select(F.col("customer_id").alias("referred_customer"),
                       (F.col("historical_value") + F.col("current_value")).alias("referred_value"))
    made = attach_customer(referrals, "referrals", graph).where(F.col("customer_id").isNotNull()) \
        .select("referral_id", F.col("customer_id").alias("referrer"))
    links = made.join(attach_customer(referrals, "referred", graph).select(
        "referral_id", F.col("customer_id").alias("referred_customer")), "referral_id", "left")
    per_referrer = links.join(worth, "referred_customer", "left").groupBy(F.col("referrer").alias("customer_id")) \
        .agg(F.countDistinct("referral_id").alias("referrals_made"),
             F.coalesce(F.sum("referred_value"), F.lit(0.0)).alias("referred_value"))
    years = F.col("T") * F.lit(clv.time_unit_days(value.unit) / DAYS_PER_YEAR)
    base = own.select("customer_id", "p_alive", years.alias("tenure_years")) \
        .join(per_referrer, "customer_id", "left").fillna({"referrals_made": 0, "referred_value": 0.0})
    totals = base.agg(F.sum("referrals_made").alias("referrals"), F.sum("tenure_years").alias("years")).first()
    everyone_rate = (totals["referrals"] or 0) / totals["years"] if totals["years"] else 0.0
    referred = worth.join(links.select("referred_customer").distinct(), "referred_customer") \
        .agg(F.avg("referred_value")).first()[0]
    # A referral that has not become a customer yet is worth what an average customer is.
    per_referral = referred if referred is not None else (own.agg(
        F.avg(F.col("historical_value") + F.col("current_value"))).first()[0] or 0.0)
    prior = settings.referral_prior_years
    rate = (F.col("referrals_made") + F.lit(everyone_rate * prior)) / (F.col("tenure_years") + F.lit(prior))
    expected = F.col("p_alive") * rate * F.lit(value.clv_horizon_days / DAYS_PER_YEAR)
    return base.select(
        "customer_id", "referrals_made", expected.alias("expected_referrals"),
        (F.lit(settings.referral_credit) * (F.col("referred_value") + expected * F.lit(per_referral)))
        .alias("word_of_mouth_value"))


def customer_values(scored: DataFrame, profile: DataFrame, referrals: DataFrame, graph: DataFrame,
                    settings: PotentialSettings, value: clv.ValueSettings) -> DataFrame:
    """Per scored customer: historical value (net revenue so far x margin), current value (the model's
    expected margin over the horizon), potential value (growth + word of mouth) and their sum, the CLV."""
    historical = profile.select("customer_id", (F.col("net_revenue") * value.margin).alias("historical_value"))
    own = scored.join(historical, "customer_id", "left").withColumn(
        "historical_value", F.coalesce("historical_value", F.lit(0.0))).localCheckpoint()
    result = own.join(growth_values(own, profile, settings), "customer_id") \
        .join(referral_values(own, referrals, graph, settings, value), "customer_id")
    potential: Column = F.col("growth_value") + F.col("word_of_mouth_value")
    return result.select(
        "customer_id", F.lit(value.unit).alias("time_unit"), "frequency", "recency", "T", "monetary_value",
        "p_alive", (1 - F.col("p_alive")).alias("churn_risk"), "expected_purchases", "expected_spend",
        "historical_value", "current_value", "peer_value", "growth_value", "referrals_made", "expected_referrals",
        "word_of_mouth_value", potential.alias("potential_value"),
        (F.col("historical_value") + F.col("current_value") + potential).alias("clv"),
        F.lit(value.clv_horizon_days).alias("clv_horizon_days"))
