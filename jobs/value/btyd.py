"""Buy-till-you-die models: BG/NBD (purchases, P(alive)) and Gamma-Gamma (spend per order).

Maximum likelihood over *distinct* data points weighted by how many customers share them,
and within those over distinct values: every gamma-family function of the likelihoods depends
on the frequency alone (a few hundred values), every logarithm of an age on T or t_x alone, so
an optimiser step costs a few vector operations per point. Everything is in log space (gammaln, betaln,
logaddexp), parameters are optimised on the log scale (they must be positive), and a fit
that does not converge raises instead of returning numbers.

Conventions (Fader, Hardie & Lee 2005): frequency x counts repeat transactions, recency t_x
is the time of the last transaction and T the age, both from the first transaction, in the
model's time unit. The Gamma-Gamma input is the mean value of a customer's repeat
transactions (customers with x >= 1 only).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, special


class FitDidNotConverge(RuntimeError):
    """The optimiser stopped without converging; the estimates must not be used."""


@dataclass(frozen=True)
class FitReport:
    log_likelihood: float
    customers: int
    distinct_points: int
    iterations: int
    seconds: float
    method: str


@dataclass(frozen=True)
class BetaGeo:
    """BG/NBD: purchase rate lambda ~ Gamma(r, alpha) while alive; dropout p ~ Beta(a, b) after each purchase."""

    r: float
    alpha: float
    a: float
    b: float

    def log_likelihood(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        return bgnbd_log_likelihood(np.log([self.r, self.alpha, self.a, self.b]), x, t_x, T)

    def _log_odds_dead(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """log of a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x) for x > 0; -inf for x = 0 (never bought again)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            value = (np.log(self.a) - np.log(self.b + x - 1)
                     + (self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + t_x)))
        return np.where(x > 0, value, -np.inf)

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """P(alive | x, t_x, T)."""
        return np.exp(-np.logaddexp(0.0, self._log_odds_dead(x, t_x, T)))

    def expected_purchases(self, t: float | np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """E[purchases in (T, T + t] | x, t_x, T] (equation 10 of Fader, Hardie & Lee 2005)."""
        return self.purchases_if_alive(t, x, T) * self.p_alive(x, t_x, T)

    def purchases_if_alive(self, t: float | np.ndarray, x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """Equation 10 without its P(alive) factor: the expected purchases in (T, T + t] of a customer
        still alive at T. It depends on (x, T) only, so it can be tabled per distinct pair."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
        growth = 1.0 - np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t))) * hyp
        return (a + b + x - 1) / (a - 1) * growth

    def expected_purchases_new_customer(self, t: float | np.ndarray) -> np.ndarray:
        """E[X(t)] for a customer just acquired (equation 9)."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        hyp = special.hyp2f1(r, b, a + b - 1, t / (alpha + t))
        return (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + t)) ** r * hyp)


def bgnbd_log_likelihood(log_params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Per-point BG/NBD log-likelihood at log-parameters (log r, log alpha, log a, log b), as equation 6
    of Fader, Hardie & Lee (2005) writes it; `bgnbd_gradient` sums the same over factored points."""
    r, alpha, a, b = np.exp(log_params)
    common = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    survived = special.betaln(a, b + x) - special.betaln(a, b) - (r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        dropped = special.betaln(a + 1, b + x - 1) - special.betaln(a, b) - (r + x) * np.log(alpha + t_x)
    return common + np.logaddexp(survived, np.where(x > 0, dropped, -np.inf))


@dataclass(frozen=True)
class Distinct:
    """The distinct values of an array and each element's index into them: a function of the value runs
    once per distinct value and is gathered back (`take`), and per-element weights are summed per
    value (`total`)."""

    values: np.ndarray
    index: np.ndarray

    @classmethod
    def of(cls, array: np.ndarray) -> Distinct:
        values, index = np.unique(array, return_inverse=True)
        return cls(values, index)

    def take(self, table: np.ndarray) -> np.ndarray:
        return table[self.index]

    def total(self, weights: np.ndarray) -> np.ndarray:
        return np.bincount(self.index, weights=weights, minlength=len(self.values))


@dataclass(frozen=True)
class PurchaseData:
    """BG/NBD input, factored once before a fit: the special functions of the likelihood depend on x
    alone and the logarithms on T or t_x alone, so each runs over a few hundred distinct values per
    optimiser step instead of once per point."""

    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    weights: np.ndarray
    xs: Distinct
    t_xs: Distinct
    Ts: Distinct
    weight_per_x: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray | None = None) -> PurchaseData:
        x, t_x, T = (np.asarray(v, dtype="float64") for v in (x, t_x, T))
        w = np.ones_like(x) if weights is None else np.asarray(weights, dtype="float64")
        xs = Distinct.of(x)
        return cls(x, t_x, T, w, xs, Distinct.of(t_x), Distinct.of(T), xs.total(w))


def bgnbd_gradient(log_params: np.ndarray, data: PurchaseData) -> tuple[float, np.ndarray]:
    """The weighted sum of per-point log-likelihoods (`bgnbd_log_likelihood`) and its gradient in the
    log-parameters (analytic: one evaluation per optimiser step instead of five for finite differences)."""
    r, alpha, a, b = np.exp(log_params)
    xs, w, n = data.xs.values, data.weights, float(np.sum(data.weights))
    psi = special.digamma
    # Per distinct x: the two ways to have seen the data, still alive at T or dropped out after the last
    # purchase, less their shared factors.
    beta_ab = special.betaln(a, b)
    survived_x = special.betaln(a, b + xs) - beta_ab
    with np.errstate(divide="ignore", invalid="ignore"):
        dropped_x = np.where(xs > 0, special.betaln(a + 1, np.maximum(b + xs - 1, 1e-300)) - beta_ab, -np.inf)
        psi_bx1 = np.where(xs > 0, psi(np.maximum(b + xs - 1, 1e-300)), 0.0)
    log_at_T, log_at_tx = np.log(alpha + data.Ts.values), np.log(alpha + data.t_xs.values)
    rx = r + data.x
    survived = data.xs.take(survived_x) - rx * data.Ts.take(log_at_T)
    dropped = data.xs.take(dropped_x) - rx * data.t_xs.take(log_at_tx)
    either = np.logaddexp(survived, dropped)
    common_x = special.gammaln(r + xs) - special.gammaln(r) + r * np.log(alpha)
    value = float(data.weight_per_x @ common_x + w @ either)
    # Each point's share of the two ways, by weight.
    w_survived = w * np.exp(survived - either)
    w_dropped = w - w_survived
    psi_ab_x = psi(a + b) - psi(a + b + xs)
    d_r = (data.weight_per_x @ psi(r + xs) - n * psi(r) + n * np.log(alpha)
           - data.Ts.total(w_survived) @ log_at_T - data.t_xs.total(w_dropped) @ log_at_tx)
    d_alpha = (n * r / alpha - data.Ts.total(w_survived * rx) @ (1 / (alpha + data.Ts.values))
               - data.t_xs.total(w_dropped * rx) @ (1 / (alpha + data.t_xs.values)))
    d_a = data.weight_per_x @ psi_ab_x + np.sum(w_dropped) / a
    d_b = (data.xs.total(w_survived) @ psi(b + xs) + data.xs.total(w_dropped) @ psi_bx1 - n * psi(b)
           + data.weight_per_x @ psi_ab_x)
    return value, np.array([d_r, d_alpha, d_a, d_b]) * np.array([r, alpha, a, b])


@dataclass(frozen=True)
class GammaGamma:
    """Spend per transaction ~ Gamma(p, nu), nu ~ Gamma(q, gamma) across customers."""

    p: float
    q: float
    gamma: float

    def expected_spend(self, x: np.ndarray, mean_value: np.ndarray) -> np.ndarray:
        """E[spend per transaction | x repeat transactions of mean `mean_value`]; the population mean for x = 0."""
        p, q, g = self.p, self.q, self.gamma
        population = p * g / (q - 1)
        weight = p * x / (p * x + q - 1)
        return (1 - weight) * population + weight * np.where(x > 0, mean_value, 0.0)


def gamma_gamma_log_likelihood(log_params: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Per-customer Gamma-Gamma log-likelihood of mean repeat value m over x >= 1 transactions."""
    p, q, g = np.exp(log_params)
    px = p * x
    return (special.gammaln(px + q) - special.gammaln(px) - special.gammaln(q) + q * np.log(g)
            + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * np.log(g + x * m))


@dataclass(frozen=True)
class SpendData:
    """Gamma-Gamma input, factored once before a fit: the gamma functions depend on p x, so on x alone,
    and the sums over log m do not change between optimiser steps."""

    x: np.ndarray
    m: np.ndarray
    weights: np.ndarray
    xs: Distinct
    weight_per_x: np.ndarray
    log_m_total: float          # sum of w log m
    x_log_m_total: float        # sum of w x log m

    @classmethod
    def of(cls, x: np.ndarray, m: np.ndarray, weights: np.ndarray | None = None) -> SpendData:
        x, m = np.asarray(x, dtype="float64"), np.asarray(m, dtype="float64")
        w = np.ones_like(x) if weights is None else np.asarray(weights, dtype="float64")
        xs, log_m = Distinct.of(x), np.log(m)
        return cls(x, m, w, xs, xs.total(w), float(w @ log_m), float((w * x) @ log_m))


def gamma_gamma_gradient(log_params: np.ndarray, data: SpendData) -> tuple[float, np.ndarray]:
    """The weighted sum of Gamma-Gamma log-likelihoods (`gamma_gamma_log_likelihood`) and its analytic
    gradient in the log-parameters."""
    p, q, g = np.exp(log_params)
    xs, w, n = data.xs.values, data.weights, float(np.sum(data.weights))
    pxs = p * xs
    log_gxm = np.log(g + data.x * data.m)                      # the one per-point logarithm
    w_shape = w * (p * data.x + q)
    value = (data.weight_per_x @ (special.gammaln(pxs + q) - special.gammaln(pxs) + pxs * np.log(xs))
             - n * special.gammaln(q) + n * q * np.log(g) + p * data.x_log_m_total - data.log_m_total
             - w_shape @ log_gxm)
    psi_pxq = special.digamma(pxs + q)
    d_p = (data.weight_per_x @ (xs * (psi_pxq - special.digamma(pxs) + np.log(xs))) + data.x_log_m_total
           - (w * data.x) @ log_gxm)
    d_q = data.weight_per_x @ psi_pxq - n * special.digamma(q) + n * np.log(g) - w @ log_gxm
    d_g = n * q / g - w_shape @ (1 / (g + data.x * data.m))
    return float(value), np.array([d_p, d_q, d_g]) * np.array([p, q, g])


# Parameters beyond e^±15 mean the likelihood kept rising towards the edge of the parameter space:
# the data do not identify the model (e.g. nobody bought twice), whatever the optimiser says.
MAX_ABS_LOG_PARAMETER = 15.0


def _maximise(neg_log_likelihood, start: np.ndarray, what: str, max_iterations: int) -> tuple[np.ndarray, int, str]:
    """Minimise `neg_log_likelihood` (returning value and gradient) with L-BFGS-B; if that fails,
    Nelder-Mead from its end point; raise if neither converges to an interior point."""
    def interior(x: np.ndarray) -> bool:
        return bool(np.all(np.isfinite(x)) and np.all(np.abs(x) < MAX_ABS_LOG_PARAMETER))

    result = optimize.minimize(neg_log_likelihood, start, method="L-BFGS-B", jac=True,
                               options={"maxiter": max_iterations, "ftol": 1e-12, "gtol": 1e-8})
    if result.success and interior(result.x):
        return result.x, int(result.nit), "L-BFGS-B"
    fallback = optimize.minimize(lambda v: neg_log_likelihood(v)[0], result.x if interior(result.x) else start,
                                 method="Nelder-Mead",
                                 options={"maxiter": 10 * max_iterations, "xatol": 1e-8, "fatol": 1e-10})
    if fallback.success and interior(fallback.x):
        return fallback.x, int(fallback.nit), "Nelder-Mead"
    raise FitDidNotConverge(
        f"{what} fit did not converge to a usable maximum: L-BFGS-B said {result.message!r} at parameters "
        f"{np.round(np.exp(result.x), 4).tolist()}, Nelder-Mead said {fallback.message!r} at "
        f"{np.round(np.exp(fallback.x), 4).tolist()}")


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray | None = None,
              start: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
              max_iterations: int = 2000) -> tuple[BetaGeo, FitReport]:
    """Maximum-likelihood BG/NBD over points (x, t_x, T), each standing for `weights` customers."""
    started = time.monotonic()
    data = PurchaseData.of(x, t_x, T, weights)
    x, t_x, T = data.x, data.t_x, data.T
    _check(np.all(x >= 0) and np.all(t_x >= 0) and np.all(t_x <= T) and np.all(T > 0),
           "BG/NBD needs x >= 0 and 0 <= t_x <= T, T > 0")
    _check(bool(np.any(x > 0)), "BG/NBD needs some repeat purchases: with none, dropout cannot be estimated")
    scale = float(np.sum(data.weights))
    # Scaled by the customer count so the optimiser's tolerances mean the same at any size.
    def objective(lp: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = bgnbd_gradient(lp, data)
        return -value / scale, -gradient / scale

    log_params, iterations, method = _maximise(objective, np.log(start), "BG/NBD", max_iterations)
    model = BetaGeo(*(float(v) for v in np.exp(log_params)))
    return model, FitReport(float(-objective(log_params)[0] * scale), int(scale), len(data.x), iterations,
                            time.monotonic() - started, method)


def fit_gamma_gamma(x: np.ndarray, mean_value: np.ndarray, weights: np.ndarray | None = None,
                    start: tuple[float, float, float] = (1.0, 1.0, 1.0),
                    max_iterations: int = 2000) -> tuple[GammaGamma, FitReport]:
    """Maximum-likelihood Gamma-Gamma over customers with x >= 1 repeat transactions of mean value m > 0."""
    started = time.monotonic()
    x, m = np.asarray(x, dtype="float64"), np.asarray(mean_value, dtype="float64")
    _check(np.all(x >= 1) and np.all(m > 0), "Gamma-Gamma needs x >= 1 and a positive mean value")
    data = SpendData.of(x, m, weights)
    scale = float(np.sum(data.weights))
    def objective(lp: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = gamma_gamma_gradient(lp, data)
        return -value / scale, -gradient / scale

    log_params, iterations, method = _maximise(objective, np.log(start), "Gamma-Gamma", max_iterations)
    model = GammaGamma(*(float(v) for v in np.exp(log_params)))
    return model, FitReport(float(-objective(log_params)[0] * scale), int(scale), len(data.x), iterations,
                            time.monotonic() - started, method)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def as_dict(model: BetaGeo | GammaGamma, report: FitReport) -> dict:
    return {**asdict(model), **{f"fit_{k}": v for k, v in asdict(report).items()}}
