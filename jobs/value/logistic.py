"""Logistic regression fitted in the driver (scipy) on a bounded sample, scored in Spark as a column.

MLlib's logistic regression runs a Spark job per L-BFGS iteration (and more for its line searches and
summaries): a hundred or two small jobs per fit for a model of fourteen coefficients. Here the labelled
feature rows (at most `clv.intent_fit_sample` customers: a few tens of megabytes) come to the driver
through Arrow once; the unpenalised Bernoulli log-likelihood, with its analytic gradient, is minimised
by L-BFGS on standardised features; the coefficients go back into the query as a column expression.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from scipy.optimize import minimize
from scipy.special import expit

from jobs.platform.sampling import sample_matrix

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Logistic:
    intercept: float
    coefficients: dict[str, float]    # per feature, in the feature's own units

    def probability(self) -> Column:
        """P(label = 1) of a row holding the features."""
        z = sum((F.col(f) * F.lit(w) for f, w in self.coefficients.items() if w), F.lit(self.intercept))
        return F.lit(1.0) / (F.lit(1.0) + F.exp(-z))


def fit(x: np.ndarray, y: np.ndarray, names: Sequence[str]) -> Logistic:
    """Maximum likelihood, no penalty. A feature constant in `x` carries nothing and gets coefficient 0 (as
    MLlib gives it); the fit runs on standardised features, for conditioning, and is mapped back."""
    if len(np.unique(y)) < 2:
        raise ValueError("logistic regression needs both classes in its training rows")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    varying = x.max(axis=0) > x.min(axis=0)      # not scale > 0: a constant 0.1 has a std of 3e-17
    design = np.column_stack([np.ones(len(x)), (x[:, varying] - mean[varying]) / scale[varying]])

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = design @ w
        return float(np.sum(np.logaddexp(0.0, z) - y * z)), design.T @ (expit(z) - y)

    # The loss is a sum over the rows: its gradient's tolerance scales with them.
    result = minimize(loss, np.zeros(design.shape[1]), jac=True, method="L-BFGS-B",
                      options={"maxiter": 1000, "gtol": 1e-9 * len(x), "ftol": 1e-14})
    if not np.all(np.isfinite(result.x)):
        raise ValueError(f"logistic regression did not converge: {result.message}")
    if not result.success:
        # Separable classes drive a coefficient without bound: the fit still ranks and is kept, with a warning.
        log.warning("logistic regression stopped before converging: %s", result.message)
    weights = np.zeros(x.shape[1])
    weights[varying] = result.x[1:] / scale[varying]
    intercept = float(result.x[0] - np.sum(weights[varying] * mean[varying]))
    return Logistic(intercept, {n: float(w) for n, w in zip(names, weights, strict=True)})


def labelled_sample(frame: DataFrame, features: Sequence[str], label: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """About `size` customers' features and label through Arrow, the same customers on every run
    (`jobs.platform.sampling`)."""
    rows = sample_matrix(frame, "customer_id", [*features, label], frame.count(), size)
    return rows[:, :-1], rows[:, -1]
