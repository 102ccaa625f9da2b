"""Customer lifetime value from transactions: sufficient statistics in Spark, BTYD fits, scores.

Spark reduces transactions to one row per customer (frequency, recency, T, mean repeat
value), then to the distinct points the likelihoods need, with counts; only those few
rows reach the driver, where `jobs.value.btyd` fits the models. Scoring runs back in Spark, as a
vectorised pandas function over customer batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.platform.settings import ClvConfig
from jobs.value import btyd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TIME_UNITS = {"day": 1.0, "week": 7.0}


def time_unit_days(unit: str) -> float:
    if unit not in TIME_UNITS:
        raise ValueError(f"time unit must be one of {sorted(TIME_UNITS)}, not {unit!r}")
    return TIME_UNITS[unit]


# Sums of amounts depend on the order Spark adds them in, which varies between runs; rounded far below a
# cent, the fit's inputs are the same on every run, and so are the fitted parameters and model version.
MONEY_DECIMALS = 6


def daily_transactions(transactions: DataFrame) -> DataFrame:
    """(customer_id, txn_date, value): several orders of a customer on one day are one transaction."""
    return transactions.groupBy("customer_id", F.to_date("ts").alias("txn_date")).agg(
        F.round(F.sum("amount"), MONEY_DECIMALS).alias("value"))


def customer_summary(daily: DataFrame, calibration_end: date, unit: str) -> DataFrame:
    """Per customer with a transaction up to `calibration_end` (inclusive): frequency (repeat
    transactions), recency and T from the first transaction in the time unit (days / 7 for
    weeks, not rounded), the mean value of repeat transactions (0 without one), and the
    value of all transactions in the window."""
    days = time_unit_days(unit)
    window = daily.where(F.col("txn_date") <= F.lit(calibration_end))
    first = window.groupBy("customer_id").agg(F.min("txn_date").alias("first_date"))
    marked = window.join(first, "customer_id").withColumn("repeat", F.col("txn_date") > F.col("first_date"))
    return marked.groupBy("customer_id", "first_date").agg(
        F.count(F.when(F.col("repeat"), 1)).alias("frequency"),
        (F.datediff(F.max("txn_date"), F.col("first_date")) / days).alias("recency"),
        (F.datediff(F.lit(calibration_end), F.col("first_date")) / days).alias("T"),
        F.round(F.coalesce(F.avg(F.when(F.col("repeat"), F.col("value"))), F.lit(0.0)), MONEY_DECIMALS)
        .alias("monetary_value"),
        F.round(F.sum("value"), MONEY_DECIMALS).alias("total_value"),
    ).select("customer_id", "first_date", F.col("frequency").cast("long"), F.col("recency").cast("double"),
             F.col("T").cast("double"), "monetary_value", "total_value")


def holdout_purchases(daily: DataFrame, calibration_end: date, holdout_end: date) -> DataFrame:
    """(customer_id, holdout_frequency): transactions after calibration_end up to holdout_end."""
    inside = (F.col("txn_date") > F.lit(calibration_end)) & (F.col("txn_date") <= F.lit(holdout_end))
    return daily.where(inside).groupBy("customer_id").agg(F.count("*").alias("holdout_frequency"))


@dataclass(frozen=True)
class FittedModels:
    purchases: btyd.BetaGeo
    purchases_fit: btyd.FitReport
    spend: btyd.GammaGamma
    spend_fit: btyd.FitReport

    def parameters(self) -> dict:
        return {"bgnbd": btyd.as_dict(self.purchases, self.purchases_fit),
                "gamma_gamma": btyd.as_dict(self.spend, self.spend_fit)}


def fit_models(summary: DataFrame) -> FittedModels:
    """Fit BG/NBD on the distinct (x, t_x, T) with counts and Gamma-Gamma on repeat buyers' (x, m)."""
    # Sorted so that a rerun sums the likelihood in the same order and lands on the same optimum.
    points = summary.where(F.col("T") > 0).groupBy("frequency", "recency", "T").count() \
        .orderBy("frequency", "recency", "T").toPandas()
    if points.empty:
        raise ValueError("no customer has a first transaction before the calibration end: nothing to fit")
    purchases, purchases_fit = btyd.fit_bgnbd(points["frequency"], points["recency"], points["T"], points["count"])
    spend_points = summary.where((F.col("frequency") > 0) & (F.col("monetary_value") > 0)) \
        .groupBy("frequency", "monetary_value").count().orderBy("frequency", "monetary_value").toPandas()
    if spend_points.empty:
        raise ValueError("no customer has a repeat transaction: Gamma-Gamma cannot be fitted")
    spend, spend_fit = btyd.fit_gamma_gamma(spend_points["frequency"], spend_points["monetary_value"],
                                            spend_points["count"])
    return FittedModels(purchases, purchases_fit, spend, spend_fit)


@dataclass(frozen=True)
class ValueSettings:
    unit: str                       # model time unit: day or week
    horizons_days: tuple[int, ...]  # expected purchases reported over each
    clv_horizon_days: int           # the horizon of current value (CLP)
    period_days: int                # CLP sums discounted profit per period of this length
    annual_discount_rate: float
    margin: float                   # profit share of revenue

    @classmethod
    def from_conf(cls, conf: ClvConfig) -> ValueSettings:
        return cls(conf.time_unit, conf.horizons_days, conf.clv_horizon_days, conf.period_days,
                   conf.annual_discount_rate, conf.margin)


def score_frame(summary: pd.DataFrame, bg: btyd.BetaGeo, gg: btyd.GammaGamma, value: ValueSettings) -> pd.DataFrame:
    """Per-customer predictions for a pandas batch of `customer_summary` rows."""
    days = time_unit_days(value.unit)
    x, t_x, T = (summary[c].to_numpy(dtype="float64") for c in ("frequency", "recency", "T"))
    out = pd.DataFrame({"customer_id": summary["customer_id"]})
    out["p_alive"] = bg.p_alive(x, t_x, T)
    for h in value.horizons_days:
        out[f"expected_purchases_{h}d"] = bg.expected_purchases(h / days, x, t_x, T)
    spend = gg.expected_spend(x, summary["monetary_value"].to_numpy(dtype="float64"))
    out["expected_spend"] = spend
    # CLP: expected profit per period, discounted to today (Fader-Hardie "discounted expected transactions").
    periods = np.arange(1, int(np.ceil(value.clv_horizon_days / value.period_days)) + 1)
    ends = np.minimum(periods * value.period_days, value.clv_horizon_days)
    cumulative = np.column_stack([np.zeros_like(x)] + [bg.expected_purchases(e / days, x, t_x, T) for e in ends])
    per_period = np.diff(cumulative, axis=1)
    discount = (1 + value.annual_discount_rate) ** (-ends / 365.0)
    out["expected_purchases"] = cumulative[:, -1]
    out["current_value"] = (per_period * discount).sum(axis=1) * spend * value.margin
    return out


def score_schema(value: ValueSettings) -> str:
    horizons = "".join(f", expected_purchases_{h}d double" for h in value.horizons_days)
    return (f"customer_id string, p_alive double{horizons}, expected_spend double, expected_purchases double, "
            "current_value double")


def score(summary: DataFrame, bg: btyd.BetaGeo, gg: btyd.GammaGamma, value: ValueSettings) -> DataFrame:
    """Predictions for every customer of `summary`, computed in Spark over pandas batches."""
    columns = ["customer_id", "frequency", "recency", "T", "monetary_value"]
    scored = summary.select(*columns).mapInPandas(
        lambda batches: (score_frame(b, bg, gg, value) for b in batches), score_schema(value))
    return summary.join(scored, "customer_id")


def holdout_predictions(calibration: DataFrame, actual: DataFrame, bg: btyd.BetaGeo, holdout_units: float) -> DataFrame:
    """(customer_id, frequency, predicted, actual): holdout purchases of every calibration customer."""
    def predict(batches):
        for b in batches:
            x, t_x, T = (b[c].to_numpy(dtype="float64") for c in ("frequency", "recency", "T"))
            yield pd.DataFrame({"customer_id": b["customer_id"], "predicted": bg.expected_purchases(
                holdout_units, x, t_x, T)})

    predicted = calibration.select("customer_id", "frequency", "recency", "T").mapInPandas(
        predict, "customer_id string, predicted double")
    return calibration.select("customer_id", "frequency").join(predicted, "customer_id").join(
        actual, "customer_id", "left").select(
        "customer_id", "frequency", "predicted",
        F.coalesce(F.col("holdout_frequency"), F.lit(0)).cast("double").alias("actual"))


def holdout_report(predictions: DataFrame, max_bucket: int = 7) -> tuple[pd.DataFrame, float, float | None]:
    """Mean predicted vs actual holdout purchases by calibration frequency (capped), the per-customer
    MAE and the correlation of predicted and actual."""
    bucket = F.least(F.col("frequency"), F.lit(max_bucket)).cast("int")
    table = predictions.groupBy(bucket.alias("frequency_bucket")).agg(
        F.count("*").alias("customers"), F.avg("actual").alias("actual_purchases"),
        F.avg("predicted").alias("predicted_purchases")).orderBy("frequency_bucket").toPandas()
    stats = predictions.agg(F.avg(F.abs(F.col("predicted") - F.col("actual"))).alias("mae"),
                            F.corr("predicted", "actual").alias("corr")).first()
    return table, float(stats["mae"]), None if stats["corr"] is None else float(stats["corr"])


def holdout_figure(table: pd.DataFrame, title: str) -> Figure:
    """Calibration plot: mean predicted and actual holdout purchases by calibration frequency."""
    from matplotlib.figure import Figure

    # A Figure without pyplot: no global state, no display; PNGs are rendered by Agg.
    fig = Figure(figsize=(7, 4.5), layout="tight")
    ax = fig.add_subplot()
    labels = [f"{b}+" if b == table["frequency_bucket"].max() else str(b) for b in table["frequency_bucket"]]
    ax.plot(labels, table["actual_purchases"], "o-", label="actual")
    ax.plot(labels, table["predicted_purchases"], "s--", label="predicted (BG/NBD)")
    ax.set_xlabel("repeat purchases in the calibration period")
    ax.set_ylabel("mean purchases in the holdout period")
    ax.set_title(title)
    ax.legend()
    return fig


def plot_holdout(table: pd.DataFrame, title: str, path) -> None:
    """The calibration plot of `holdout_figure`, saved as a PNG at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    holdout_figure(table, title).savefig(path, dpi=100)


class TransactionsError(ValueError):
    """A transactions file that cannot be modelled as given; the message says what to fix."""


def read_transactions(spark, path, customer_column: str = "customer_id", date_column: str | None = None,
                      amount_column: str = "amount") -> DataFrame:
    """(customer_id, ts, amount) from a CSV (with header) or Parquet file (timestamps in any unit);
    `date_column` defaults to order_ts, else order_date. Missing columns, unparseable dates and negative
    amounts are errors."""
    import tempfile
    from pathlib import Path

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="cdp-clv-") as scratch:
        if path.suffix.lower() == ".csv":
            raw = spark.read.option("header", True).csv(str(path))
        elif path.suffix.lower() == ".parquet" or path.is_dir():
            raw = spark.read.parquet(str(microsecond_parquet(path, Path(scratch))))
        else:
            raise TransactionsError(f"{path}: expected a .csv file with a header, or Parquet")
        typed = _typed_transactions(raw, path, customer_column, date_column, amount_column)  # materialised
    return typed


def microsecond_parquet(path, scratch):
    """`path`, or a copy of it in `scratch` with microsecond timestamps where it has nanosecond ones
    (pandas' default `to_parquet` writes those, and Spark cannot read them), converted batch by batch."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    dataset = ds.dataset(str(path), format="parquet")
    schema = pa.schema([f.with_type(pa.timestamp("us", f.type.tz))
                        if pa.types.is_timestamp(f.type) and f.type.unit == "ns" else f for f in dataset.schema])
    if schema.equals(dataset.schema):
        return path
    copy = scratch / "transactions.parquet"
    with pq.ParquetWriter(str(copy), schema) as writer:
        for batch in dataset.to_batches():
            writer.write_table(pa.Table.from_batches([batch]).cast(schema, safe=False))  # sub-µs dropped
    return copy


def _typed_transactions(raw: DataFrame, path, customer_column: str, date_column: str | None,
                        amount_column: str) -> DataFrame:
    date_column = date_column or next((c for c in ("order_ts", "order_date") if c in raw.columns), "order_ts")
    missing = [c for c in (customer_column, date_column, amount_column) if c not in raw.columns]
    if missing:
        raise TransactionsError(f"{path}: column(s) {missing} not found (columns: {raw.columns}); "
                                "name yours with --customer-column/--date-column/--amount-column")
    text = F.col(date_column).cast("string")
    ts = F.coalesce(F.try_to_timestamp(text), F.try_to_timestamp(text, F.lit("yyyy-MM-dd")))
    typed = raw.select(F.col(customer_column).cast("string").alias("customer_id"), ts.alias("ts"),
                       F.col(amount_column).cast("string").alias("_amount_text"),
                       F.col(amount_column).cast("double").alias("amount"), text.alias("_date_text")).localCheckpoint()
    problems = typed.agg(
        F.count(F.when(F.col("customer_id").isNull(), 1)).alias("no_customer"),
        F.count(F.when(F.col("ts").isNull(), 1)).alias("bad_dates"),
        F.first(F.when(F.col("ts").isNull(), F.col("_date_text")), ignorenulls=True).alias("bad_date_example"),
        F.count(F.when(F.col("amount").isNull(), 1)).alias("bad_amounts"),
        F.count(F.when(F.col("amount") < 0, 1)).alias("negative_amounts")).first()
    errors = []
    if problems["no_customer"]:
        errors.append(f"{problems['no_customer']} row(s) without {customer_column}")
    if problems["bad_dates"]:
        errors.append(f"{problems['bad_dates']} unparseable {date_column} value(s), "
                      f"e.g. {problems['bad_date_example']!r}")
    if problems["bad_amounts"]:
        errors.append(f"{problems['bad_amounts']} non-numeric {amount_column} value(s)")
    if problems["negative_amounts"]:
        errors.append(f"{problems['negative_amounts']} negative {amount_column} value(s) (net returns out first)")
    if errors:
        raise TransactionsError(f"{path}: " + "; ".join(errors))
    return typed.select("customer_id", "ts", "amount")


def fit_and_score_file(spark, transactions: DataFrame, calibration_end: date, holdout_end: date | None,
                       value: ValueSettings, out) -> dict:
    """`cdp clv`: fit on transactions up to the calibration end, score, validate on the holdout if
    given; write model.json, customers/ (Parquet) and holdout.csv + holdout.png under `out`."""
    import json
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    daily = daily_transactions(transactions).localCheckpoint()
    summary = customer_summary(daily, calibration_end, value.unit).localCheckpoint()
    models = fit_models(summary)
    score(summary, models.purchases, models.spend, value).withColumn("churn_risk", 1 - F.col("p_alive")) \
        .write.mode("overwrite").parquet(str(out / "customers"))
    parameters = models.parameters()
    model = {
        "time_unit": value.unit, "calibration_end": calibration_end.isoformat(),
        "bgnbd": {k: parameters["bgnbd"][k] for k in ("r", "alpha", "a", "b")}
        | {"log_likelihood": models.purchases_fit.log_likelihood, "customers": models.purchases_fit.customers,
           "distinct_points": models.purchases_fit.distinct_points, "method": models.purchases_fit.method},
        "gamma_gamma": {k: parameters["gamma_gamma"][k] for k in ("p", "q", "gamma")}
        | {"log_likelihood": models.spend_fit.log_likelihood, "customers": models.spend_fit.customers},
    }
    if holdout_end is not None:
        units = (holdout_end - calibration_end).days / time_unit_days(value.unit)
        predictions = holdout_predictions(summary, holdout_purchases(daily, calibration_end, holdout_end),
                                          models.purchases, units)
        table, mae, correlation = holdout_report(predictions)
        table.to_csv(out / "holdout.csv", index=False)
        plot_holdout(table, f"holdout {calibration_end} to {holdout_end}", out / "holdout.png")
        model["holdout"] = {"end": holdout_end.isoformat(), "mae": mae, "correlation": correlation}
    (out / "model.json").write_text(json.dumps(model, indent=2) + "\n")
    return model
