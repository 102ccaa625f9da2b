"""Lifecycle stages as of a date, and their history as validity intervals.

Two models (domain model section 3), thresholds in conf `lifecycle:`:
- lifecycle: prospect -> new -> growing -> mature, with at_risk as the warning state and churned;
- relationship: exploration -> formation -> stability -> decline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.platform.settings import LifecycleConfig

LIFECYCLE_STAGES = ("prospect", "new", "growing", "mature", "at_risk", "churned")
RELATIONSHIP_STAGES = ("exploration", "formation", "stability", "decline")
# The relationship model read off the lifecycle stage: the first purchase explores, repeat buying
# forms the relationship, stable buying is stability, and the warning and lost states are decline.
RELATIONSHIP_OF = {"prospect": "exploration", "new": "exploration", "growing": "formation",
                   "mature": "stability", "at_risk": "decline", "churned": "decline"}


@dataclass(frozen=True)
class LifecycleSettings:
    new_max_purchases: int          # up to this many purchases (days with a purchase): new
    mature_min_purchases: int       # at least this many purchases...
    mature_min_tenure_days: int     # ...over at least this long since the first: mature
    at_risk_max_p_alive: float      # P(alive) below this: at risk...
    at_risk_min_churn_probability: float  # ...or the churn classifier above this...
    at_risk_after_days: int         # ...or no purchase for this long
    churned_max_p_alive: float      # P(alive) below this: churned...
    churned_after_days: int         # ...or no purchase for this long

    @classmethod
    def from_conf(cls, conf: LifecycleConfig) -> LifecycleSettings:
        # LifecycleConfig has checked that churned thresholds are stricter than at_risk ones.
        return cls(**{k: getattr(conf, k) for k in cls.__dataclass_fields__})


def lifecycle_stage(settings: LifecycleSettings) -> Column:
    """The stage from (frequency, recency_days, tenure_days, p_alive, churn_probability); a customer
    without a purchase (null frequency or 0) is a prospect. The first condition that holds wins."""
    p_alive = F.coalesce(F.col("p_alive"), F.lit(1.0))
    churn_probability = F.coalesce(F.col("churn_probability"), F.lit(0.0))
    return (F.when(F.coalesce(F.col("frequency"), F.lit(0)) == 0, "prospect")
            .when((p_alive < settings.churned_max_p_alive)
                  | (F.col("recency_days") >= settings.churned_after_days), "churned")
            .when((p_alive < settings.at_risk_max_p_alive)
                  | (churn_probability > settings.at_risk_min_churn_probability)
                  | (F.col("recency_days") >= settings.at_risk_after_days), "at_risk")
            .when(F.col("frequency") <= settings.new_max_purchases, "new")
            .when((F.col("frequency") >= settings.mature_min_purchases)
                  & (F.col("tenure_days") >= settings.mature_min_tenure_days), "mature")
            .otherwise("growing"))


def relationship_stage(stage: Column) -> Column:
    mapping = F.create_map(*[F.lit(x) for pair in RELATIONSHIP_OF.items() for x in pair])
    return mapping[stage]


def advance_history(history: DataFrame, stages: DataFrame, as_of: date) -> DataFrame:
    """The stage history after a run for `as_of`.

    `history`: gold.lifecycle_history rows; `stages`: (model, customer_id, stage) as of `as_of`.
    Rows the run owns are first undone (opened on or after `as_of`; closed on or after it are
    reopened), so rerunning or backfilling a date rebuilds history from that date instead of
    duplicating it. Then a customer whose open stage differs gets that row closed at `as_of` and
    a new row opened with previous_stage; a customer no longer present keeps their last row open.
    """
    kept = history.where(F.col("valid_from") < F.lit(as_of)).withColumn(
        "valid_to", F.when(F.col("valid_to") >= F.lit(as_of), F.lit(None).cast("date")).otherwise(F.col("valid_to")))
    is_open = F.col("valid_to").isNull()
    current = kept.where(is_open).select("model", "customer_id", F.col("stage").alias("open_stage"))
    compared = stages.join(current, ["model", "customer_id"], "left")
    changed = compared.where(F.col("open_stage").isNull() | (F.col("open_stage") != F.col("stage")))
    opened = changed.select("model", "customer_id", "stage", F.col("open_stage").alias("previous_stage"),
                            F.lit(as_of).alias("valid_from"), F.lit(None).cast("date").alias("valid_to"))
    closing = changed.where(F.col("open_stage").isNotNull()).select("model", "customer_id",
                                                                     F.lit(True).alias("_close"))
    updated = kept.join(closing, ["model", "customer_id"], "left").select(
        "model", "customer_id", "stage", "previous_stage", "valid_from",
        F.when(is_open & F.col("_close"), F.lit(as_of)).otherwise(F.col("valid_to")).alias("valid_to"))
    return updated.unionByName(opened)


def transitions_since(history: DataFrame, since: date, model: str = "lifecycle") -> DataFrame:
    """(customer_id, previous_stage, stage, valid_from): stage changes of `model` dated after `since`."""
    return history.where((F.col("model") == model) & (F.col("valid_from") > F.lit(since))
                         & F.col("previous_stage").isNotNull()) \
        .select("customer_id", "previous_stage", "stage", "valid_from")
