"""Lifecycle: the first stage from thresholds, every declared transition with its reason, every other
transition impossible, the relationship model and the patterns worked out by hand, history kept once."""

from __future__ import annotations

import itertools
from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.platform.config import load_settings
from jobs.segments import lifecycle

S = lifecycle.LifecycleSettings.from_conf(load_settings("test", environ={}).lifecycle)
SIGNALS = "customer_id string, previous_stage string, frequency long, recency_days int, tenure_days int, " \
          "p_alive double, churn_probability double"


def _next(spark: SparkSession, rows: list[tuple]) -> dict[str, tuple[str, str | None]]:
    out = spark.createDataFrame(rows, SIGNALS).select("customer_id", lifecycle.next_stage(S).alias("n"))
    return {r.customer_id: (r.n.stage, r.n.reason) for r in out.collect()}


def test_a_first_stage_follows_the_thresholds(spark: SparkSession) -> None:
    s = S
    rows = _next(spark, [
        ("prospect", None, None, None, None, None, None),
        ("new", None, 1, 10, 10, 0.9, 0.1),
        ("growing", None, 3, 20, 400, 0.9, 0.1),
        ("young_regular", None, s.mature_min_purchases, 5, s.mature_min_tenure_days - 1, 0.9, 0.1),
        ("mature", None, s.mature_min_purchases, 5, s.mature_min_tenure_days, 0.9, 0.1),
        ("at_risk_by_model", None, 6, 30, 500, s.at_risk_max_p_alive - 0.01, 0.1),
        ("at_risk_by_classifier", None, 6, 30, 500, 0.9, s.at_risk_min_churn_probability + 0.01),
        ("at_risk_by_silence", None, 6, s.at_risk_after_days, 900, 0.9, 0.1),
        ("churned_by_model", None, 6, 30, 500, s.churned_max_p_alive - 0.01, 0.1),
        ("churned_by_silence", None, 1, s.churned_after_days, 900, 0.9, 0.1),
    ])

    assert {k: v[0] for k, v in rows.items()} == {
        "prospect": "prospect", "new": "new", "growing": "growing", "young_regular": "growing", "mature": "mature",
        "at_risk_by_model": "at_risk", "at_risk_by_classifier": "at_risk", "at_risk_by_silence": "at_risk",
        "churned_by_model": "churned", "churned_by_silence": "churned"}
    assert {v[1] for v in rows.values()} == {"initial"}


def test_each_declared_transition_fires_on_its_event_with_its_reason(spark: SparkSession) -> None:
    s = S
    quiet = (30, 400, 0.9, 0.1)                       # recency, tenure, P(alive), churn score: no warning
    rows = _next(spark, [
        ("first_purchase", "prospect", 1, 10, 10, 0.9, 0.1),
        ("first_purchases", "prospect", 3, *quiet),   # several since the last run: straight to growing
        ("repeat_purchase", "new", 2, *quiet),
        ("stable_buying", "growing", s.mature_min_purchases, *quiet),
        ("warning_p_alive", "mature", 6, 30, 500, s.at_risk_max_p_alive - 0.01, 0.1),
        ("warning_score", "new", 1, 30, 500, 0.9, s.at_risk_min_churn_probability + 0.01),
        ("warning_silence", "growing", 3, s.at_risk_after_days, 900, 0.9, 0.1),
        ("lapsed", "at_risk", 3, s.churned_after_days, 900, 0.9, 0.1),
        ("recovered", "at_risk", 5, *quiet),
        ("reactivated", "churned", 2, *quiet),
        ("stays_new", "new", 1, *quiet),
        ("stays_at_risk", "at_risk", 3, s.at_risk_after_days, 900, 0.9, 0.1),
    ])

    assert rows == {
        "first_purchase": ("new", "first_purchase"), "first_purchases": ("growing", "first_purchase"),
        "repeat_purchase": ("growing", "repeat_purchase"), "stable_buying": ("mature", "stable_buying"),
        "warning_p_alive": ("at_risk", "warning:p_alive"), "warning_score": ("at_risk", "warning:churn_score"),
        "warning_silence": ("at_risk", "warning:inactivity"), "lapsed": ("churned", "lapsed:inactivity"),
        "recovered": ("mature", "recovered"), "reactivated": ("growing", "reactivated"),
        "stays_new": ("new", None), "stays_at_risk": ("at_risk", None)}


def test_a_transition_not_declared_cannot_happen_whatever_the_signals(spark: SparkSession) -> None:
    """Every previous stage against a grid of every signal's levels: each move is a declared transition, and
    the signals that would have jumped (new to churned, churned to at risk) move one declared step or none."""
    s = S
    frequencies = (1, 2, s.mature_min_purchases)
    recencies = (10, s.at_risk_after_days, s.churned_after_days)
    tenures = (10, s.mature_min_tenure_days)
    p_alives = (0.9, s.at_risk_max_p_alive - 0.01, s.churned_max_p_alive - 0.01)
    scores = (0.1, s.at_risk_min_churn_probability + 0.01)
    rows = [(f"{stage}-{i}", stage, *signals) for stage in lifecycle.LIFECYCLE_STAGES
            for i, signals in enumerate(itertools.product(frequencies, recencies, tenures, p_alives, scores))]
    moves = _next(spark, rows)

    declared = {(a, b) for t in S.transitions for a in t.source for b in t.target}
    observed = {(customer.split("-")[0], stage) for customer, (stage, _) in moves.items()}
    changed = {(a, b) for a, b in observed if a != b}
    assert changed == declared                        # every declared transition is reachable, nothing else
    assert ("new", "churned") not in changed and ("churned", "at_risk") not in changed
    assert ("mature", "new") not in changed and ("churned", "churned") in observed


def test_relationship_stages_and_patterns_by_hand(spark: SparkSession) -> None:
    s = S
    rows = spark.createDataFrame([
        # frequency, tenure, recency, purchases in the last trend window, in the one before, lifecycle stage
        ("exploring", 2, s.exploration_max_days - 1, 3, 2, 0, "growing"),
        ("silent", 3, 400, s.trend_days + 5, 0, 2, "at_risk"),
        ("falling", 6, 300, 20, 1, 4, "growing"),
        ("stable", 8, 300, 10, 3, 3, "mature"),
        ("forming", 3, 400, 10, 2, 0, "growing"),
        ("abort", 1, 900, 900, 0, 0, "churned"),
        ("midway", 3, 900, 600, 0, 0, "churned"),
        ("exit", 5, 900, 600, 0, 0, "churned"),
        ("loyal", 9, s.long_term_days + 20, 10, 3, 3, "mature"),
    ], "customer_id string, frequency long, tenure_days int, recency_days int, purchases_recent long, "
       "purchases_before long, lifecycle string")

    out = {r.customer_id: (r.rel.stage, r.rel.reason, r.pattern) for r in rows.select(
        "customer_id", lifecycle.relationship_stage(s).alias("rel"),
        lifecycle.lifecycle_pattern(s, F.col("lifecycle")).alias("pattern")).collect()}

    assert out == {
        "exploring": ("exploration", "recent_first_purchase", None),
        "silent": ("decline", "no_recent_purchase", None),
        "falling": ("decline", "falling_trend", None),              # 1 <= 4 x 0.5
        "stable": ("stability", "steady_intensity", None),          # 6 >= 4, not falling
        "forming": ("formation", "rising_intensity", None),
        "abort": ("decline", "no_recent_purchase", "early_abort"),
        "midway": ("decline", "no_recent_purchase", "midway_failure"),
        "exit": ("decline", "no_recent_purchase", "early_exit"),    # stable buying, 300 days first to last
        # (conf long_term_days: 365)
        "loyal": ("stability", "steady_intensity", "long_term_retention")}


def test_stage_history_records_each_transition_once_with_its_reason_and_reruns_change_nothing(
        spark: SparkSession) -> None:
    def stages(**by_customer: tuple[str, str]) -> DataFrame:
        return spark.createDataFrame([("lifecycle", c, s, r) for c, (s, r) in by_customer.items()],
                                     "model string, customer_id string, stage string, reason string")

    empty = spark.createDataFrame([], "model string, customer_id string, stage string, previous_stage string, "
                                      "reason string, valid_from date, valid_to date")
    d1, d2, d3 = date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)
    first = {"a": ("new", "initial"), "b": ("growing", "initial")}
    second = {"a": ("growing", "repeat_purchase"), "b": ("growing", None)}
    h1 = lifecycle.advance_history(empty, stages(**first), d1).localCheckpoint()
    h2 = lifecycle.advance_history(h1, stages(**second), d2).localCheckpoint()
    h2_again = lifecycle.advance_history(h2, stages(**second), d2).localCheckpoint()
    h3 = lifecycle.advance_history(h2_again, stages(a=("at_risk", "warning:inactivity"), b=("growing", None)),
                                   d3).localCheckpoint()

    def as_set(h: DataFrame) -> set:
        return {tuple(r) for r in h.select("customer_id", "stage", "previous_stage", "reason", "valid_from",
                                           "valid_to").collect()}

    assert as_set(h2_again) == as_set(h2) == {("a", "new", None, "initial", d1, d2),
                                              ("a", "growing", "new", "repeat_purchase", d2, None),
                                              ("b", "growing", None, "initial", d1, None)}
    assert ("a", "at_risk", "growing", "warning:inactivity", d3, None) in as_set(h3)
    # Rerunning an earlier date rebuilds history from it; the machine builds on the stage open before it.
    assert as_set(lifecycle.advance_history(h3, stages(**second), d2)) == as_set(h2)
    assert {(r.customer_id, r.previous_stage) for r in lifecycle.open_stages(h3, d2).collect()} == \
        {("a", "new"), ("b", "growing")}
    moved = lifecycle.transitions_since(h3, d2).collect()
    assert [(r.customer_id, r.previous_stage, r.stage, r.reason) for r in moved] == \
        [("a", "growing", "at_risk", "warning:inactivity")]
