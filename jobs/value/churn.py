"""Supervised churn risk (Spark MLlib), beside the BG/NBD P(alive).

P(alive) sees purchases only. This model also sees engagement (web/app events, e-mail
opens and clicks, unsubscribes), service (tickets, resolution times) and surveys (NPS,
CSAT). Features are computed as of a reference date from data up to it; the label is
"no purchase in the following window". It is trained at one reference date and evaluated
at the next (a later, unseen window), then refitted on that later window to score today.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import GBTClassifier
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

FEATURES = (
    "days_since_last_purchase", "tenure_days", "purchases_365d", "spend_365d", "purchases_90d",
    "events_90d", "active_days_90d", "email_opens_90d", "email_clicks_90d", "unsubscribed",
    "tickets_180d", "avg_resolution_hours", "latest_nps", "latest_csat",
)


@dataclass(frozen=True)
class ChurnSources:
    daily: DataFrame            # (customer_id, txn_date, value)
    events: DataFrame           # silver events with customer_id
    campaign_events: DataFrame  # with customer_id
    tickets: DataFrame          # with customer_id
    surveys: DataFrame          # with customer_id


def _since(column: str, at: date, days: int) -> F.Column:
    return (F.col(column) > F.lit(at - timedelta(days=days))) & (F.col(column) <= F.lit(at))


def churn_features(sources: ChurnSources, at: date) -> DataFrame:
    """One row per customer who had bought by `at`, features from data up to `at` only (nulls as 0,
    except survey scores, where -1 means never answered)."""
    purchases = sources.daily.where(F.col("txn_date") <= F.lit(at)).groupBy("customer_id").agg(
        F.datediff(F.lit(at), F.max("txn_date")).alias("days_since_last_purchase"),
        F.datediff(F.lit(at), F.min("txn_date")).alias("tenure_days"),
        F.count(F.when(_since("txn_date", at, 365), 1)).alias("purchases_365d"),
        F.sum(F.when(_since("txn_date", at, 365), F.col("value"))).alias("spend_365d"),
        F.count(F.when(_since("txn_date", at, 90), 1)).alias("purchases_90d"))
    events = sources.events.where(_since("event_date", at, 90)).groupBy("customer_id").agg(
        F.count("*").alias("events_90d"), F.countDistinct("event_date").alias("active_days_90d"))
    campaigns = sources.campaign_events.withColumn("day", F.to_date("event_ts")).where(F.col("day") <= F.lit(at)) \
        .groupBy("customer_id").agg(
            F.count(F.when(_since("day", at, 90) & (F.col("event_type") == "open"), 1)).alias("email_opens_90d"),
            F.count(F.when(_since("day", at, 90) & (F.col("event_type") == "click"), 1)).alias("email_clicks_90d"),
            F.max(F.when(F.col("event_type") == "unsubscribe", 1).otherwise(0)).alias("unsubscribed"))
    tickets = sources.tickets.withColumn("day", F.to_date("created_at")).where(_since("day", at, 180)) \
        .groupBy("customer_id").agg(F.count("*").alias("tickets_180d"),
                                    F.avg("resolution_hours").alias("avg_resolution_hours"))
    answered = sources.surveys.where(F.to_date("responded_at") <= F.lit(at))
    surveys = answered.groupBy("customer_id").agg(
        F.max_by(F.when(F.col("survey_type") == "NPS", F.col("score")),
                 F.when(F.col("survey_type") == "NPS", F.col("responded_at"))).alias("latest_nps"),
        F.max_by(F.when(F.col("survey_type") == "CSAT", F.col("score")),
                 F.when(F.col("survey_type") == "CSAT", F.col("responded_at"))).alias("latest_csat"))
    joined = purchases
    for part in (events, campaigns, tickets, surveys):
        joined = joined.join(part, "customer_id", "left")
    filled = {f: (-1 if f in ("latest_nps", "latest_csat") else 0) for f in FEATURES}
    return joined.select("customer_id", *[F.coalesce(F.col(f).cast("double"), F.lit(float(v))).alias(f)
                                          for f, v in filled.items()])


def purchase_labels(daily: DataFrame, at: date, window_days: int) -> DataFrame:
    """(customer_id, purchased): 1.0 when a customer who had bought by `at` bought in the window after it."""
    bought = daily.where((F.col("txn_date") > F.lit(at)) & (F.col("txn_date") <= F.lit(
        at + timedelta(days=window_days)))).select("customer_id").distinct().withColumn("_bought", F.lit(True))
    customers = daily.where(F.col("txn_date") <= F.lit(at)).select("customer_id").distinct()
    return customers.join(bought, "customer_id", "left").select(
        "customer_id", F.when(F.col("_bought"), 1.0).otherwise(0.0).alias("purchased"))


def churn_labels(daily: DataFrame, at: date, window_days: int) -> DataFrame:
    """(customer_id, churned): 1.0 when a customer who had bought by `at` bought nothing in the window after."""
    return purchase_labels(daily, at, window_days).select("customer_id", (1.0 - F.col("purchased")).alias("churned"))


def _pipeline(seed: int, max_iterations: int, max_depth: int) -> Pipeline:
    return Pipeline(stages=[
        VectorAssembler(inputCols=list(FEATURES), outputCol="features"),
        GBTClassifier(labelCol="churned", featuresCol="features", maxIter=max_iterations, maxDepth=max_depth,
                      seed=seed),
    ])


@dataclass(frozen=True)
class ChurnModel:
    model: PipelineModel
    validation_auc: float
    train_rows: int
    validation_rows: int


def labelled_windows(sources: ChurnSources, as_of: date, window_days: int,
                     labels: Callable[[DataFrame, date, int], DataFrame], label: str) -> tuple[DataFrame, DataFrame]:
    """Features with their `label` column (from `labels(daily, at, window_days)`) at as_of - 2 windows (to train)
    and as_of - 1 window (to evaluate, and to refit on for scoring); both must hold both classes."""
    def labelled(at: date) -> DataFrame:
        return churn_features(sources, at).join(labels(sources.daily, at, window_days), "customer_id") \
            .localCheckpoint()

    train = labelled(as_of - timedelta(days=2 * window_days))
    validation = labelled(as_of - timedelta(days=window_days))
    if train.select(label).distinct().count() < 2 or validation.select(label).distinct().count() < 2:
        raise ValueError(f"'{label}' is the same for every customer in the training or the validation window; "
                         f"the classifier needs both classes: widen its window ({window_days} days)")
    return train, validation


def train_churn_model(sources: ChurnSources, as_of: date, window_days: int, seed: int = 7,
                      max_iterations: int = 40, max_depth: int = 4) -> ChurnModel:
    """Train at as_of - 2 windows, evaluate (AUC) at as_of - 1 window; refit at as_of - 1 window for scoring.

    `max_iterations` (boosting rounds) and `max_depth` (per tree) size the GBT: conf `clv.churn_max_iterations`
    and `clv.churn_max_depth`."""
    train, validation = labelled_windows(sources, as_of, window_days, churn_labels, "churned")
    evaluator = BinaryClassificationEvaluator(labelCol="churned", rawPredictionCol="rawPrediction",
                                              metricName="areaUnderROC")
    pipeline = _pipeline(seed, max_iterations, max_depth)
    auc = evaluator.evaluate(pipeline.fit(train).transform(validation))
    return ChurnModel(pipeline.fit(validation), float(auc), train.count(), validation.count())


def churn_scores(model: ChurnModel, features: DataFrame) -> DataFrame:
    """(customer_id, churn_probability) from `churn_features` as of the scoring date."""
    scored = model.model.transform(features)
    return scored.select("customer_id", vector_to_array("probability")[1].alias("churn_probability"))
