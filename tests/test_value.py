"""CLV parts per customer (`customer_values`) on hand-made rows, with every figure computed by hand."""

from __future__ import annotations

import pytest
from pyspark.sql import SparkSession

from jobs.value.clv import ValueSettings
from jobs.value.customer_value import PotentialSettings, customer_values
from schemas.gold import IDENTITY_GRAPH
from schemas.silver import REFERRALS
from tests.factories import frame

SCORED = "customer_id string, frequency double, recency double, T double, monetary_value double, p_alive double, " \
         "expected_purchases double, expected_spend double, current_value double"


def test_clv_is_history_plus_model_plus_growth_and_word_of_mouth(spark: SparkSession) -> None:
    value = ValueSettings("day", (30,), clv_horizon_days=365, period_days=30, annual_discount_rate=0.1, margin=0.3)
    potential = PotentialSettings(referral_credit=0.2, peer_columns=("city",), peer_quantile=0.75, min_peers=2,
                                  referral_prior_years=1.0)
    # T in days: A and C have been customers for one year, B for two.
    scored = spark.createDataFrame([("A", 2.0, 10.0, 365.25, 50.0, 0.9, 1.5, 55.0, 40.0),
                                    ("B", 0.0, 0.0, 730.5, 0.0, 1.0, 0.4, 30.0, 10.0),
                                    ("C", 1.0, 3.0, 365.25, 20.0, 0.5, 0.2, 25.0, 2.0)], SCORED)
    profile = spark.createDataFrame([("A", 500.0, "Boston"), ("B", 100.0, "Boston"), ("C", 0.0, "Denver")],
                                    "customer_id string, net_revenue double, city string")
    graph = frame(spark, IDENTITY_GRAPH, [{"node": "loyalty:L-A", "customer_id": "A"},
                                          {"node": "email:kb", "customer_id": "B"},
                                          {"node": "email:kc", "customer_id": "C"}])
    # A referred B and C, and a friend who never became a customer.
    referrals = frame(spark, REFERRALS, [
        {"referral_id": "r1", "referrer_loyalty_number": "L-A", "referred_email_key": "kb"},
        {"referral_id": "r2", "referrer_loyalty_number": "L-A", "referred_email_key": "kc"},
        {"referral_id": "r3", "referrer_loyalty_number": "L-A", "referred_email_key": "nobody"}])

    rows = {r.customer_id: r for r in customer_values(scored, profile, referrals, graph, potential, value).collect()}

    assert set(rows) == {"A", "B", "C"}
    historical = {"A": 150.0, "B": 30.0, "C": 0.0}         # net revenue x margin
    current = {"A": 40.0, "B": 10.0, "C": 2.0}
    p_alive = {"A": 0.9, "B": 1.0, "C": 0.5}
    # Growth: Boston's two customers reach 40 (the 75th percentile of 40 and 10); Denver has one customer,
    # fewer than min_peers, so C is compared with everyone (40, 10 and 2: again 40).
    peer = {"A": 40.0, "B": 40.0, "C": 40.0}
    growth = {"A": 0.0, "B": 1.0 * 30.0, "C": 0.5 * 38.0}
    # Word of mouth: 3 referrals over 4 customer-years is everyone's rate, 0.75 a year; each customer's is
    # (own referrals + 0.75 x 1 prior year) / (own years + 1), over the 365-day horizon while alive. A referral
    # is worth the mean value of the referred customers B (30 + 10) and C (0 + 2): 21.
    rate = {"A": (3 + 0.75) / (1 + 1), "B": 0.75 / (2 + 1), "C": 0.75 / (1 + 1)}
    expected = {c: p_alive[c] * rate[c] * 365 / 365.25 for c in rows}
    referred_so_far = {"A": 40.0 + 2.0, "B": 0.0, "C": 0.0}
    for c, row in rows.items():
        word_of_mouth = 0.2 * (referred_so_far[c] + expected[c] * 21.0)
        assert row.historical_value == pytest.approx(historical[c])
        assert row.peer_value == pytest.approx(peer[c])
        assert row.growth_value == pytest.approx(growth[c])
        assert row.expected_referrals == pytest.approx(expected[c])
        assert row.word_of_mouth_value == pytest.approx(word_of_mouth)
        assert row.potential_value == pytest.approx(growth[c] + word_of_mouth)
        assert row.clv == pytest.approx(historical[c] + current[c] + growth[c] + word_of_mouth)
        assert row.churn_risk == pytest.approx(1 - p_alive[c])
    assert (rows["A"].referrals_made, rows["B"].referrals_made) == (3, 0)
    assert {r.time_unit for r in rows.values()} == {"day"} and rows["A"].clv_horizon_days == 365


def test_an_unknown_market_segment_is_a_segment_of_its_own(spark: SparkSession) -> None:
    """Customers whose peer column is null are peers of each other, not dropped by the join."""
    value = ValueSettings("day", (30,), clv_horizon_days=365, period_days=30, annual_discount_rate=0.1, margin=0.3)
    potential = PotentialSettings(referral_credit=0.0, peer_columns=("city",), peer_quantile=0.75, min_peers=2,
                                  referral_prior_years=1.0)
    scored = spark.createDataFrame([(c, 1.0, 1.0, 100.0, 10.0, 1.0, 1.0, 10.0, v)
                                    for c, v in (("A", 8.0), ("B", 4.0), ("C", 100.0))], SCORED)
    profile = spark.createDataFrame([("A", 0.0, None), ("B", 0.0, None), ("C", 0.0, "Miami")],
                                    "customer_id string, net_revenue double, city string")
    graph = frame(spark, IDENTITY_GRAPH, [{"node": "email:ka", "customer_id": "A"}])

    rows = {r.customer_id: r for r in customer_values(scored, profile, frame(spark, REFERRALS, []), graph,
                                                      potential, value).collect()}

    assert rows["B"].peer_value == pytest.approx(8.0) and rows["B"].growth_value == pytest.approx(4.0)
    assert rows["C"].peer_value == pytest.approx(100.0) and rows["C"].growth_value == 0.0
