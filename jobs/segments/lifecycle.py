"""Lifecycle stages as an explicit state machine, the relationship model, patterns and stage actions.

Two models (domain model section 3), thresholds and transitions in conf `lifecycle:`:
- lifecycle: prospect -> new -> growing -> mature, with at_risk as the warning state and churned. A
  customer's stage moves only along a declared transition, fired by its event (`EVENTS`); with none
  firing, the stage stays. A customer seen for the first time starts where the signals put them.
- relationship: exploration -> formation -> stability -> decline, from its own signals: tenure,
  relationship intensity (purchases over two trend windows) and its trend.
Each customer's lifecycle pattern (early abort, mid-way failure, early exit, long-term retention) is
set once their path is decided; each lifecycle stage carries the action marketing takes on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import get_args

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.platform.settings import LifecycleConfig, LifecycleEvent, LifecycleStage

# The names conf validates against, in the model's order.
LIFECYCLE_STAGES: tuple[str, ...] = get_args(LifecycleStage)
RELATIONSHIP_STAGES = ("exploration", "formation", "stability", "decline")
# What fires a transition: a purchase milestone, or a warning, lapse or recovery signal.
EVENTS: tuple[str, ...] = get_args(LifecycleEvent)


@dataclass(frozen=True)
class Transition:
    source: tuple[str, ...]     # stages it leaves
    target: tuple[str, ...]     # one stage, or several: the one the purchase counts reach
    event: str


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
    transitions: tuple[Transition, ...]
    actions: tuple[tuple[str, str], ...]   # (stage, action)
    exploration_max_days: int       # relationship: exploring while the first purchase is this recent
    trend_days: int                 # purchases in the last window against the one before it
    stability_min_purchases: int    # stable: at least this many purchase days over the two windows
    decline_max_trend: float        # declining: the last window's purchases at most this share of the one before
    long_term_days: int             # long-term retention: first to last purchase at least this long

    @classmethod
    def from_conf(cls, conf: LifecycleConfig) -> LifecycleSettings:
        # LifecycleConfig has checked the thresholds' order, the stage and event names and the actions.
        thresholds = {k: getattr(conf, k) for k in cls.__dataclass_fields__ if k in type(conf).model_fields
                      and k not in ("transitions", "actions", "relationship")}
        return cls(**thresholds, **conf.relationship.model_dump(),
                   transitions=tuple(Transition(t.source, t.target, t.when) for t in conf.transitions),
                   actions=tuple(conf.actions.items()))


def _signals(s: LifecycleSettings) -> dict[str, Column]:
    """Each event as a column over (frequency, recency_days, tenure_days, p_alive, churn_probability), and the
    signal behind a warning or a lapse."""
    p_alive = F.coalesce(F.col("p_alive"), F.lit(1.0))
    churn_probability = F.coalesce(F.col("churn_probability"), F.lit(0.0))
    frequency = F.coalesce(F.col("frequency"), F.lit(0))
    warning = (F.when(p_alive < s.at_risk_max_p_alive, "p_alive")
               .when(churn_probability > s.at_risk_min_churn_probability, "churn_score")
               .when(F.col("recency_days") >= s.at_risk_after_days, "inactivity"))
    lapse = (F.when(p_alive < s.churned_max_p_alive, "p_alive")
             .when(F.col("recency_days") >= s.churned_after_days, "inactivity"))
    recovered = (frequency >= 1) & warning.isNull()      # no warning left, so a purchase since
    return {
        "first_purchase": frequency >= 1, "repeat_purchase": frequency > s.new_max_purchases,
        "stable_buying": (frequency >= s.mature_min_purchases) & (F.col("tenure_days") >= s.mature_min_tenure_days),
        "warning": warning.isNotNull(), "lapsed": lapse.isNotNull(), "recovered": recovered,
        "reactivated": recovered,       # the same signal, named for the stage it leaves (churned)
        "_warning_signal": warning, "_lapse_signal": lapse,
    }


def progress_stage(s: LifecycleSettings) -> Column:
    """new, growing or mature by purchase counts and tenure alone (null for a prospect)."""
    frequency = F.coalesce(F.col("frequency"), F.lit(0))
    return (F.when(frequency == 0, F.lit(None).cast("string"))
            .when(frequency <= s.new_max_purchases, "new")
            .when((frequency >= s.mature_min_purchases) & (F.col("tenure_days") >= s.mature_min_tenure_days), "mature")
            .otherwise("growing"))


def lifecycle_stage(s: LifecycleSettings) -> Column:
    """Where the signals alone put a customer (the first condition that holds: prospect, churned, at_risk,
    then by purchases): a customer's first stage, before the machine has a previous one to move from."""
    signals = _signals(s)
    return (F.when(~signals["first_purchase"], "prospect").when(signals["lapsed"], "churned")
            .when(signals["warning"], "at_risk").otherwise(progress_stage(s)))


def next_stage(s: LifecycleSettings) -> Column:
    """struct(stage, reason) from `previous_stage` (null: never assessed) and today's signals: the first
    declared transition that leaves the previous stage and whose event fires; none firing, the stage stays
    (reason null). A stage pair without a transition cannot occur."""
    signals, progress = _signals(s), progress_stage(s)
    previous = F.col("previous_stage")
    reasons = {"warning": F.concat(F.lit("warning:"), signals["_warning_signal"]),
               "lapsed": F.concat(F.lit("lapsed:"), signals["_lapse_signal"])}
    result = F.struct(previous.alias("stage"), F.lit(None).cast("string").alias("reason"))
    for t in reversed(s.transitions):
        target = F.lit(t.target[0]) if len(t.target) == 1 else \
            F.when(progress.isin(*t.target), progress)
        fires = previous.isin(*t.source) & signals[t.event] & target.isNotNull()
        result = F.when(fires, F.struct(target.alias("stage"), reasons.get(t.event, F.lit(t.event)).alias("reason"))) \
            .otherwise(result)
    return F.when(previous.isNull(), F.struct(lifecycle_stage(s).alias("stage"), F.lit("initial").alias("reason"))) \
        .otherwise(result)


def stage_action(s: LifecycleSettings, stage: Column) -> Column:
    """The action marketing takes on a lifecycle stage (conf `lifecycle.actions`)."""
    return F.create_map(*[F.lit(x) for pair in s.actions for x in pair])[stage]


def relationship_signals(daily: DataFrame, as_of: date, trend_days: int) -> DataFrame:
    """(customer_id, purchases_recent, purchases_before): purchase days in the last `trend_days` up to as_of and
    in the `trend_days` before those."""
    recent_from, before_from = as_of - timedelta(days=trend_days), as_of - timedelta(days=2 * trend_days)
    day = F.col("txn_date")
    return daily.where((day > F.lit(before_from)) & (day <= F.lit(as_of))).groupBy("customer_id").agg(
        F.count(F.when(day > F.lit(recent_from), 1)).alias("purchases_recent"),
        F.count(F.when(day <= F.lit(recent_from), 1)).alias("purchases_before"))


def relationship_stage(s: LifecycleSettings) -> Column:
    """struct(stage, reason) of the four-stage relationship model from (frequency, tenure_days,
    purchases_recent, purchases_before): exploring while new, declining when intensity falls, stable while
    intense, forming otherwise."""
    recent, before = F.coalesce(F.col("purchases_recent"), F.lit(0)), F.coalesce(F.col("purchases_before"), F.lit(0))
    frequency = F.coalesce(F.col("frequency"), F.lit(0))

    def stage(name: str, reason: str) -> Column:
        return F.struct(F.lit(name).alias("stage"), F.lit(reason).alias("reason"))

    return (F.when(frequency == 0, stage("exploration", "no_purchase"))
            .when(F.col("tenure_days") < s.exploration_max_days, stage("exploration", "recent_first_purchase"))
            .when((recent == 0) & (F.col("tenure_days") >= s.trend_days), stage("decline", "no_recent_purchase"))
            .when((before > 0) & (recent <= before * s.decline_max_trend), stage("decline", "falling_trend"))
            .when(recent + before >= s.stability_min_purchases, stage("stability", "steady_intensity"))
            .otherwise(stage("formation", "rising_intensity")))


def lifecycle_pattern(s: LifecycleSettings, lifecycle: Column) -> Column:
    """The customer's pattern once the path is decided (else null): long-term retention when first to last
    purchase spans `long_term_days` with stable buying; otherwise, once churned, how far the relationship got
    (one purchase: early abort; short of stability: mid-way failure; stable, then gone: early exit)."""
    frequency = F.coalesce(F.col("frequency"), F.lit(0))
    span = F.col("tenure_days") - F.col("recency_days")
    stable = frequency >= s.stability_min_purchases
    churned = lifecycle == "churned"
    return (F.when(stable & (span >= s.long_term_days), "long_term_retention")
            .when(churned & (frequency <= 1), "early_abort")
            .when(churned & ~stable, "midway_failure")
            .when(churned, "early_exit"))


def open_stages(history: DataFrame, as_of: date) -> DataFrame:
    """(model, customer_id, previous_stage): each customer's stage before `as_of` (rows a rerun of `as_of` or a
    later date opened are not theirs to build on)."""
    kept = history.where(F.col("valid_from") < F.lit(as_of))
    open_before = F.col("valid_to").isNull() | (F.col("valid_to") >= F.lit(as_of))
    return kept.where(open_before).select("model", "customer_id", F.col("stage").alias("previous_stage"))


def advance_history(history: DataFrame, stages: DataFrame, as_of: date) -> DataFrame:
    """The stage history after a run for `as_of`.

    `history`: gold.lifecycle_history rows; `stages`: (model, customer_id, stage, reason) as of `as_of`.
    Rows the run owns are first undone (opened on or after `as_of`; closed on or after it are
    reopened), so rerunning or backfilling a date rebuilds history from that date instead of
    duplicating it. Then a customer whose open stage differs gets that row closed at `as_of` and
    a new row opened with previous_stage and the reason; a customer no longer present keeps their last
    row open.
    """
    kept = history.where(F.col("valid_from") < F.lit(as_of)).withColumn(
        "valid_to", F.when(F.col("valid_to") >= F.lit(as_of), F.lit(None).cast("date")).otherwise(F.col("valid_to")))
    is_open = F.col("valid_to").isNull()
    current = open_stages(history, as_of).withColumnRenamed("previous_stage", "open_stage")
    compared = stages.join(current, ["model", "customer_id"], "left")
    changed = compared.where(F.col("open_stage").isNull() | (F.col("open_stage") != F.col("stage")))
    opened = changed.select("model", "customer_id", "stage", F.col("open_stage").alias("previous_stage"), "reason",
                            F.lit(as_of).alias("valid_from"), F.lit(None).cast("date").alias("valid_to"))
    closing = changed.where(F.col("open_stage").isNotNull()).select("model", "customer_id",
                                                                     F.lit(True).alias("_close"))
    updated = kept.join(closing, ["model", "customer_id"], "left").select(
        "model", "customer_id", "stage", "previous_stage", "reason", "valid_from",
        F.when(is_open & F.col("_close"), F.lit(as_of)).otherwise(F.col("valid_to")).alias("valid_to"))
    return updated.unionByName(opened)


def transitions_since(history: DataFrame, since: date, model: str = "lifecycle") -> DataFrame:
    """(customer_id, previous_stage, stage, reason, valid_from): stage changes of `model` dated after `since`."""
    return history.where((F.col("model") == model) & (F.col("valid_from") > F.lit(since))
                         & F.col("previous_stage").isNotNull()) \
        .select("customer_id", "previous_stage", "stage", "reason", "valid_from")
