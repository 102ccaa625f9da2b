"""Sentiment: each language detected and scored with the sign a reader gives it, the generator's own comments
ranked by true satisfaction in both languages; the per-customer summary is exact."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pytest
from pyspark.sql import SparkSession

from jobs.insights import sentiment
from jobs.tools.generate.sources import (
    COMMENTS_BAD,
    COMMENTS_BAD_ZH,
    COMMENTS_GOOD,
    COMMENTS_GOOD_ZH,
    COMMENTS_MID,
    COMMENTS_MID_ZH,
    TICKET_TEXT,
    TICKET_TEXT_ZH,
)
from schemas.gold import CUSTOMER_SENTIMENT

AT = datetime(2026, 11, 1, 12, tzinfo=UTC)
SCORED = "customer_id string, source string, text string, ts timestamp, language string, sentiment double"
# Labelled by hand: (text, language, sign of its sentiment).
LABELLED = [
    ("The staff were lovely and the parcel came early", "en", 1),
    ("Worst purchase I have made, the zip broke on day one", "en", -1),
    ("Refund still missing after three weeks, I am furious", "en", -1),
    ("Really happy with my new shoes!", "en", 1),
    ("这家店的衣服质量非常好，下次还来", "zh", 1),
    ("客服回复很及时，问题解决得很好", "zh", 1),
    ("等了一个月还没发货，太失望了", "zh", -1),
    ("买到的是坏的，要求退款也没人理", "zh", -1),
    ("包装精美，朋友很喜欢这个礼物", "zh", 1),
    ("质量太差，穿了一次就破了", "zh", -1),
    ("非常满意，推荐给大家", "zh", 1),
    ("东西不错，物美价廉", "zh", 1),
    ("太贵了，不值这个价", "zh", -1),
    ("售后服务很差，打了三次电话都没人接", "zh", -1),
    ("衣服很漂亮，穿着很舒服", "zh", 1),
    ("味道很奇怪，不会再买了", "zh", -1),
    ("发货速度快，包装也很好", "zh", 1),
    ("尺码不对，退货还要自己付运费", "zh", -1),
]


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


def test_each_language_is_detected_and_scored_with_the_right_sign(spark: SparkSession) -> None:
    generated = [(t, "zh", 0) for t in COMMENTS_GOOD_ZH + COMMENTS_MID_ZH + COMMENTS_BAD_ZH] + \
        [(t, "zh", 0) for texts in TICKET_TEXT_ZH.values() for t in texts]
    mixed = [("物流很快 ok", "zh", 0), ("OK thanks, 谢谢", "en", 0)]        # the script that leads wins
    texts = LABELLED + generated + mixed
    feedback = sentiment.feedback(
        spark.createDataFrame([], "customer_id string, text string, created_at timestamp"),
        spark.createDataFrame([(f"s{i}", t, AT) for i, (t, _, _) in enumerate(texts)],
                              "customer_id string, comment string, responded_at timestamp"))

    rows = {r.text: (r.language, r.sentiment) for r in sentiment.score_texts(feedback).collect()}

    assert {t: rows[t][0] for t, _, _ in texts} == {t: lang for t, lang, _ in texts}
    # The sign a reader gives: VADER gets every English sentence; SnowNLP (naive Bayes over word counts) misses
    # praise phrased without its positive words (14 of 16 right when written).
    right = {lang: [np.sign(rows[t][1]) == sign for t, language_, sign in LABELLED if language_ == lang]
             for lang in ("en", "zh")}
    assert all(right["en"]) and np.mean(right["zh"]) >= 0.85

    def mean(group: list[str]) -> float:
        return float(np.mean([rows[t][1] for t in group]))

    # Chinese comments ranked as their English originals; Chinese tickets mostly complaints, like English ones.
    assert mean(COMMENTS_GOOD_ZH) > mean(COMMENTS_MID_ZH) > mean(COMMENTS_BAD_ZH)
    assert mean(COMMENTS_GOOD_ZH) > 0.3 and mean(COMMENTS_BAD_ZH) < -0.3
    assert mean([t for group in TICKET_TEXT_ZH.values() for t in group]) < 0


def test_customer_summary_is_exact_and_ignores_later_feedback(spark: SparkSession) -> None:
    def at(*args: int) -> datetime:
        return datetime(*args, tzinfo=UTC)

    scored = spark.createDataFrame([
        ("a", "survey", "fine", at(2026, 11, 1, 10), "en", 0.5),
        ("a", "ticket", "bad", at(2026, 11, 20, 23, 59, 59), "en", -0.6),       # last second of the as-of day
        ("a", "survey", "later", at(2026, 11, 21), "zh", 0.9),                  # after it: ignored
        ("b", "survey", "meh", at(2026, 10, 1), "zh", -0.05),                   # on the threshold: negative
        ("c", "survey", "later", at(2026, 12, 1), "en", 0.7),                   # nothing by the as-of date: no row
        (None, "ticket", "unresolved", at(2026, 10, 1), "en", 0.2),
    ], SCORED)

    result = sentiment.customer_sentiment(scored, date(2026, 11, 20))
    rows = {r.customer_id: tuple(r)[1:] for r in result.collect()}

    assert [(f.name, f.dataType) for f in result.schema.fields] == \
        [(c.name, c.data_type) for c in CUSTOMER_SENTIMENT.columns if c.name != "as_of_date"]
    # PySpark returns timestamps as naive datetimes in the machine's local time.
    assert rows == {
        "a": ("en", 2, pytest.approx(-0.05), 0.5, -0.6,
              at(2026, 11, 20, 23, 59, 59).astimezone().replace(tzinfo=None)),
        "b": ("zh", 1, -0.05, 1.0, -0.05, at(2026, 10, 1).astimezone().replace(tzinfo=None)),
    }
