"""Churn classifier: features see only the past, labels follow the window, a planted signal is learnt."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
from pyspark.sql import DataFrame, SparkSession

from jobs.platform.config import Settings
from jobs.value import churn

AT = date(2026, 6, 30)


def _sources(spark: SparkSession, daily: list, events: list = (), campaign: list = (), tickets: list = (),
             surveys: list = ()) -> churn.ChurnSources:
    def frame(rows: list, ddl: str) -> DataFrame:
        return spark.createDataFrame(list(rows), ddl)

    return churn.ChurnSources(
        frame(daily, "customer_id string, txn_date date, value double"),
        frame(events, "customer_id string, event_date date"),
        frame(campaign, "customer_id string, event_ts timestamp, event_type string"),
        frame(tickets, "customer_id string, created_at timestamp, resolution_hours double"),
        frame(surveys, "customer_id string, responded_at timestamp, survey_type string, score int"))


def test_features_use_only_data_up_to_the_reference_date(spark: SparkSession) -> None:
    later = datetime(2026, 7, 5)
    sources = _sources(
        spark,
        daily=[("a", date(2025, 12, 31), 40.0), ("a", date(2026, 6, 20), 10.0), ("a", date(2026, 7, 2), 99.0),
               ("b", date(2026, 7, 1), 5.0)],                       # b has not bought by AT: not a row
        events=[("a", date(2026, 6, 1)), ("a", date(2026, 6, 1)), ("a", date(2026, 6, 2)), ("a", date(2026, 7, 1))],
        campaign=[("a", datetime(2026, 5, 1), "open"), ("a", datetime(2026, 5, 2), "click"),
                  ("a", later, "unsubscribe")],
        tickets=[("a", datetime(2026, 3, 1), 10.0), ("a", datetime(2026, 4, 1), 20.0), ("a", later, 500.0)],
        surveys=[("a", datetime(2026, 1, 1), "NPS", 3), ("a", datetime(2026, 6, 1), "NPS", 9),
                 ("a", later, "NPS", 0)])

    rows = {r.customer_id: r.asDict() for r in churn.churn_features(sources, AT).collect()}

    assert set(rows) == {"a"}
    assert rows["a"] == {
        "customer_id": "a", "days_since_last_purchase": 10.0, "tenure_days": 181.0, "purchases_365d": 2.0,
        "spend_365d": 50.0, "purchases_90d": 1.0, "events_90d": 3.0, "active_days_90d": 2.0,
        "email_opens_90d": 1.0, "email_clicks_90d": 1.0, "unsubscribed": 0.0, "tickets_180d": 2.0,
        "avg_resolution_hours": 15.0, "latest_nps": 9.0, "latest_csat": -1.0}


def test_label_is_no_purchase_in_the_window_after(spark: SparkSession) -> None:
    daily = _sources(spark, daily=[
        ("stays", date(2026, 6, 1), 1.0), ("stays", date(2026, 9, 28), 1.0),      # day 90 of the window
        ("leaves", date(2026, 6, 1), 1.0), ("leaves", date(2026, 9, 29), 1.0),    # day 91: too late
        ("new", date(2026, 7, 1), 1.0)]).daily

    labels = {r.customer_id: r.churned for r in churn.churn_labels(daily, AT, 90).collect()}

    assert labels == {"stays": 0.0, "leaves": 1.0}


def test_a_planted_churn_signal_is_learnt_and_ranked(spark: SparkSession, settings: Settings) -> None:
    """Customers who unsubscribed and complained stop buying; the rest buy monthly. Purchase history
    alone cannot tell them apart before they leave, so a high AUC means the engagement features work."""
    rng = np.random.default_rng(11)
    start, end = date(2025, 1, 1), date(2026, 12, 31)
    daily, campaign, tickets = [], [], []
    leaving: dict[str, date] = {}
    for i in range(600):
        customer = f"c{i}"
        # Each customer leaves at a random date (or never); 60 days before, they unsubscribe and complain.
        leaves = start + timedelta(days=int(rng.integers(200, 900))) if rng.random() < 0.5 else None
        if leaves:
            leaving[customer] = leaves
            warning = datetime.combine(leaves - timedelta(days=60), datetime.min.time())
            campaign.append((customer, warning, "unsubscribe"))
            tickets.append((customer, warning, float(rng.integers(24, 200))))
        day = start + timedelta(days=int(rng.integers(0, 30)))
        while day <= end and (leaves is None or day < leaves):
            daily.append((customer, day, float(rng.integers(10, 100))))
            day += timedelta(days=int(rng.integers(20, 40)))
    sources = _sources(spark, daily=daily, campaign=campaign, tickets=tickets)
    as_of = date(2026, 9, 30)

    # As many boosting rounds as the test profile gives the pipeline (conf/test.yaml).
    model = churn.train_churn_model(sources, as_of, 90, max_iterations=settings.clv.churn_max_iterations,
                                    max_depth=settings.clv.churn_max_depth)
    today = churn.churn_features(sources, as_of)
    scores = {r.customer_id: r.churn_probability for r in churn.churn_scores(model, today).collect()}

    assert model.validation_auc > 0.9
    assert model.train_rows > 0 and model.validation_rows > 0
    # Today: those about to leave (warned, still buying) score above those who stay.
    about_to_leave = [c for c, d in leaving.items() if as_of < d <= as_of + timedelta(days=60) and c in scores]
    staying = [c for c in scores if c not in leaving]
    assert about_to_leave and np.mean([scores[c] for c in about_to_leave]) > \
        np.mean([scores[c] for c in staying]) + 0.3
