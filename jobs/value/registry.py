"""The CLV model registry (ops.clv_models): which model scores a date, how a refit is validated on
the holdout before it, and whether it is promoted. A refit scores only from its own date on, and only
if it converged and its holdout MAE is within `clv.max_holdout_mae_increase` of the model in force's
on the same window (by default: not worse)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.platform.settings import ClvConfig
from jobs.value import btyd, clv


def model_in_force(models: DataFrame, as_of: date) -> dict | None:
    """The ops.clv_models row that scores `as_of`: the latest promoted model fitted as of that date or
    before (so rerunning a past date uses the model of that time, not a later refit)."""
    rows = models.where(F.col("promoted") & (F.col("as_of_date") <= F.lit(as_of))) \
        .orderBy(F.col("as_of_date").desc(), F.col("fitted_at").desc()).limit(1).collect()
    return rows[0].asDict() if rows else None


def promotion(candidate_mae: float, current: dict | None, current_mae: float | None,
              max_increase: float) -> tuple[bool, str]:
    """Whether a refit scores: its holdout MAE against the model in force's on the same window
    (`current_mae`), at most `max_increase` (relative) worse."""
    if current is None or current_mae is None:
        return True, "first model"
    version, bound = current["model_version"], current_mae * (1 + max_increase)
    against = f"{version}'s {current_mae:.4f} on the same holdout" + (f" + {max_increase:.0%}" if max_increase else "")
    if candidate_mae <= bound:
        return True, f"holdout MAE {candidate_mae:.4f}, not worse than {against}"
    return False, f"refused: holdout MAE {candidate_mae:.4f}, worse than {against}; {version} keeps scoring"


def in_unit(current: dict, unit: str) -> btyd.BetaGeo:
    """The BG/NBD of an ops.clv_models row in `unit`: alpha is a time scale (the rate's Gamma has rate
    alpha per unit of time), the other parameters have no unit."""
    scale = clv.time_unit_days(current["time_unit"]) / clv.time_unit_days(unit)
    return btyd.BetaGeo(current["r"], current["alpha"] * scale, current["a"], current["b"])


@dataclass(frozen=True)
class FittedModel:
    record: dict[str, object]      # the row of ops.clv_models
    holdout: pd.DataFrame          # the rows of ops.clv_holdout
    calibration_end: date


def fit_model(daily: DataFrame, models: DataFrame, as_of: date, fitted_at: datetime, data_version: int,
              conf: ClvConfig) -> FittedModel:
    """Fit BG/NBD + Gamma-Gamma up to the date, validate a calibration fit on the holdout before it, and
    decide on promotion against the model in force before the date (also on a rerun of the date)."""
    value = clv.ValueSettings.from_conf(conf)
    unit_days = clv.time_unit_days(value.unit)
    # Validation: fit up to the calibration end, predict the holdout that follows.
    calibration_end = as_of - timedelta(days=conf.holdout_days)
    calibration = clv.customer_summary(daily, calibration_end, value.unit).localCheckpoint()
    points = clv.fit_points(calibration)
    validation = clv.fit_models(points)
    actual = clv.holdout_purchases(daily, calibration_end, as_of).localCheckpoint()
    units = conf.holdout_days / unit_days
    predictions = clv.holdout_predictions(calibration, actual, validation.purchases, units, points.purchases)
    holdout_table, mae, correlation = clv.holdout_report(predictions)
    # The model in force predicts the same window from the same calibration data.
    current = model_in_force(models, as_of - timedelta(days=1))
    current_mae = None if current is None else clv.holdout_mae(
        clv.holdout_predictions(calibration, actual, in_unit(current, value.unit), units, points.purchases))

    fitted = clv.fit_models(clv.fit_points(clv.customer_summary(daily, as_of, value.unit)))
    # Six significant digits: Spark may sum a customer's order values in another order on a rerun.
    rounded = {k: float(f"{v:.6g}") for k, v in {**asdict(fitted.purchases), **asdict(fitted.spend)}.items()}
    fingerprint = json.dumps([rounded, value.unit, as_of.isoformat()], sort_keys=True, default=str)
    model_version = f"clv-{as_of:%Y%m%d}-{hashlib.sha256(fingerprint.encode()).hexdigest()[:8]}"
    promoted, decision = promotion(mae, current, current_mae, conf.max_holdout_mae_increase)
    bg, gg = fitted.purchases, fitted.spend
    record = {
        "model_version": model_version, "as_of_date": as_of, "fitted_at": fitted_at,
        "time_unit": value.unit, "calibration_end": calibration_end, "holdout_end": as_of,
        "data_version": data_version, "r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b,
        "p": gg.p, "q": gg.q, "gamma": gg.gamma,
        "bgnbd_log_likelihood": fitted.purchases_fit.log_likelihood,
        "gamma_gamma_log_likelihood": fitted.spend_fit.log_likelihood,
        "customers": fitted.purchases_fit.customers, "distinct_points": fitted.purchases_fit.distinct_points,
        "repeat_customers": fitted.spend_fit.customers,
        "fit_seconds": fitted.purchases_fit.seconds + fitted.spend_fit.seconds,
        "holdout_mae": mae, "holdout_correlation": correlation, "promoted": promoted, "decision": decision,
    }
    holdout_table.insert(0, "model_version", model_version)
    return FittedModel(record, holdout_table, calibration_end)
