"""Purchase intent: labels follow the window, a planted propensity is recovered with calibrated
probabilities, and MLlib's logistic regression agrees with a scipy fit of the same likelihood."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest
from pyspark.sql import SparkSession
from scipy.optimize import minimize
from scipy.special import expit

from jobs.value import churn, intent
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


def test_mllib_logistic_regression_agrees_with_a_scipy_fit_of_the_same_likelihood(planted: tuple) -> None:
    sources, _, model = planted
    at = AS_OF - timedelta(days=WINDOW)
    train = churn.churn_features(sources, at).join(intent.purchase_labels(sources.daily, at, WINDOW), "customer_id") \
        .toPandas()
    today = churn.churn_features(sources, AS_OF).toPandas()
    ours = {r.customer_id: r.purchase_probability
            for r in intent.intent_scores(model, churn.churn_features(sources, AS_OF)).collect()}

    # The reference: the unpenalised Bernoulli log-likelihood minimised by BFGS on standardised features.
    # Features constant in training (never answered a survey) carry nothing: dropped, as MLlib zeroes them.
    varying = [f for f in churn.FEATURES if train[f].std() > 0]
    x = train[varying].to_numpy(float)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    design = np.column_stack([np.ones(len(x)), (x - mean) / scale])
    y = train["purchased"].to_numpy(float)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = design @ w
        return float(np.sum(np.logaddexp(0, z) - y * z)), design.T @ (expit(z) - y)

    fitted = minimize(loss, np.zeros(design.shape[1]), jac=True, method="BFGS", options={"gtol": 1e-6})
    reference = expit(np.column_stack([np.ones(len(today)), (today[varying].to_numpy(float) - mean) / scale])
                      @ fitted.x)

    difference = np.abs(np.array([ours[c] for c in today["customer_id"]]) - reference)
    assert fitted.success and difference.max() < 0.01
