"""CLV parts per customer (`customer_values`) on hand-made rows, with every figure computed by hand."""

from __future__ import annotations

import pytest
from pyspark.sql import SparkSession

from jobs.value.clv import ValueSettings
from jobs.value.customer_value import customer_values
from schemas.gold import IDENTITY_GRAPH
from schemas.silver import REFERRALS
from tests.factories import frame

SCORED = "customer_id string, frequency double, recency double, T double, monetary_value double, p_alive double, " \
         "expected_purchases double, expected_spend double, current_value double"


def test_clv_is_history_plus_model_plus_a_share_of_referred_value(spark: SparkSession) -> None:
    value = ValueSettings("week", (30,), clv_horizon_days=365, period_days=30, annual_discount_rate=0.1, margin=0.3)
    scored = spark.createDataFrame([("A", 2.0, 10.0, 20.0, 50.0, 0.9, 1.5, 55.0, 40.0),
                                    ("B", 0.0, 0.0, 5.0, 0.0, 1.0, 0.4, 30.0, 10.0),
                                    ("C", 1.0, 3.0, 8.0, 20.0, 0.5, 0.2, 25.0, 2.0)], SCORED)
    profile = spark.createDataFrame([("A", 500.0), ("B", 100.0), ("C", 0.0)], "customer_id string, net_revenue double")
    graph = frame(spark, IDENTITY_GRAPH, [{"node": "loyalty:L-A", "customer_id": "A"},
                                          {"node": "email:kb", "customer_id": "B"},
                                          {"node": "email:kc", "customer_id": "C"}])
    # A referred B and C; a referral whose friend never became a customer earns nothing.
    referrals = frame(spark, REFERRALS, [
        {"referral_id": "r1", "referrer_loyalty_number": "L-A", "referred_email_key": "kb"},
        {"referral_id": "r2", "referrer_loyalty_number": "L-A", "referred_email_key": "kc"},
        {"referral_id": "r3", "referrer_loyalty_number": "L-A", "referred_email_key": "nobody"}])

    rows = {r.customer_id: r for r in customer_values(scored, profile, referrals, graph, margin=0.3,
                                                      referral_credit=0.2, value=value).collect()}

    assert set(rows) == {"A", "B", "C"}
    # historical = net revenue x margin; potential = 20 % of the referred customers' historical + current.
    assert rows["A"].historical_value == pytest.approx(150.0)
    assert rows["A"].potential_value == pytest.approx(0.2 * ((30.0 + 10.0) + (0.0 + 2.0)))
    assert rows["A"].clv == pytest.approx(150.0 + 40.0 + 8.4)
    assert (rows["B"].historical_value, rows["B"].potential_value, rows["B"].clv) == pytest.approx((30.0, 0.0, 40.0))
    assert rows["C"].churn_risk == pytest.approx(0.5) and rows["C"].clv == pytest.approx(2.0)
    assert {r.time_unit for r in rows.values()} == {"week"} and rows["A"].clv_horizon_days == 365
