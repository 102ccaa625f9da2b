"""Sentiment of customer feedback (survey comments, support ticket text), in English and Chinese.

Each text's language is read off its script (a Spark built-in): Chinese when it holds at least as
many CJK ideographs as Latin letters, else English. The two scripts do not overlap, so this is exact
for the two languages served, and needs no model.
- English: VADER (Hutto & Gilbert 2014), a lexicon and a handful of rules for short, informal text;
  its compound score runs from -1 (most negative) to 1 (most positive).
- Chinese: SnowNLP's sentiment model (naive Bayes trained on product reviews), whose probability p
  of a positive text is mapped to 2p - 1, the same -1..1 scale.
Both models ship inside their PyPI packages, so nothing is downloaded at run time. Scoring is a
pandas UDF run once per distinct text (feedback repeats itself); the per-customer summary is Spark
built-ins.
"""

from __future__ import annotations

from datetime import date
from functools import cache

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.cleanse.standardise import per_distinct

NEGATIVE_AT_MOST = -0.05  # VADER's own convention: compound <= -0.05 is negative, >= 0.05 positive
LANGUAGES = ("en", "zh")


@cache
def _analyzer():
    # Built once per Python worker process (workers are reused across tasks): loading the lexicon
    # takes far longer than scoring a short text.
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def _chinese_score(text: str) -> float:
    from snownlp import SnowNLP  # its model loads on first use, once per worker process

    return 2.0 * SnowNLP(text).sentiments - 1.0


def sentiment_scores(texts: pd.Series, languages: pd.Series) -> pd.Series:
    """Sentiment of each text on -1..1 in its language ('en' VADER, 'zh' SnowNLP; null where the text is)."""
    analyzer = _analyzer()
    return pd.Series([(_chinese_score(t) if lang == "zh" else analyzer.polarity_scores(t)["compound"])
                      if isinstance(t, str) else None for t, lang in zip(texts, languages)],
                     index=texts.index, dtype="float64")


def language(text: Column) -> Column:
    """'zh' where the text holds at least as many CJK ideographs as Latin letters (and some), else 'en'."""
    ideographs = F.regexp_count(text, F.lit("[\\x{4E00}-\\x{9FFF}\\x{3400}-\\x{4DBF}]"))
    letters = F.regexp_count(text, F.lit("[A-Za-z]"))
    return F.when((ideographs > 0) & (ideographs >= letters), "zh").otherwise("en")


def feedback(tickets: DataFrame, surveys: DataFrame) -> DataFrame:
    """(customer_id, source, text, ts): ticket text ('ticket', created_at) and survey comments
    ('survey', responded_at) in one frame."""
    return tickets.select("customer_id", F.lit("ticket").alias("source"), F.col("text").alias("text"),
                          F.col("created_at").alias("ts")) \
        .unionByName(surveys.select("customer_id", F.lit("survey").alias("source"), F.col("comment").alias("text"),
                                    F.col("responded_at").alias("ts")))


def score_texts(feedback: DataFrame) -> DataFrame:
    """The feedback rows with a non-blank text, with `language` and `sentiment` (-1..1), scored once per
    distinct text."""
    score = F.pandas_udf(sentiment_scores, "double")
    texts = feedback.where(F.trim(F.col("text")) != "")
    def scored_in_its_language(text: Column) -> Column:
        lang = language(text)
        return F.struct(lang.alias("language"), score(text, lang).alias("sentiment"))

    scored = per_distinct(texts, "text", scored_in_its_language, "_scored")
    return scored.select(*texts.columns, "_scored.language", "_scored.sentiment")


def customer_sentiment(scored: DataFrame, as_of: date) -> DataFrame:
    """Per customer, over scored feedback up to the end of `as_of`: the language of most texts, texts, mean
    score, share of negative texts (score <= -0.05), and the score and time of the latest. Columns as
    gold.customer_sentiment without as_of_date."""
    known = scored.where(F.col("customer_id").isNotNull() & (F.to_date("ts") <= F.lit(as_of)))
    negative = F.when(F.col("sentiment") <= NEGATIVE_AT_MOST, 1.0).otherwise(0.0)
    # The language most of the customer's texts are in (ties: English, the first of LANGUAGES).
    chinese = F.count(F.when(F.col("language") == "zh", 1))
    # Two texts at the same instant: source and text decide, so a rerun picks the same one.
    latest = F.max_by("sentiment", F.struct("ts", "source", "text"))
    return known.groupBy("customer_id").agg(
        F.count("*").alias("texts"), F.avg("sentiment").alias("avg_sentiment"),
        F.avg(negative).alias("negative_share"), latest.alias("latest_sentiment"),
        F.max("ts").alias("latest_feedback_at"), chinese.alias("texts_zh"),
    ).select("customer_id", F.when(F.col("texts_zh") * 2 > F.col("texts"), "zh").otherwise("en").alias("language"),
             F.col("texts").cast("long"), F.col("avg_sentiment").cast("double"),
             F.col("negative_share").cast("double"), F.col("latest_sentiment").cast("double"),
             F.col("latest_feedback_at").cast("timestamp"))
