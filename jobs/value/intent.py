"""Purchase intent (domain model section 7): the probability of a purchase in the next N days.

The churn classifier's features (`churn.churn_features`: recency, frequency, spend, engagement,
service, surveys as of a reference date) with the opposite question over a shorter window,
answered by a logistic regression: its probabilities are calibrated by construction (it fits
the log-odds), which matters here because marketing reads them as probabilities, not ranks. Trained
at one reference date, evaluated on the next window (AUC, Brier score and a calibration table),
then refitted there to score today, the way churn is. The regression is fitted in the driver on a
bounded sample and scored in Spark (`jobs.value.logistic`): fourteen coefficients need neither a
cluster nor MLlib's job per iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.value import logistic
from jobs.value.churn import FEATURES, ChurnSources, labelled_windows, purchase_labels

CALIBRATION_BINS = 10


def _fit(labelled: DataFrame, sample: int) -> logistic.Logistic:
    return logistic.fit(*logistic.labelled_sample(labelled, FEATURES, "purchased", sample), FEATURES)


def calibration(scored: DataFrame, bins: int = CALIBRATION_BINS) -> list[dict[str, float | int]]:
    """Per bin of predicted probability (tenths): customers, mean predicted and observed purchase rate."""
    bin_ = F.least(F.floor(F.col("purchase_probability") * bins), F.lit(bins - 1)).cast("int")
    rows = scored.groupBy(bin_.alias("bin")).agg(
        F.count("*").alias("customers"), F.avg("purchase_probability").alias("mean_predicted"),
        F.avg("purchased").alias("observed_rate")).orderBy("bin").collect()
    return [r.asDict() for r in rows]


@dataclass(frozen=True)
class IntentModel:
    model: logistic.Logistic
    window_days: int
    validation_auc: float
    brier_score: float                          # mean squared error of the probabilities on the next window
    calibration: list[dict[str, float | int]]   # `calibration` of the next window
    train_rows: int
    validation_rows: int


def train_intent_model(sources: ChurnSources, as_of: date, window_days: int, fit_sample: int = 500_000
                       ) -> IntentModel:
    """Train at as_of - 2 windows, evaluate at as_of - 1 window; refit at as_of - 1 window for scoring. Each
    fit sees at most `fit_sample` customers (conf `clv.intent_fit_sample`)."""
    train, validation = labelled_windows(sources, as_of, window_days, purchase_labels, "purchased")
    predicted = validation.withColumn("purchase_probability", _fit(train, fit_sample).probability()) \
        .localCheckpoint()
    auc = BinaryClassificationEvaluator(labelCol="purchased", rawPredictionCol="purchase_probability",
                                        metricName="areaUnderROC").evaluate(predicted)
    brier = predicted.agg(F.avg((F.col("purchase_probability") - F.col("purchased")) ** 2)).first()[0]
    return IntentModel(_fit(validation, fit_sample), window_days, float(auc), float(brier),
                       calibration(predicted), train.count(), validation.count())


def intent_scores(model: IntentModel, features: DataFrame) -> DataFrame:
    """(customer_id, purchase_probability) from `churn.churn_features` as of the scoring date."""
    return features.select("customer_id", model.model.probability().alias("purchase_probability"))
