"""Purchase intent: labels follow the window, a planted propensity is recovered with calibrated
probabilities, the driver's logistic fit agrees with MLlib's on the same rows and recovers known
coefficients from simulated ones."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest
from pyspark.ml import Pipeline
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import SparkSession
from scipy.special import expit

from jobs.value import churn, intent, logistic
from tests.test_churn import _sources

AS_OF = date(2026, 9, 30)
WINDOW = 30


def test_label_is_a_purchase_in_the_window_after(spark: SparkSession) -> None:
    daily = _sources(spark, daily=[
        ("buys", date(2026, 6, 1), 1.0), ("buys", date(2026, 7, 30), 1.0),       # day 30 of the window
        ("late", date(2026, 6, 1), 1.0), ("late", date(2026, 7, 31), 1.0),      # day 31: too late
        ("new", date(2026, 7, 1), 1.0)]).daily

    labels = {r.customer_id: r.purchased for r in intent.purchase_labels(daily, date(2026, 6, 30), WINDOW).collect()}

    assert labels == {"buys": 1.0, "late": 0.0}


def _planted(spark: SparkSession) -> tuple[churn.ChurnSources, dict[str, float]]:
    """Half the customers buy in any 30-day block with probability 0.75, the others 0.15; the keen ones
    also browse more. Returns the sources and each customer's true propensity."""
    rng = np.random.default_rng(5)
    start = date(2025, 1, 1)
    blocks = (AS_OF - start).days // WINDOW + 1
    daily, events, propensity = [], [], {}
    for i in range(800):
        customer = f"c{i}"
        propensity[customer] = p = 0.75 if i % 2 else 0.15
        daily.append((customer, start, 20.0))
        for b in range(1, blocks):
            first = start + timedelta(days=b * WINDOW)
            if rng.random() < p:
                daily.append((customer, first + timedelta(days=int(rng.integers(0, WINDOW))), 30.0))
            events += [(customer, first + timedelta(days=int(d)))
                       for d in rng.integers(0, WINDOW, rng.poisson(1 + 8 * p))]
    return _sources(spark, daily=daily, events=events), propensity


@pytest.fixture(scope="module")
def planted(spark: SparkSession) -> tuple[churn.ChurnSources, dict[str, float], intent.IntentModel]:
    """The planted sample and the model trained on it, once for the module."""
    sources, propensity = _planted(spark)
    return sources, propensity, intent.train_intent_model(sources, AS_OF, WINDOW)


def test_a_planted_propensity_is_recovered_with_calibrated_probabilities(planted: tuple) -> None:
    sources, propensity, model = planted

    scores = {r.customer_id: r.purchase_probability
              for r in intent.intent_scores(model, churn.churn_features(sources, AS_OF)).collect()}

    # Known truth: the true propensities ranked the next window's buyers this well; the model nearly does.
    validation = {r.customer_id: r.purchased
                  for r in intent.purchase_labels(sources.daily, AS_OF - timedelta(days=WINDOW), WINDOW).collect()}
    truth = np.array([propensity[c] for c in validation])
    bought = np.array(list(validation.values()))
    oracle_auc = np.mean([(t_pos > t_neg) + 0.5 * (t_pos == t_neg)
                          for t_pos in truth[bought == 1] for t_neg in truth[bought == 0]])
    assert oracle_auc - 0.05 < model.validation_auc <= 1.0 and model.validation_auc > 0.7
    # Calibrated: in every well-filled tenth, the observed rate is the predicted one up to sampling error
    # (three binomial standard errors, plus a little for the model's own error).
    filled = [b for b in model.calibration if b["customers"] >= 40]
    assert len(filled) >= 5 and all(
        abs(b["mean_predicted"] - b["observed_rate"])
        < 3 * np.sqrt(b["mean_predicted"] * (1 - b["mean_predicted"]) / b["customers"]) + 0.03 for b in filled)
    assert sum(b["customers"] for b in model.calibration) == model.validation_rows == len(validation)
    assert 0 < model.brier_score < 0.25
    # Today the scores part the two groups (features that only hint at a customer's group shrink each
    # group's mean towards the middle).
    keen = np.mean([s for c, s in scores.items() if propensity[c] == 0.75])
    idle = np.mean([s for c, s in scores.items() if propensity[c] == 0.15])
    assert keen - idle > 0.3


def test_the_driver_fit_agrees_with_mllib_logistic_regression_on_the_same_rows(planted: tuple) -> None:
    sources, _, model = planted
    at = AS_OF - timedelta(days=WINDOW)
    validation = churn.churn_features(sources, at).join(intent.purchase_labels(sources.daily, at, WINDOW),
                                                        "customer_id")
    today = churn.churn_features(sources, AS_OF)
    ours = {r.customer_id: r.purchase_probability for r in intent.intent_scores(model, today).collect()}

    # The reference: MLlib's logistic regression (unpenalised, its own L-BFGS) refitted on the same window.
    reference_model = Pipeline(stages=[
        VectorAssembler(inputCols=list(churn.FEATURES), outputCol="features"),
        LogisticRegression(labelCol="purchased", featuresCol="features", maxIter=200, tol=1e-10)]).fit(validation)
    reference = {r.customer_id: r.p for r in reference_model.transform(today).select(
        "customer_id", vector_to_array("probability")[1].alias("p")).collect()}

    assert ours.keys() == reference.keys()
    assert max(abs(ours[c] - reference[c]) for c in ours) < 0.005


def test_a_logistic_fit_recovers_known_coefficients_from_simulated_rows() -> None:
    rng = np.random.default_rng(11)
    truth = {"intercept": -1.2, "recency": -0.8, "spend": 0.004, "constant": 0.0}
    # A constant of 0.1 (whose float standard deviation is not exactly 0) carries nothing.
    x = np.column_stack([rng.exponential(2.0, 200_000), rng.gamma(2.0, 150.0, 200_000), np.full(200_000, 0.1)])
    y = (rng.random(200_000) < expit(truth["intercept"] + x[:, 0] * truth["recency"]
                                      + x[:, 1] * truth["spend"])).astype(float)

    fitted = logistic.fit(x, y, ["recency", "spend", "constant"])

    # Within about three standard errors of the maximum-likelihood estimates at this size.
    assert fitted.intercept == pytest.approx(truth["intercept"], abs=0.04)
    assert fitted.coefficients["recency"] == pytest.approx(truth["recency"], abs=0.02)
    assert fitted.coefficients["spend"] == pytest.approx(truth["spend"], abs=1.5e-4)
    assert fitted.coefficients["constant"] == 0.0


def test_a_logistic_fit_refuses_rows_of_one_class() -> None:
    with pytest.raises(ValueError, match="both classes"):
        logistic.fit(np.ones((10, 2)), np.zeros(10), ["a", "b"])
