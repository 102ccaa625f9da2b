"""The value stage (daily: score with the model in force) and the refit stage (weekly: fit, validate,
promote or refuse). Both stage their rows, gate them, then publish."""

from __future__ import annotations

import logging
from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.identity.graph import attach_customer, customer_transactions
from jobs.platform.context import RunContext
from jobs.platform.tables import sql_literal, table_version
from jobs.value import btyd, churn, clv, intent
from jobs.value.customer_value import PotentialSettings, customer_values
from jobs.value.registry import FittedModel, fit_model, model_in_force
from schemas import gold, silver
from schemas.ops import CHURN_MODELS, CLV_HOLDOUT, CLV_MODELS, INTENT_MODELS

log = logging.getLogger(__name__)


def daily_transactions(ctx: RunContext) -> DataFrame:
    """One transaction per resolved customer and day, for the CLV models."""
    graph = ctx.read(gold.IDENTITY_GRAPH)
    return clv.daily_transactions(customer_transactions(graph, ctx.silver_sources())).localCheckpoint()


def stage_fit(ctx: RunContext, daily: DataFrame) -> tuple[FittedModel, DataFrame]:
    """Fit a model as of the date and stage its registry and holdout rows; return it and its staged row."""
    spark = ctx.spark
    data_version = table_version(spark, silver.ORDERS)
    fitted = fit_model(daily, ctx.read(CLV_MODELS), ctx.as_of, ctx.started_at, int(data_version),
                       ctx.settings.clv)
    if not fitted.record["promoted"]:
        log.warning("clv fit: %s", fitted.record["decision"])
    version = f"model_version = {sql_literal(fitted.record['model_version'])}"
    row = ctx.stage_slice(spark.createDataFrame([tuple(fitted.record[c] for c in CLV_MODELS.column_names)],
                                                CLV_MODELS.struct), CLV_MODELS, version)
    ctx.stage_slice(spark.createDataFrame(fitted.holdout[CLV_HOLDOUT.column_names], CLV_HOLDOUT.struct),
                    CLV_HOLDOUT, version)
    return fitted, row


def plot_fit(ctx: RunContext, fitted: FittedModel) -> None:
    version = fitted.record["model_version"]
    clv.plot_holdout(fitted.holdout, f"{version}: holdout {fitted.calibration_end} to {ctx.as_of}",
                     ctx.settings.paths.warehouse.parent / "reports" / "clv" / f"{version}.png")


def run_refit(ctx: RunContext) -> dict[str, object]:
    """The model-refit DAG's stage: a new CLV model as of the date, promoted only if it validates."""
    fitted, row = stage_fit(ctx, daily_transactions(ctx))
    ctx.gate({CLV_MODELS: row})
    ctx.publish(last=(CLV_MODELS,))    # the registry row vouches for its holdout rows
    plot_fit(ctx, fitted)
    return {k: fitted.record[k] for k in ("model_version", "promoted", "decision", "holdout_mae", "customers")}


def run_value(ctx: RunContext) -> dict[str, object]:
    """Score every buying customer with the CLV model in force on the date (fitting the first one when
    there is none), train and evaluate the churn classifier, and stage, gate and publish the slices."""
    spark, conf = ctx.spark, ctx.settings.clv
    value = clv.ValueSettings.from_conf(conf)
    tables, graph = ctx.silver_sources(), ctx.read(gold.IDENTITY_GRAPH)
    daily = daily_transactions(ctx)
    models = ctx.read(CLV_MODELS)
    model, fitted = model_in_force(models, ctx.as_of), None
    if model is None:
        log.info("value: no CLV model in force on %s: fitting the first", ctx.as_of)
        fitted, model_row = stage_fit(ctx, daily)
        model = fitted.record            # with nothing in force, a first fit is always promoted
    else:
        model_row = models.where(F.col("model_version") == model["model_version"])
    bg = btyd.BetaGeo(model["r"], model["alpha"], model["a"], model["b"])
    gg = btyd.GammaGamma(model["p"], model["q"], model["gamma"])

    sources = churn.ChurnSources(daily, *[attach_customer(tables[name], name, graph).where(
        F.col("customer_id").isNotNull()) for name in ("events", "campaign_events", "tickets", "surveys")])
    churn_model = churn.train_churn_model(sources, ctx.as_of, conf.churn_window_days,
                                          max_iterations=conf.churn_max_iterations, max_depth=conf.churn_max_depth)
    log.info("value: churn classifier AUC %.3f on %d customers (trained on %d)", churn_model.validation_auc,
             churn_model.validation_rows, churn_model.train_rows)
    ctx.stage_slice(spark.createDataFrame([(ctx.as_of, ctx.run_id, churn_model.validation_auc,
                                            churn_model.train_rows, churn_model.validation_rows, ctx.started_at)],
                                          CHURN_MODELS.struct), CHURN_MODELS, ctx.as_of_slice)
    intent_model = intent.train_intent_model(sources, ctx.as_of, conf.intent_window_days, conf.intent_fit_sample)
    log.info("value: purchase intent AUC %.3f, Brier %.4f over %d days", intent_model.validation_auc,
             intent_model.brier_score, intent_model.window_days)
    ctx.stage_slice(spark.createDataFrame(
        [(ctx.as_of, ctx.run_id, intent_model.window_days, intent_model.validation_auc, intent_model.brier_score,
          intent_model.calibration, intent_model.train_rows, intent_model.validation_rows, ctx.started_at)],
        INTENT_MODELS.struct), INTENT_MODELS, ctx.as_of_slice)

    # Both classifiers score today's features: built once.
    today = churn.churn_features(sources, ctx.as_of).localCheckpoint()
    summary = clv.customer_summary(daily, ctx.as_of, value.unit).localCheckpoint()
    scored = clv.score(summary, bg, gg, value).localCheckpoint()
    values = customer_values(scored, ctx.read(gold.CUSTOMER_PROFILE), tables["referrals"], graph,
                             PotentialSettings.from_conf(conf), value) \
        .join(churn.churn_scores(churn_model, today), "customer_id", "left") \
        .join(intent.intent_scores(intent_model, today), "customer_id", "left")
    stamp = [F.lit(ctx.as_of).alias("as_of_date"), F.lit(model["model_version"]).alias("model_version")]
    staged_values = ctx.stage_slice(values.select("*", *stamp), gold.CUSTOMER_VALUE, ctx.as_of_slice)
    forecast = reduce(DataFrame.unionByName, [scored.select(
        "customer_id", F.lit(h).alias("horizon_days"), F.col(f"expected_purchases_{h}d").alias("expected_purchases"),
        (F.col(f"expected_purchases_{h}d") * F.col("expected_spend")).alias("expected_revenue"), *stamp)
        for h in value.horizons_days])
    staged_forecast = ctx.stage_slice(forecast, gold.CUSTOMER_FORECAST, ctx.as_of_slice)
    ctx.gate({gold.CUSTOMER_VALUE: staged_values, gold.CUSTOMER_FORECAST: staged_forecast, CLV_MODELS: model_row})
    ctx.publish(last=(CLV_MODELS,))
    if fitted is not None:
        plot_fit(ctx, fitted)
    return {"model_version": model["model_version"], "model_as_of": model["as_of_date"],
            "holdout_mae": round(model["holdout_mae"], 4), "churn_auc": round(churn_model.validation_auc, 3),
            "intent_auc": round(intent_model.validation_auc, 3),
            "customers": model["customers"], "r": round(bg.r, 4), "alpha": round(bg.alpha, 4),
            "a": round(bg.a, 4), "b": round(bg.b, 4), "p": round(gg.p, 4), "q": round(gg.q, 4),
            "gamma": round(gg.gamma, 4)}
