"""Sentiment: VADER gets known texts and the generator's own comments right; the per-customer summary is exact."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pytest
from pyspark.sql import SparkSession

from jobs.insights import sentiment
from jobs.tools.generate.sources import COMMENTS_BAD, COMMENTS_GOOD, COMMENTS_MID, TICKET_TEXT
from schemas.gold import CUSTOMER_SENTIMENT

AT = datetime(2026, 11, 1, 12, tzinfo=UTC)
SCORED = "customer_id string, source string, text string, ts timestamp, sentiment double"


def test_texts_score_in_line_with_the_sample_ground_truth(spark: SparkSession) -> None:
    tickets = [(f"k{i}", text, AT) for i, text in enumerate(t for texts in TICKET_TEXT.values() for t in texts)]
    comments = COMMENTS_GOOD + COMMENTS_MID + COMMENTS_BAD + ["Great service, love it", "terrible, very disappointed"]
    surveys = [(f"s{i}", text, AT) for i, text in enumerate(comments)] + [("s-null", None, AT), ("s-blank", "  ", AT)]
    feedback = sentiment.feedback(
        spark.createDataFrame(tickets, "customer_id string, text string, created_at timestamp"),
        spark.createDataFrame(surveys, "customer_id string, comment string, responded_at timestamp"))

    rows = sentiment.score_texts(feedback).collect()
    score = {(r.source, r.text): r.sentiment for r in rows}

    assert len(rows) == len(tickets) + len(comments)          # null and blank texts dropped
    assert all(-1.0 <= s <= 1.0 for s in score.values())
    assert score["survey", "Great service, love it"] > 0.5
    assert score["survey", "terrible, very disappointed"] < -0.5

    def mean(texts: list[str], source: str = "survey") -> float:
        return float(np.mean([score[source, t] for t in texts]))

    # The generator picks comments by true satisfaction: good > mid > bad; tickets are mostly complaints.
    assert mean(COMMENTS_GOOD) > mean(COMMENTS_MID) > mean(COMMENTS_BAD)
    assert mean(COMMENTS_GOOD) > 0.3 and mean(COMMENTS_BAD) < -0.3
    assert mean([t for texts in TICKET_TEXT.values() for t in texts], "ticket") < 0


def test_customer_summary_is_exact_and_ignores_later_feedback(spark: SparkSession) -> None:
    def at(*args: int) -> datetime:
        return datetime(*args, tzinfo=UTC)

    scored = spark.createDataFrame([
        ("a", "survey", "fine", at(2026, 11, 1, 10), 0.5),
        ("a", "ticket", "bad", at(2026, 11, 20, 23, 59, 59), -0.6),       # last second of the as-of day
        ("a", "survey", "later", at(2026, 11, 21), 0.9),                  # after it: ignored
        ("b", "survey", "meh", at(2026, 10, 1), -0.05),                   # on the threshold: negative
        ("c", "survey", "later", at(2026, 12, 1), 0.7),                   # nothing by the as-of date: no row
        (None, "ticket", "unresolved", at(2026, 10, 1), 0.2),
    ], SCORED)

    result = sentiment.customer_sentiment(scored, date(2026, 11, 20))
    rows = {r.customer_id: tuple(r)[1:] for r in result.collect()}

    assert [(f.name, f.dataType) for f in result.schema.fields] == \
        [(c.name, c.data_type) for c in CUSTOMER_SENTIMENT.columns if c.name != "as_of_date"]
    # PySpark returns timestamps as naive datetimes in the machine's local time.
    assert rows == {
        "a": (2, pytest.approx(-0.05), 0.5, -0.6, at(2026, 11, 20, 23, 59, 59).astimezone().replace(tzinfo=None)),
        "b": (1, -0.05, 1.0, -0.05, at(2026, 10, 1).astimezone().replace(tzinfo=None)),
    }
