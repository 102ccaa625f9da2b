"""Customer lifetime value from transactions: sufficient statistics in Spark, BTYD fits, scores.

Spark reduces transactions to one row per customer (frequency, recency, T, mean repeat
value) in one aggregation, then to the distinct points the likelihoods need, with counts; only
those rows reach the driver (through Arrow), where `jobs.value.btyd` fits the models. The costly
part of a purchase prediction (a hypergeometric function) depends on (frequency, T) alone, so it
is tabled once per distinct pair in numpy and broadcast back; P(alive), the expected spend and the
current value are column expressions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import IntegralType

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
    """(customer_id, txn_date, value): several orders of a customer on one day are one transaction.
    Partitioned by customer, so that a per-customer aggregation after it needs no second shuffle, and sorted
    by customer and day within each partition: with `spark.sql.execution.replaceHashWithSortAgg` (on in
    conf/base.yaml) the per-day sums are then added up as the rows stream past, not in a hash table of
    every (customer, day) of the partition (at 10M customers that halved the aggregation's CPU)."""
    days = transactions.select("customer_id", F.to_date("ts").alias("txn_date"), "amount")
    return days.repartition("customer_id").sortWithinPartitions("customer_id", "txn_date") \
        .groupBy("customer_id", "txn_date").agg(F.round(F.sum("amount"), MONEY_DECIMALS).alias("value"))


def customer_summary(daily: DataFrame, calibration_end: date, unit: str) -> DataFrame:
    """Per customer with a transaction up to `calibration_end` (inclusive): frequency (repeat
    transactions), recency and T from the first transaction in the time unit (days / 7 for
    weeks, not rounded), the mean value of repeat transactions (0 without one), and the
    value of all transactions in the window."""
    days = time_unit_days(unit)
    # One aggregation: the repeat transactions' value is the total less the first day's.
    per_customer = daily.where(F.col("txn_date") <= F.lit(calibration_end)).groupBy("customer_id").agg(
        F.min("txn_date").alias("first_date"), F.max("txn_date").alias("last_date"),
        (F.count("*") - 1).alias("frequency"), F.sum("value").alias("total"),
        F.min_by("value", "txn_date").alias("first_value"))
    repeat_mean = F.when(F.col("frequency") > 0, (F.col("total") - F.col("first_value")) / F.col("frequency"))
    return per_customer.select(
        "customer_id", "first_date", F.col("frequency").cast("long"),
        (F.datediff("last_date", "first_date") / days).cast("double").alias("recency"),
        (F.datediff(F.lit(calibration_end), F.col("first_date")) / days).cast("double").alias("T"),
        F.round(F.coalesce(repeat_mean, F.lit(0.0)), MONEY_DECIMALS).alias("monetary_value"),
        F.round("total", MONEY_DECIMALS).alias("total_value"))


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


PURCHASE_KEYS = ["frequency", "recency", "T"]
SPEND_KEYS = ["frequency", "monetary_value"]


def purchase_points(summary: DataFrame) -> pd.DataFrame:
    """The distinct (frequency, recency, T) of `summary` with their customer counts: what BG/NBD is fitted
    on and scored at. Sorted, so that a rerun sums the likelihood in the same order and lands on the same
    optimum."""
    return summary.groupBy(*PURCHASE_KEYS).count().toPandas().sort_values(PURCHASE_KEYS, ignore_index=True)


@dataclass(frozen=True)
class FitPoints:
    purchases: pd.DataFrame     # distinct (frequency, recency, T) with counts (`purchase_points`)
    spend: pd.DataFrame         # repeat buyers' distinct (frequency, monetary_value) with counts


def fit_points(summary: DataFrame) -> FitPoints:
    """What both models are fitted on, sorted. (Two aggregations: grouping sets in one job were slower, as
    they double the rows they shuffle, and so were the two side by side.)"""
    repeat = summary.where((F.col("frequency") > 0) & (F.col("monetary_value") > 0))
    return FitPoints(purchase_points(summary),
                     repeat.groupBy(*SPEND_KEYS).count().toPandas().sort_values(SPEND_KEYS, ignore_index=True))


def fit_models(points: FitPoints) -> FittedModels:
    """Fit BG/NBD on the distinct (x, t_x, T) with counts and Gamma-Gamma on repeat buyers' distinct (x, m)
    (`fit_points`)."""
    purchase = points.purchases[points.purchases["T"] > 0]
    if purchase.empty:
        raise ValueError("no customer has a first transaction before the calibration end: nothing to fit")
    purchases, purchases_fit = btyd.fit_bgnbd(purchase["frequency"], purchase["recency"], purchase["T"],
                                              purchase["count"])
    if points.spend.empty:
        raise ValueError("no customer has a repeat transaction: Gamma-Gamma cannot be fitted")
    spend, spend_fit = btyd.fit_gamma_gamma(points.spend["frequency"], points.spend["monetary_value"],
                                            points.spend["count"])
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

    def clp_periods(self) -> tuple[np.ndarray, np.ndarray]:
        """CLP's periods: the end of each (days from today) and its discount factor. Current value is the
        expected profit per period, discounted to today (Fader-Hardie "discounted expected transactions")."""
        periods = np.arange(1, int(np.ceil(self.clv_horizon_days / self.period_days)) + 1)
        ends = np.minimum(periods * self.period_days, self.clv_horizon_days)
        return ends, (1 + self.annual_discount_rate) ** (-ends / 365.0)


def score_points(points: pd.DataFrame, bg: btyd.BetaGeo, value: ValueSettings) -> pd.DataFrame:
    """Purchase predictions at each (frequency, recency, T) of `points`: P(alive), expected purchases over
    each horizon and the CLV horizon, and `discounted_purchases` (expected purchases per period of the
    CLV horizon, discounted to today: current value is that times spend times margin)."""
    days = time_unit_days(value.unit)
    x, t_x, T = (points[c].to_numpy(dtype="float64") for c in ("frequency", "recency", "T"))
    out = points[["frequency", "recency", "T"]].copy()
    out["p_alive"] = bg.p_alive(x, t_x, T)
    for h in value.horizons_days:
        out[f"expected_purchases_{h}d"] = bg.expected_purchases(h / days, x, t_x, T)
    ends, discount = value.clp_periods()
    cumulative = np.column_stack([np.zeros_like(x)] + [bg.expected_purchases(e / days, x, t_x, T) for e in ends])
    out["expected_purchases"] = cumulative[:, -1]
    out["discounted_purchases"] = (np.diff(cumulative, axis=1) * discount).sum(axis=1)
    return out


def frequency_ages(summary: DataFrame, points: pd.DataFrame | None = None) -> pd.DataFrame:
    """The distinct (frequency, T) of `summary`: from its `purchase_points` when they are at hand, else by
    one small aggregation (not the distinct (frequency, recency, T), which are many more)."""
    if points is None:
        return summary.select("frequency", "T").distinct().toPandas()
    return points[["frequency", "T"]].drop_duplicates(ignore_index=True)


def purchase_tables(pairs: pd.DataFrame, bg: btyd.BetaGeo, value: ValueSettings) -> pd.DataFrame:
    """Per distinct (frequency, T) (`frequency_ages`), the purchases expected of a customer still alive
    (`BetaGeo.purchases_if_alive`): over each horizon (`if_alive_<h>d`), over the CLV horizon
    (`if_alive`), and per period of the CLV horizon discounted to today (`discounted_if_alive`).
    Times P(alive) they are the customer's predictions; P(alive) needs recency too, and is a column
    expression (`p_alive`), so the hypergeometric functions run once per pair, not per customer."""
    days = time_unit_days(value.unit)
    out = pairs[["frequency", "T"]].copy()
    x, T = out["frequency"].to_numpy(dtype="float64"), out["T"].to_numpy(dtype="float64")
    for h in value.horizons_days:
        out[f"if_alive_{h}d"] = bg.purchases_if_alive(h / days, x, T)
    ends, discount = value.clp_periods()
    cumulative = np.column_stack([np.zeros_like(x)] + [bg.purchases_if_alive(e / days, x, T) for e in ends])
    out["if_alive"] = cumulative[:, -1]
    out["discounted_if_alive"] = (np.diff(cumulative, axis=1) * discount).sum(axis=1)
    return out


def p_alive(bg: btyd.BetaGeo, frequency: Column, recency: Column, T: Column) -> Column:
    """`btyd.BetaGeo.p_alive` as a Spark column: 1 / (1 + odds of having dropped out)."""
    log_odds_dead = (F.lit(float(np.log(bg.a))) - F.log(F.lit(bg.b) + frequency - 1)
                     + (F.lit(bg.r) + frequency) * (F.log(F.lit(bg.alpha) + T) - F.log(F.lit(bg.alpha) + recency)))
    return F.when(frequency > 0, 1 / (1 + F.exp(log_odds_dead))).otherwise(F.lit(1.0))


def expected_spend(gg: btyd.GammaGamma, frequency: Column, mean_value: Column) -> Column:
    """`btyd.GammaGamma.expected_spend` as a Spark column."""
    population = gg.p * gg.gamma / (gg.q - 1)
    weight = gg.p * frequency / (gg.p * frequency + gg.q - 1)
    return (1 - weight) * F.lit(population) + weight * F.when(frequency > 0, mean_value).otherwise(0.0)


def score_frame(summary: pd.DataFrame, bg: btyd.BetaGeo, gg: btyd.GammaGamma, value: ValueSettings) -> pd.DataFrame:
    """Per-customer predictions for a pandas frame of `customer_summary` rows, point by point in numpy:
    what `score` gives in Spark, computed the plain way."""
    out = summary[["customer_id"]].join(score_points(summary, bg, value).drop(columns=["frequency", "recency", "T"]))
    out["expected_spend"] = gg.expected_spend(summary["frequency"].to_numpy(dtype="float64"),
                                              summary["monetary_value"].to_numpy(dtype="float64"))
    out["current_value"] = out.pop("discounted_purchases") * out["expected_spend"] * value.margin
    return out


def score(summary: DataFrame, bg: btyd.BetaGeo, gg: btyd.GammaGamma, value: ValueSettings,
          points: pd.DataFrame | None = None) -> DataFrame:
    """`summary` with its predictions: the purchases of a customer alive tabled once per distinct
    (frequency, T) (`purchase_tables`; the pairs from `points`, the `purchase_points` of `summary`, when
    given) and broadcast back; P(alive), spend and current value as column expressions."""
    tables = summary.sparkSession.createDataFrame(purchase_tables(frequency_ages(summary, points), bg, value))
    alive = F.col("p_alive")
    return summary.join(F.broadcast(tables), ["frequency", "T"]) \
        .withColumn("p_alive", p_alive(bg, F.col("frequency"), F.col("recency"), F.col("T"))) \
        .select(*summary.columns, "p_alive",
                *[(F.col(f"if_alive_{h}d") * alive).alias(f"expected_purchases_{h}d") for h in value.horizons_days],
                (F.col("if_alive") * alive).alias("expected_purchases"),
                expected_spend(gg, F.col("frequency"), F.col("monetary_value")).alias("expected_spend"),
                (F.col("discounted_if_alive") * alive).alias("discounted_purchases")) \
        .withColumn("current_value", F.col("discounted_purchases") * F.col("expected_spend") * F.lit(value.margin)) \
        .drop("discounted_purchases")


def holdout_predictions(calibration: DataFrame, actual: DataFrame, bg: btyd.BetaGeo, holdout_units: float,
                        points: pd.DataFrame | None = None) -> DataFrame:
    """(customer_id, frequency, predicted, actual): holdout purchases of every calibration customer, the
    purchases if alive tabled once per distinct (frequency, T) (`frequency_ages`, from `points`, the
    `purchase_points` of `calibration`, when given) and times P(alive)."""
    table = frequency_ages(calibration, points)
    table["if_alive"] = bg.purchases_if_alive(holdout_units, table["frequency"].to_numpy(dtype="float64"),
                                              table["T"].to_numpy(dtype="float64"))
    predicted = F.col("if_alive") * p_alive(bg, F.col("frequency"), F.col("recency"), F.col("T"))
    return calibration.join(F.broadcast(calibration.sparkSession.createDataFrame(table)), ["frequency", "T"]) \
        .join(actual, "customer_id", "left").select(
        "customer_id", "frequency", predicted.alias("predicted"),
        F.coalesce(F.col("holdout_frequency"), F.lit(0)).cast("double").alias("actual"))


def _mean_absolute_error() -> Column:
    return F.avg(F.abs(F.col("predicted") - F.col("actual")))


def holdout_mae(predictions: DataFrame) -> float:
    """The mean absolute error of `holdout_predictions` per customer."""
    return float(predictions.agg(_mean_absolute_error()).first()[0])


def holdout_report(predictions: DataFrame, max_bucket: int = 7) -> tuple[pd.DataFrame, float, float | None]:
    """Mean predicted vs actual holdout purchases by calibration frequency (capped), the per-customer
    MAE and the correlation of predicted and actual."""
    bucket = F.least(F.col("frequency"), F.lit(max_bucket)).cast("int")
    table = predictions.groupBy(bucket.alias("frequency_bucket")).agg(
        F.count("*").alias("customers"), F.avg("actual").alias("actual_purchases"),
        F.avg("predicted").alias("predicted_purchases")).orderBy("frequency_bucket").toPandas()
    stats = predictions.agg(_mean_absolute_error().alias("mae"),
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
    """(customer_id, ts, amount) from a CSV (with header) or Parquet file (timestamps in any unit; integer
    customer ids kept as integers, any other as text);
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
    # Integer ids stay integers (they come back as they were, and group faster than their text); others are text.
    integral = isinstance(raw.schema[customer_column].dataType, IntegralType)
    customer = F.col(customer_column) if integral else F.col(customer_column).cast("string")
    typed = raw.select(customer.alias("customer_id"), ts.alias("ts"),
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
    daily = daily_transactions(transactions)
    daily = daily if holdout_end is None else daily.localCheckpoint()   # read again for the holdout
    summary = customer_summary(daily, calibration_end, value.unit).localCheckpoint()
    points = fit_points(summary)
    models = fit_models(points)
    score(summary, models.purchases, models.spend, value, points.purchases) \
        .withColumn("churn_risk", 1 - F.col("p_alive")).write.mode("overwrite").parquet(str(out / "customers"))
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
                                          models.purchases, units, points.purchases)
        table, mae, correlation = holdout_report(predictions)
        table.to_csv(out / "holdout.csv", index=False)
        plot_holdout(table, f"holdout {calibration_end} to {holdout_end}", out / "holdout.png")
        model["holdout"] = {"end": holdout_end.isoformat(), "mae": mae, "correlation": correlation}
    (out / "model.json").write_text(json.dumps(model, indent=2) + "\n")
    return model
