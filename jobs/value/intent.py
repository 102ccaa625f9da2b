"""Purchase intent (domain model section 7): the probability of a purchase in the next N days.

The churn classifier's features (`churn.churn_features`: recency, frequency, spend, engagement,
service, surveys as of a reference date) with the opposite question over a shorter window,
answered by a logistic regression: its probabilities are calibrated by construction (it fits
the log-odds), which matters here because marketing reads them as probabilities, not ranks. Trained
at one reference date, evaluated on the next window (AUC, Brier score and a calibration table),
then refitted there to score today, the way churn is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.value.churn import FEATURES, ChurnSources, labelled_windows, purchase_labels

CALIBRATION_BINS = 10


def _pipeline(max_iterations: int) -> Pipeline:
    return Pipeline(stages=[
        VectorAssembler(inputCols=list(FEATURES), outputCol="features"),
        LogisticRegression(labelCol="purchased", featuresCol="features", maxIter=max_iterations),
    ])


def _probability(scored: DataFrame) -> DataFrame:
    return scored.withColumn("purchase_probability", vector_to_array("probability")[1])


def calibration(scored: DataFrame, bins: int = CALIBRATION_BINS) -> list[dict[str, float | int]]:
    """Per bin of predicted probability (tenths): customers, mean predicted and observed purchase rate."""
    bin_ = F.least(F.floor(F.col("purchase_probability") * bins), F.lit(bins - 1)).cast("int")
    rows = scored.groupBy(bin_.alias("bin")).agg(
        F.count("*").alias("customers"), F.avg("purchase_probability").alias("mean_predicted"),
        F.avg("purchased").alias("observed_rate")).orderBy("bin").collect()
    return [r.asDict() for r in rows]


@dataclass(frozen=True)
class IntentModel:
    model: PipelineModel
    window_days: int
    validation_auc: float
    brier_score: float                          # mean squared error of the probabilities on the next window
    calibration: list[dict[str, float | int]]   # `calibration` of the next window
    train_rows: int
    validation_rows: int


def train_intent_model(sources: ChurnSources, as_of: date, window_days: int,
                       max_iterations: int = 100) -> IntentModel:
    """Train at as_of - 2 windows, evaluate at as_of - 1 window; refit at as_of - 1 window for scoring."""
    train, validation = labelled_windows(sources, as_of, window_days, purchase_labels, "purchased")
    pipeline = _pipeline(max_iterations)
    predicted = _probability(pipeline.fit(train).transform(validation)).localCheckpoint()
    auc = BinaryClassificationEvaluator(labelCol="purchased", rawPredictionCol="rawPrediction",
                                        metricName="areaUnderROC").evaluate(predicted)
    brier = predicted.agg(F.avg((F.col("purchase_probability") - F.col("purchased")) ** 2)).first()[0]
    return IntentModel(pipeline.fit(validation), window_days, float(auc), float(brier), calibration(predicted),
                       train.count(), validation.count())


def intent_scores(model: IntentModel, features: DataFrame) -> DataFrame:
    """(customer_id, purchase_probability) from `churn.churn_features` as of the scoring date."""
    return _probability(model.model.transform(features)).select(
        "customer_id", "purchase_probability")
