"""KPIs by period and segment, checked against numbers worked out by hand on a few customers.

As of Tuesday 2026-02-10, months Jan and Feb 2026 reported (Dec 2025 is the period before Jan).
Customers and signup channels: a search, b social, c web, d search, e social (a prospect whose only
purchase is after as_of). Current value tiers: a, d high; b, c low. First seen: a Nov 1, e Dec 1, b Dec 20,
d Jan 5, c Jan 20 (the day of its first purchase).

Purchases (12:00):       Dec 5   Jan 10  Jan 15  Jan 20  Feb 3  Feb 5  Feb 8    after as_of
  a                      100     50                      30
  b                                      40      20
  c                                              60             10
  d                                                                    80 + 20  Feb 15: 999
  e                                                                             Feb 12: 500
"""

from __future__ import annotations

from datetime import date, datetime

import pytest
from pyspark.sql import SparkSession

from jobs.insights import kpis
from schemas.gold import KPI

AS_OF = date(2026, 2, 10)
JAN, FEB, DEC = date(2026, 1, 1), date(2026, 2, 1), date(2025, 12, 1)


def noon(month: int, day: int, year: int = 2026) -> datetime:
    return datetime(year, month, day, 12)


@pytest.fixture(scope="module")
def result(spark: SparkSession) -> dict:
    """kpis() computed once on the hand-made data: {(grain, period_start, segment_type, segment, kpi):
    (value, numerator, denominator)}, plus the DataFrame's schema under 'schema'."""
    def frame(rows: list, ddl: str):
        return spark.createDataFrame(rows, ddl)

    purchases = frame([
        ("a", "t1", noon(12, 5, 2025), 100.0), ("a", "t2", noon(1, 10), 50.0), ("a", "t3", noon(2, 3), 30.0),
        ("b", "t4", noon(1, 15), 40.0), ("b", "t5", noon(1, 20), 20.0),
        ("c", "t6", noon(1, 20), 60.0), ("c", "t7", noon(2, 5), 10.0),
        ("d", "t8", noon(2, 8), 80.0), ("d", "t9", noon(2, 8), 20.0), ("d", "t10", noon(2, 15), 999.0),
        ("e", "t11", noon(2, 12), 500.0),
    ], "customer_id string, transaction_id string, ts timestamp, amount double")
    customers = frame([("a", "search", noon(11, 1, 2025)), ("b", "social", noon(12, 20, 2025)),
                       ("c", "web", noon(1, 20)), ("d", "search", noon(1, 5)), ("e", "social", noon(12, 1, 2025))],
                      "customer_id string, signup_channel string, first_seen timestamp")
    membership = frame([("a", "value_tier", "high"), ("d", "value_tier", "high"), ("b", "value_tier", "low"),
                        ("c", "value_tier", "low")], "customer_id string, segment_type string, segment string")
    spend = frame([
        (date(2026, 1, 5), "search", 100.0), (date(2026, 1, 20), "search", 100.0), (date(2026, 1, 10), "social", 50.0),
        (date(2026, 1, 12), "email", 30.0), (date(2026, 2, 1), "search", 60.0), (date(2026, 2, 3), "social", 40.0),
        (date(2026, 2, 12), "search", 500.0),                                  # after as_of
    ], "spend_date date, channel string, amount_reporting double")
    campaign = frame([
        ("a", "c1", "click", datetime(2026, 1, 5, 10)),     # a buys Jan 10, 5 days later: converts
        ("b", "c1", "click", datetime(2026, 1, 1, 10)),     # b's next purchase is 14 days later: no
        ("b", "c1", "open", datetime(2026, 1, 1, 9)),
        (None, "c1", "click", datetime(2026, 1, 3, 10)),    # unresolved: not a customer
        ("c", "c2", "click", datetime(2026, 2, 1, 10)),     # c buys Feb 5: converts
        ("d", "c2", "click", datetime(2026, 2, 9, 10)),     # d buys Feb 15, after as_of: not yet
        ("a", "c2", "click", datetime(2026, 2, 11, 10)),    # after as_of
        # Sends (campaign response, by send day): c1 to a, b and e in Jan; c2 to c on Jan 31, to d in Feb.
        ("a", "c1", "sent", datetime(2026, 1, 4, 10)), ("b", "c1", "sent", datetime(2026, 1, 1, 8)),
        ("e", "c1", "sent", datetime(2026, 1, 2, 10)),      # never clicked
        ("c", "c2", "sent", datetime(2026, 1, 31, 10)), ("d", "c2", "sent", datetime(2026, 2, 9, 9)),
        ("a", "c2", "sent", datetime(2026, 2, 11, 9)),      # after as_of
    ], "customer_id string, campaign_id string, event_type string, event_ts timestamp")
    tickets = frame([
        ("a", datetime(2026, 1, 10, 9), 30.0, 4.0), ("b", datetime(2026, 1, 12, 9), 90.0, None),
        ("c", datetime(2026, 2, 10, 8), 20.0, 48.0),        # answered 08:20, resolved Feb 12: still open
    ], "customer_id string, created_at timestamp, first_response_minutes double, resolution_hours double")
    surveys = frame([
        ("a", "NPS", 10, noon(1, 11)), ("b", "NPS", 9, noon(1, 16)), ("c", "NPS", 5, noon(1, 21)),
        ("d", "NPS", 7, noon(1, 22)), ("e", "NPS", 0, noon(2, 11)),           # e's is after as_of
        ("a", "CSAT", 5, noon(1, 11)), ("b", "CSAT", 3, noon(1, 16)), ("c", "CSAT", 4, noon(1, 21)),
        ("d", "CSAT", 1, noon(2, 9)),
    ], "customer_id string, survey_type string, score int, responded_at timestamp")
    referrals = frame([("a", noon(1, 20)), ("a", noon(2, 2)), ("b", noon(2, 5))],
                      "referrer_customer_id string, referred_at timestamp")
    feedback = frame([("a", "survey", noon(1, 11), 0.5), ("b", "ticket", noon(1, 16), -0.25),   # a complaint
                      ("c", "survey", noon(2, 6), 0.75),
                      (None, "ticket", noon(2, 6), -1.0),                     # unresolved writer
                      ("d", "ticket", noon(2, 11), -0.9)],                    # after as_of
                     "customer_id string, source string, ts timestamp, sentiment double")
    values = frame([("a", date(2026, 1, 31), 100.0), ("a", AS_OF, 120.0), ("b", AS_OF, 40.0),
                    ("c", date(2026, 1, 15), 30.0), ("d", date(2026, 2, 11), 999.0)],       # d's is after as_of
                   "customer_id string, as_of_date date, clv double")

    out = kpis.kpis(purchases, customers, membership, spend, campaign, tickets, surveys, referrals, feedback,
                    values, as_of=AS_OF, periods={"month": 2, "week": 2, "day": 3}, attribution_days=7,
                    complaint_at_most=-0.05)
    collected = out.collect()
    rows = {(r.grain, r.period_start, r.segment_type, r.segment, r.kpi): (r.value, r.numerator, r.denominator)
            for r in collected}
    assert len(rows) == len(collected)                       # the table's key is unique
    assert {r.as_of_date for r in collected} == {AS_OF}
    return {"rows": rows, "schema": out.schema}


def value(result: dict, period: date, kpi: str, segment: tuple[str, str] = ("all", "all"), grain: str = "month"):
    return result["rows"][(grain, period, *segment, kpi)][0]


def test_purchase_kpis_for_all_customers(result: dict) -> None:
    expected = {
        # Jan: a, b, c active; b and c new (a first bought in Dec); 4 transactions, 170; a kept from Dec.
        JAN: {"active_customers": 3, "new_customers": 2, "revenue": 170, "arpu": 170 / 3,
              "average_order_value": 42.5, "retention_rate": 1.0, "churn_rate": 0.0,
              "repeat_purchase_rate": 2 / 3},                  # a (Dec, Jan) and b (2 days) of a, b, c
        # Feb: a, c, d active; d new; t10, t11 and e are after as_of; b lost of a, b, c; t8 + t9 one day.
        FEB: {"active_customers": 3, "new_customers": 1, "revenue": 140, "arpu": 140 / 3,
              "average_order_value": 35.0, "retention_rate": 2 / 3, "churn_rate": 1 / 3,
              "repeat_purchase_rate": 3 / 4},                  # a, b, c of a, b, c, d
    }
    for period, kpis_ in expected.items():
        for kpi, want in kpis_.items():
            assert value(result, period, kpi) == pytest.approx(want), (period, kpi)
    assert result["rows"][("month", FEB, "all", "all", "churn_rate")][1:] == (1.0, 3.0)
    assert result["rows"][("month", FEB, "all", "all", "revenue")][1:] == (140.0, None)
    assert {k[1] for k in result["rows"] if k[0] == "month"} == {JAN, FEB}


def test_segments_differ_from_all_and_a_zero_denominator_is_null(result: dict) -> None:
    high, low = ("value_tier", "high"), ("value_tier", "low")
    assert value(result, FEB, "retention_rate", high) == pytest.approx(1.0)    # a kept; all: 2/3
    assert value(result, FEB, "active_customers", high) == 2                  # a, d
    assert value(result, FEB, "arpu", high) == pytest.approx(65.0)            # (30 + 100) / 2
    assert value(result, FEB, "retention_rate", low) == pytest.approx(0.5)    # c kept, b lost
    assert value(result, JAN, "repeat_purchase_rate", low) == pytest.approx(0.5)  # b of b, c
    # No low-tier customer bought in Dec: retention 0 / 0 is null, churn too.
    assert result["rows"][("month", JAN, *low, "retention_rate")] == (None, 0.0, 0.0)
    assert result["rows"][("month", JAN, *low, "churn_rate")] == (None, 0.0, 0.0)
    # CAC and ROAS only for 'all' and spend channels.
    assert not [k for k in result["rows"] if k[2] == "value_tier" and k[4] in ("cac", "roas")]
    assert not [k for k in result["rows"] if k[2] == "channel" and k[4] not in ("cac", "roas")]


def test_campaign_survey_service_and_referral_kpis(result: dict) -> None:
    assert value(result, JAN, "campaign_conversion_rate") == pytest.approx(1 / 2)   # a of a, b
    assert value(result, FEB, "campaign_conversion_rate") == pytest.approx(1 / 2)   # c of c, d (d buys too late)
    assert value(result, JAN, "nps") == pytest.approx(25.0)           # (2 promoters - 1 detractor) / 4 * 100
    assert result["rows"][("month", JAN, "all", "all", "nps")][1:] == (100.0, 4.0)
    assert ("month", FEB, "all", "all", "nps") not in result["rows"]   # e's answer is after as_of
    assert value(result, JAN, "csat") == pytest.approx(2 / 3)          # 5 and 4 of 5, 3, 4
    assert value(result, FEB, "csat") == pytest.approx(0.0)
    assert value(result, JAN, "first_response_minutes") == pytest.approx(60.0)   # (30 + 90) / 2
    assert value(result, JAN, "resolution_hours") == pytest.approx(4.0)          # b's ticket is open
    assert value(result, FEB, "first_response_minutes") == pytest.approx(20.0)
    assert result["rows"][("month", FEB, "all", "all", "resolution_hours")] == (None, 0.0, 0.0)
    assert value(result, JAN, "referral_rate") == pytest.approx(1 / 3)
    assert value(result, FEB, "referral_rate") == pytest.approx(2 / 3)
    assert value(result, FEB, "referral_rate", ("value_tier", "low")) == pytest.approx(1.0)  # b's / c active
    assert result["rows"][("month", JAN, "all", "all", "feedback_sentiment")] == pytest.approx((0.125, 0.25, 2.0))
    assert result["rows"][("month", FEB, "all", "all", "feedback_sentiment")] == pytest.approx((0.75, 0.75, 1.0))
    assert value(result, JAN, "feedback_sentiment", ("value_tier", "low")) == pytest.approx(-0.25)   # b
    assert ("month", FEB, "value_tier", "high", "feedback_sentiment") not in result["rows"]  # d's is too late


def test_complaints_prospect_conversion_campaign_response_and_clv(result: dict) -> None:
    high, low = ("value_tier", "high"), ("value_tier", "low")
    # b's negative ticket is Jan's one complaint, of 3 active customers; none in Feb.
    assert result["rows"][("month", JAN, "all", "all", "complaint_rate")] == pytest.approx((1 / 3, 1.0, 3.0))
    assert value(result, FEB, "complaint_rate") == 0.0
    assert value(result, JAN, "complaint_rate", low) == pytest.approx(1 / 2)
    # Prospects when Jan starts: b and e (a had bought, c and d not yet seen); b converts. Feb: d and e; d converts.
    assert result["rows"][("month", JAN, "all", "all", "prospect_conversion_rate")] == pytest.approx((0.5, 1.0, 2.0))
    assert result["rows"][("month", FEB, "all", "all", "prospect_conversion_rate")] == pytest.approx((0.5, 1.0, 2.0))
    assert value(result, FEB, "prospect_conversion_rate", high) == 1.0       # d, of d
    assert ("month", JAN, *high, "prospect_conversion_rate") not in result["rows"]   # no prospect: a had bought
    assert value(result, date(2026, 2, 2), "prospect_conversion_rate", grain="week") == pytest.approx(1 / 2)
    assert result["rows"][("week", date(2026, 2, 9), "all", "all", "prospect_conversion_rate")] == \
        pytest.approx((0.0, 0.0, 1.0))                                       # e, still a prospect
    # Sends in Jan: a, b, e (c1) and c (c2), three answered by a click; Feb: d (c2), answered.
    assert result["rows"][("month", JAN, "all", "all", "campaign_response_rate")] == pytest.approx((0.75, 3.0, 4.0))
    assert value(result, FEB, "campaign_response_rate") == 1.0
    assert value(result, JAN, "campaign_response_rate", ("campaign", "c1")) == pytest.approx(2 / 3)
    assert value(result, JAN, "campaign_response_rate", ("campaign", "c2")) == 1.0
    assert {k[4] for k in result["rows"] if k[2] == "campaign"} == {"campaign_response_rate"}
    # CLV as last scored in the period: Jan a 100 and c 30; Feb a 120 and b 40 (d's score is after as_of).
    assert result["rows"][("month", JAN, "all", "all", "clv_total")] == (130.0, 130.0, None)
    assert result["rows"][("month", JAN, "all", "all", "clv_mean")] == (65.0, 130.0, 2.0)
    assert value(result, FEB, "clv_mean") == pytest.approx(80.0)
    assert value(result, FEB, "clv_total", high) == pytest.approx(120.0)
    assert value(result, AS_OF, "clv_total", grain="day") == pytest.approx(160.0)


def test_cac_and_roas_overall_and_per_channel(result: dict) -> None:
    search, social, email = ("channel", "search"), ("channel", "social"), ("channel", "email")
    assert value(result, JAN, "cac") == pytest.approx(280 / 2)         # all Jan spend / b, c
    assert value(result, JAN, "roas") == pytest.approx(170 / 280)
    assert value(result, FEB, "cac") == pytest.approx(100.0)           # the Feb 12 spend is after as_of
    assert value(result, FEB, "roas") == pytest.approx(1.4)
    assert result["rows"][("month", JAN, *search, "cac")] == (None, 200.0, 0.0)   # no search signup new in Jan
    assert value(result, JAN, "roas", search) == pytest.approx(50 / 200)         # a's Jan purchase
    assert value(result, JAN, "cac", social) == pytest.approx(50.0)              # b
    assert value(result, JAN, "roas", social) == pytest.approx(60 / 50)
    assert value(result, JAN, "roas", email) == pytest.approx(0.0)
    assert value(result, FEB, "cac", search) == pytest.approx(60.0)              # d
    assert value(result, FEB, "roas", search) == pytest.approx(130 / 60)         # a 30, d 100
    assert value(result, FEB, "roas", social) == pytest.approx(0.0)
    assert ("month", FEB, *email, "cac") not in result["rows"]                   # no email data in Feb
    assert not [k for k in result["rows"] if k[3] == "web"]                      # not a spend channel


def test_weeks_start_on_monday_days_and_the_schema(result: dict) -> None:
    week, this_week = date(2026, 2, 2), date(2026, 2, 9)
    # d's Sunday Feb 8 purchase is in the week of Monday Feb 2, with a's and c's.
    assert value(result, week, "active_customers", grain="week") == 3
    assert value(result, week, "revenue", grain="week") == pytest.approx(140.0)
    # Nobody bought in the week of as_of: no purchase rows, but all three are lost.
    assert ("week", this_week, "all", "all", "active_customers") not in result["rows"]
    assert value(result, this_week, "churn_rate", grain="week") == pytest.approx(1.0)
    assert value(result, date(2026, 2, 8), "average_order_value", grain="day") == pytest.approx(50.0)
    assert {k[1] for k in result["rows"] if k[0] == "day"} <= {date(2026, 2, 8), date(2026, 2, 9), AS_OF}
    assert [(f.name, f.dataType.simpleString()) for f in result["schema"]] == \
        [(c.name, c.data_type.simpleString()) for c in KPI.columns]
