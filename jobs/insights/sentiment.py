"""Sentiment of customer feedback (survey comments, support ticket text) with VADER.

VADER (Hutto & Gilbert 2014) is a lexicon and a handful of rules for short, informal English
text; its compound score runs from -1 (most negative) to 1 (most positive). The lexicon ships
inside the `vadersentiment` package, so nothing is downloaded at run time. Scoring runs in
Spark as a pandas UDF; the per-customer summary is Spark built-ins.
"""

from __future__ import annotations

from datetime import date
from functools import cache

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

NEGATIVE_AT_MOST = -0.05  # VADER's own convention: compound <= -0.05 is negative, >= 0.05 positive


@cache
def _analyzer():
    # Built once per Python worker process (workers are reused across tasks): loading the lexicon
    # takes far longer than scoring a short text.
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def compound_scores(texts: pd.Series) -> pd.Series:
    """VADER compound score of each text (null where the text is null)."""
    analyzer = _analyzer()
    return pd.Series([analyzer.polarity_scores(t)["compound"] if isinstance(t, str) else None for t in texts],
                     index=texts.index, dtype="float64")


def feedback(tickets: DataFrame, surveys: DataFrame) -> DataFrame:
    """(customer_id, source, text, ts): ticket text ('ticket', created_at) and survey comments
    ('survey', responded_at) in one frame."""
    return tickets.select("customer_id", F.lit("ticket").alias("source"), F.col("text").alias("text"),
                          F.col("created_at").alias("ts")) \
        .unionByName(surveys.select("customer_id", F.lit("survey").alias("source"), F.col("comment").alias("text"),
                                    F.col("responded_at").alias("ts")))


def score_texts(feedback: DataFrame) -> DataFrame:
    """The feedback rows with a non-blank text, with `sentiment`: the VADER compound score."""
    score = F.pandas_udf(compound_scores, "double")
    return feedback.where(F.trim(F.col("text")) != "").withColumn("sentiment", score(F.col("text")))


def customer_sentiment(scored: DataFrame, as_of: date) -> DataFrame:
    """Per customer, over scored feedback up to the end of `as_of`: texts, mean compound score, share of
    negative texts (compound <= -0.05), and the score and time of the latest. Columns as
    gold.customer_sentiment without as_of_date."""
    known = scored.where(F.col("customer_id").isNotNull() & (F.to_date("ts") <= F.lit(as_of)))
    negative = F.when(F.col("sentiment") <= NEGATIVE_AT_MOST, 1.0).otherwise(0.0)
    # Two texts at the same instant: source and text decide, so a rerun picks the same one.
    latest = F.max_by("sentiment", F.struct("ts", "source", "text"))
    return known.groupBy("customer_id").agg(
        F.count("*").alias("texts"), F.avg("sentiment").alias("avg_sentiment"),
        F.avg(negative).alias("negative_share"), latest.alias("latest_sentiment"),
        F.max("ts").alias("latest_feedback_at"),
    ).select("customer_id", F.col("texts").cast("long"), F.col("avg_sentiment").cast("double"),
             F.col("negative_share").cast("double"), F.col("latest_sentiment").cast("double"),
             F.col("latest_feedback_at").cast("timestamp"))
