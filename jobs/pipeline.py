"""Stage entry points: read config and inputs, call the pure transforms, write, gate.

Each stage is keyed by the run's logical date (`as_of`) and is safe to rerun. Airflow tasks
and the `cdp run` command call these and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property, reduce

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import (
    baskets,
    btyd,
    churn,
    cleanse,
    clv,
    identity,
    kpis,
    lifecycle,
    matching,
    pii,
    quality,
    segments,
    sentiment,
)
from jobs.config import Settings
from jobs.ingest import BatchResult, ingest_source
from jobs.profile import Survivorship, build_customer_profile
from jobs.runtime import spark_session
from jobs.stages import IDENTITY_SOURCES, STAGE_TABLES
from jobs.tables import ensure_table, merge_by_key, overwrite, replace_slice, sql_literal
from schemas import Table, gold, silver
from schemas.bronze import TABLES as BRONZE
from schemas.ops import (
    CHURN_MODELS,
    CLV_HOLDOUT,
    CLV_MODELS,
    INGEST_ACCOUNTING,
    PIPELINE_RUNS,
    RESOLUTION_CHECKS,
    RESOLUTION_RUNS,
    ROW_COUNTS,
)
from schemas.raw import SOURCES

log = logging.getLogger(__name__)

PIPELINE_SOURCES = tuple(SOURCES)


@dataclass(frozen=True)
class RunContext:
    settings: Settings
    as_of: date
    run_id: str
    started_at: datetime

    @classmethod
    def create(cls, settings: Settings, as_of: date, run_id: str | None = None) -> RunContext:
        now = datetime.now(UTC).replace(microsecond=0)
        return cls(settings, as_of, run_id or f"manual__{as_of.isoformat()}__{now:%Y%m%dT%H%M%S}", now)

    @cached_property
    def spark(self) -> SparkSession:
        return spark_session(self.settings)

    def gate(self, stage: str, frames: dict[str, DataFrame]) -> list[quality.Outcome]:
        # One Data Docs site per stage: a site is rebuilt from the validations of one gate call.
        docs = self.settings.paths.gx / "data_docs" / stage if self.settings.section("quality")["build_data_docs"] \
            else None
        return quality.gate(self.spark, stage, frames, self.settings.root / "expectations", self.run_id,
                            self.started_at, docs)


def accounting_frame(accounting: DataFrame, history: DataFrame) -> DataFrame:
    """Accounting per source over the run's batches, with the checks the ingest gate bounds.

    Per source rather than per file, so that a tiny daily file with one bad row does not stop
    the run; `row_ratio` compares the rows read with the source's previous batch.
    """
    sums = [F.sum(c).alias(c) for c in ROW_COUNTS]
    run = accounting.groupBy("source").agg(F.count("*").alias("files"), F.min("batch_id").alias("first_batch"),
                                           *sums)
    per_batch = history.groupBy("source", "batch_id").agg(F.sum("rows_read").alias("prev_rows_read"))
    previous = (
        run.select("source", "first_batch").join(per_batch, "source")
        .where(F.col("batch_id") < F.col("first_batch"))
        .groupBy("source").agg(F.max_by("prev_rows_read", "batch_id").alias("prev_rows_read"))
    )
    return run.join(previous, "source", "left").select(
        "*",
        (F.col("rows_quarantined") / F.greatest("rows_read", F.lit(1))).alias("quarantine_share"),
        (F.col("rows_read") / F.col("prev_rows_read")).alias("row_ratio"),
        (F.col("rows_read") == F.col("rows_loaded") + F.col("rows_quarantined") + F.col("rows_deduplicated"))
        .alias("rows_add_up"),
    )


def run_ingest(ctx: RunContext) -> list[BatchResult]:
    """Land every pending batch up to the logical date in bronze, then gate what was landed."""
    spark = ctx.spark
    results: list[BatchResult] = []
    for name in PIPELINE_SOURCES:
        results += ingest_source(spark, str(ctx.settings.paths.landing), SOURCES[name], ctx.as_of.isoformat(),
                                 ctx.run_id, ctx.started_at)
    if not results:
        log.info("ingest: no new batches up to %s", ctx.as_of)
        return results
    history = spark.table(INGEST_ACCOUNTING.name)
    batches = F.concat_ws("/", "source", "batch_id").isin([f"{r.source}/{r.batch_id}" for r in results])
    frames = {INGEST_ACCOUNTING.name: accounting_frame(history.where(batches), history)}
    for name in sorted({r.source for r in results}):
        ids = [r.batch_id for r in results if r.source == name]
        frames[BRONZE[name].name] = spark.table(BRONZE[name].name).where(F.col("_batch_id").isin(ids))
    ctx.gate("ingest", frames)
    return results


def bronze_as_of(spark: SparkSession, source: str, as_of: date) -> DataFrame:
    return spark.table(BRONZE[source].name).where(F.col("_batch_id") <= F.lit(as_of.isoformat()))


def with_reference(df: DataFrame, key: str, parent: DataFrame, parent_key: str, flag: str) -> DataFrame:
    """Add `flag`: whether `key` exists in `parent` (null where `key` is null), for integrity checks."""
    known = parent.select(F.col(parent_key).alias("_ref")).where(F.col("_ref").isNotNull()).distinct() \
        .withColumn("_found", F.lit(True))
    joined = df.join(known, F.col(key) == F.col("_ref"), "left")
    return joined.withColumn(flag, F.when(F.col(key).isNotNull(), F.coalesce("_found", F.lit(False)))) \
        .drop("_ref", "_found")


def pii_keys(settings: Settings) -> pii.PiiKeys:
    key_dir = settings.section("pii").get("local_key_dir")
    return pii.load_keys(settings.root / key_dir if key_dir else None)


def run_cleanse(ctx: RunContext) -> dict[str, int]:
    """Rebuild silver from bronze as of the logical date (and the PII vault), then gate it."""
    spark, conf = ctx.spark, ctx.settings.section("cleanse")
    patterns, currency = list(conf["test_account_email_patterns"]), conf["reporting_currency"]
    keys = pii_keys(ctx.settings)
    bronze = {name: bronze_as_of(spark, name, ctx.as_of) for name in SOURCES}

    overwrite(cleanse.cleanse_fx_rates(bronze["fx_rates"]), silver.FX_RATES)
    fx = spark.table(silver.FX_RATES.name)
    outputs = {
        silver.CONTACTS: cleanse.cleanse_contacts(bronze["contacts"], conf["default_phone_region"], patterns,
                                                  keys.hmac_key),
        silver.ORDERS: cleanse.cleanse_orders(bronze["orders"], patterns, keys.hmac_key, fx, currency),
        silver.POS_TRANSACTIONS: cleanse.cleanse_pos(
            bronze["pos"], SOURCES["pos"].timezone, cleanse.test_loyalty_numbers(bronze["contacts"], patterns), fx,
            currency),
        silver.EVENTS: cleanse.cleanse_events(bronze["events"], cleanse.test_accounts(bronze["orders"], patterns),
                                              int(conf["session_gap_minutes"])),
        silver.TICKETS: cleanse.cleanse_tickets(bronze["tickets"], patterns, keys.hmac_key),
        silver.SURVEYS: cleanse.cleanse_surveys(bronze["surveys"], patterns, keys.hmac_key),
        silver.CAMPAIGN_EVENTS: cleanse.cleanse_campaign_events(bronze["campaign_events"], patterns, keys.hmac_key),
        silver.MARKETING_SPEND: cleanse.cleanse_marketing_spend(bronze["marketing_spend"], fx, currency),
        silver.REFERRALS: cleanse.cleanse_referrals(bronze["referrals"], patterns, keys.hmac_key),
    }
    for frame in outputs.values():
        frame.persist()  # each is written and also feeds the vault or the order lines
    try:
        for table, frame in outputs.items():
            overwrite(frame, table)
        overwrite(cleanse.order_lines(outputs[silver.ORDERS], bronze["orders"], outputs[silver.POS_TRANSACTIONS],
                                      fx, currency), silver.ORDER_LINES)
        with_email = [outputs[t] for t in (silver.ORDERS, silver.TICKETS, silver.SURVEYS, silver.CAMPAIGN_EVENTS,
                                           silver.REFERRALS)]
        overwrite(cleanse.pii_vault(outputs[silver.CONTACTS], with_email, keys.encryption_key, keys.hmac_key),
                  silver.PII_VAULT)
    finally:
        for frame in outputs.values():
            frame.unpersist()
    ctx.gate("cleanse", silver_gate_frames(spark))
    return {t.name: spark.table(t.name).count() for t in silver.TABLES}


def silver_gate_frames(spark: SparkSession) -> dict[str, DataFrame]:
    """Every silver table, with the reference flags its suite checks for integrity between tables."""
    table = {t: spark.table(t.name) for t in silver.TABLES}
    frames = {t.name: df for t, df in table.items()}
    orders, pos = table[silver.ORDERS], table[silver.POS_TRANSACTIONS]
    transactions = orders.select(F.col("order_id").alias("id")).unionByName(
        pos.select(F.col("transaction_id").alias("id")))
    frames[silver.ORDER_LINES.name] = with_reference(table[silver.ORDER_LINES], "transaction_id", transactions, "id",
                                                     "transaction_found")
    frames[silver.EVENTS.name] = with_reference(table[silver.EVENTS], "order_id", orders, "order_id", "order_found")
    frames[silver.TICKETS.name] = with_reference(table[silver.TICKETS], "account_id", orders, "account_id",
                                                 "account_found")
    frames[silver.REFERRALS.name] = with_reference(table[silver.REFERRALS], "referrer_loyalty_number",
                                                   table[silver.CONTACTS], "loyalty_number", "referrer_found")
    return frames


def silver_by_source(spark: SparkSession) -> dict[str, DataFrame]:
    return {source: spark.table(table.name) for source, table in IDENTITY_SOURCES.items()}


@dataclass(frozen=True)
class Resolution:
    """A resolution computed but not yet published."""

    graph: DataFrame          # rows of gold.identity_graph
    changes: DataFrame        # (change, old_customer_id, new_customer_id, nodes_moved)
    linkage: matching.Linkage
    links_cut: int
    shared_devices: int
    previous_customers: int


def resolve(ctx: RunContext, tables: dict[str, DataFrame], conf: dict) -> Resolution:
    """Match, cluster and assign ids against the published graph; checkpointed, nothing written."""
    spark = ctx.spark
    contacts = matching.contact_match_records(tables["contacts"])
    linkage = matching.link_records(contacts, conf)
    source_graph = identity.identifier_graph(
        contacts, tables["orders"], tables["pos"], tables["tickets"], tables["surveys"], tables["campaign_events"],
        tables["events"], tables["referrals"], int(conf["max_accounts_per_device"]))
    clusters = identity.cluster(source_graph.nodes, source_graph.edges, linkage.links,
                                int(conf["guards"]["max_cluster_size"]))
    previous = spark.table(gold.IDENTITY_GRAPH.name)
    history = spark.table(gold.CUSTOMER_ID_HISTORY.name)
    issued = previous.select("customer_id").unionByName(history.select(F.col("old_customer_id").alias("customer_id"))) \
        .unionByName(history.select(F.col("new_customer_id").alias("customer_id")).where("customer_id IS NOT NULL"))
    assignment = identity.assign_customer_ids(clusters.components, previous, issued, ctx.as_of)
    return Resolution(graph_rows(assignment.graph, previous, ctx).localCheckpoint(),
                      assignment.changes.localCheckpoint(), linkage, clusters.links_cut,
                      source_graph.shared_devices.count(), previous.select("customer_id").distinct().count())


def run_resolve(ctx: RunContext) -> dict[str, object]:
    """Resolve silver records into customers, check the result, then publish the identity graph.

    Nothing is published when a guard breaks: the graph, its history and the run log stay as
    the previous run left them, and the gate's summary names the worst clusters.
    """
    spark, conf = ctx.spark, ctx.settings.section("identity")
    started = time.monotonic()
    for table in (gold.IDENTITY_GRAPH, gold.CUSTOMER_ID_HISTORY, RESOLUTION_RUNS):
        ensure_table(spark, table)
    tables = silver_by_source(spark)
    result = resolve(ctx, tables, conf)
    log.info("resolve: resolved in %.1f s", time.monotonic() - started)

    runs = spark.table(RESOLUTION_RUNS.name).where(F.col("run_id") != ctx.run_id)
    last_run = runs.orderBy(F.col("resolved_at").desc()).limit(1).collect()
    checks = identity.guard_checks(result.graph, tables["contacts"], result.changes, result.previous_customers,
                                   last_run[0]["merged_share"] if last_run else None,
                                   identity.GuardLimits.from_conf(conf["guards"]))
    checks_frame = spark.createDataFrame(
        [(ctx.run_id, name, observed, limit, breach, ctx.started_at) for name, observed, limit, breach in checks],
        RESOLUTION_CHECKS.struct)
    replace_slice(checks_frame, RESOLUTION_CHECKS, f"run_id = {sql_literal(ctx.run_id)}")
    checks_run = spark.table(RESOLUTION_CHECKS.name).where(F.col("run_id") == ctx.run_id)
    ctx.gate("resolve", {RESOLUTION_CHECKS.name: checks_run, gold.IDENTITY_GRAPH.name: result.graph,
                         gold.CUSTOMER_ID_HISTORY.name: id_history_rows(result.changes, ctx)})
    log.info("resolve: checked in %.1f s", time.monotonic() - started)
    return publish_resolution(ctx, result, {name: observed for name, observed, _, _ in checks}, started)


def id_history_rows(changes: DataFrame, ctx: RunContext) -> DataFrame:
    return changes.select(F.lit(ctx.run_id).alias("run_id"), F.lit(ctx.as_of).alias("as_of_date"), "*",
                          F.lit(ctx.started_at).alias("recorded_at"))


def publish_resolution(ctx: RunContext, result: Resolution, observed: dict[str, float | None],
                       started: float) -> dict[str, object]:
    """Append the id history, MERGE the graph, log the run (in that order: a retry redoes it all)."""
    spark = ctx.spark
    history_rows = id_history_rows(result.changes, ctx)
    if not history_rows.isEmpty():  # a retry after the merge finds no changes: keep the rows written before
        replace_slice(history_rows, gold.CUSTOMER_ID_HISTORY, f"run_id = {sql_literal(ctx.run_id)}")
    merge_by_key(result.graph, gold.IDENTITY_GRAPH, update_when="t.customer_id <> s.customer_id",
                 update_columns=["customer_id", "assigned_date", "run_id"], delete_missing=True)
    counts = {r["change"]: r["n"] for r in result.changes.groupBy("change").agg(F.count("*").alias("n")).collect()}
    summary = result.graph.agg(
        F.count("*").alias("nodes"), F.countDistinct("customer_id").alias("customers"),
        F.count(F.when(F.col("node_type") == "contact", 1)).alias("contact_records")).first()
    model = result.linkage.model
    run = {
        "run_id": ctx.run_id, "as_of_date": ctx.as_of, "nodes": summary["nodes"],
        "contact_records": summary["contact_records"], "customers": summary["customers"],
        "largest_cluster": int(observed["largest_cluster"] or 0),
        "merged_share": identity.merged_share(result.graph).first()["merged_share"] or 0.0,
        "candidate_pairs": result.linkage.candidate_pairs, "probabilistic_links": result.linkage.links.count(),
        "links_cut": result.links_cut, "skipped_blocks": result.linkage.skipped_blocks,
        "shared_devices": result.shared_devices, "ids_merged": counts.get("merged", 0),
        "ids_split": counts.get("split", 0), "match_share": model.match_share, "em_iterations": model.iterations,
        "model": json.dumps(model.table().to_dict(orient="records")),
        "seconds": round(time.monotonic() - started, 1), "resolved_at": ctx.started_at,
    }
    replace_slice(spark.createDataFrame([tuple(run[c] for c in RESOLUTION_RUNS.column_names)], RESOLUTION_RUNS.struct),
                  RESOLUTION_RUNS, f"run_id = {sql_literal(ctx.run_id)}")
    return {k: run[k] for k in ("customers", "contact_records", "nodes", "probabilistic_links", "ids_merged",
                                "ids_split", "seconds")}


def graph_rows(assignment: DataFrame, previous: DataFrame, ctx: RunContext) -> DataFrame:
    """Rows of gold.identity_graph for the new assignment, keeping dates of unchanged nodes."""
    before = previous.select("node", F.col("customer_id").alias("_before"), F.col("first_seen_date").alias("_first"),
                             F.col("assigned_date").alias("_assigned"), F.col("run_id").alias("_run"))
    same = F.col("_before") == F.col("customer_id")
    return assignment.join(before, "node", "left").select(
        "node", identity.node_type(F.col("node")).alias("node_type"), "customer_id",
        F.coalesce("_first", F.lit(ctx.as_of)).alias("first_seen_date"),
        F.when(same, F.col("_assigned")).otherwise(F.lit(ctx.as_of)).alias("assigned_date"),
        F.when(same, F.col("_run")).otherwise(F.lit(ctx.run_id)).alias("run_id"))


def run_profile(ctx: RunContext) -> dict[str, int]:
    """Rebuild the customer profile from the published identity graph and silver, then gate it."""
    spark = ctx.spark
    survivorship = Survivorship.from_conf(ctx.settings.section("identity")["survivorship"])
    profile = build_customer_profile(spark.table(gold.IDENTITY_GRAPH.name), silver_by_source(spark), survivorship,
                                     ctx.as_of)
    overwrite(profile, gold.CUSTOMER_PROFILE)
    ctx.gate("profile", {gold.CUSTOMER_PROFILE.name: spark.table(gold.CUSTOMER_PROFILE.name)})
    return {gold.CUSTOMER_PROFILE.name: spark.table(gold.CUSTOMER_PROFILE.name).count()}


def customer_transactions(graph: DataFrame, tables: dict[str, DataFrame]) -> DataFrame:
    """(customer_id, source, transaction_id, ts, amount): completed online orders and store purchases
    of resolved customers, in the reporting currency; source and transaction_id as in silver.order_lines."""
    orders = identity.attach_customer(tables["orders"].where(F.col("status") == "completed"), "orders", graph) \
        .select("customer_id", F.lit("orders").alias("source"), F.col("order_id").alias("transaction_id"),
                F.col("order_ts").alias("ts"), F.col("net_amount_reporting").alias("amount"))
    store = identity.attach_customer(tables["pos"], "pos", graph) \
        .select("customer_id", F.lit("pos").alias("source"), "transaction_id", F.col("txn_ts").alias("ts"),
                F.col("amount_reporting").alias("amount"))
    return orders.unionByName(store).where(F.col("customer_id").isNotNull() & F.col("amount").isNotNull())


def clv_model_in_force(spark: SparkSession, as_of: date) -> dict | None:
    """The ops.clv_models row that scores `as_of`: the latest promoted model fitted as of that date or
    before (so rerunning a past date uses the model of that time, not a later refit)."""
    if not spark.catalog.tableExists(CLV_MODELS.name):
        return None
    rows = spark.table(CLV_MODELS.name).where(F.col("promoted") & (F.col("as_of_date") <= F.lit(as_of))) \
        .orderBy(F.col("as_of_date").desc(), F.col("fitted_at").desc()).limit(1).collect()
    return rows[0].asDict() if rows else None


def promotion(candidate_mae: float, current: dict | None, max_increase: float) -> tuple[bool, str]:
    if current is None:
        return True, "first model"
    bound = current["holdout_mae"] * (1 + max_increase)
    if candidate_mae <= bound:
        return True, (f"holdout MAE {candidate_mae:.4f} within {bound:.4f} "
                      f"({current['model_version']} + {max_increase:.0%})")
    return False, (f"refused: holdout MAE {candidate_mae:.4f} worse than {bound:.4f} "
                   f"({current['model_version']} + {max_increase:.0%}); {current['model_version']} keeps scoring")


def value_inputs(ctx: RunContext) -> tuple[dict[str, DataFrame], DataFrame, DataFrame]:
    """(silver by source, identity graph, daily transactions per customer) for the CLV stages."""
    tables = silver_by_source(ctx.spark)
    graph = ctx.spark.table(gold.IDENTITY_GRAPH.name)
    return tables, graph, clv.daily_transactions(customer_transactions(graph, tables)).localCheckpoint()


def fit_clv_model(ctx: RunContext, daily: DataFrame) -> dict[str, object]:
    """Fit BG/NBD + Gamma-Gamma up to the date, validate a calibration fit on the holdout before it,
    promote or refuse, and record it all (ops.clv_models, ops.clv_holdout, the calibration plot)."""
    spark, conf = ctx.spark, ctx.settings.section("clv")
    value = clv.ValueSettings.from_conf(conf)
    unit_days = clv.time_unit_days(value.unit)
    for table in (CLV_MODELS, CLV_HOLDOUT):
        ensure_table(spark, table)

    # Validation: fit up to the calibration end, predict the holdout that follows.
    calibration_end = ctx.as_of - timedelta(days=int(conf["holdout_days"]))
    calibration = clv.customer_summary(daily, calibration_end, value.unit).localCheckpoint()
    validation = clv.fit_models(calibration)
    predictions = clv.holdout_predictions(calibration, clv.holdout_purchases(daily, calibration_end, ctx.as_of),
                                          validation.purchases, int(conf["holdout_days"]) / unit_days)
    holdout_table, mae, correlation = clv.holdout_report(predictions)

    models = clv.fit_models(clv.customer_summary(daily, ctx.as_of, value.unit))
    data_version = spark.sql(f"DESCRIBE HISTORY {silver.ORDERS.name}").agg(F.max("version")).first()[0]
    # Six significant digits: Spark may sum a customer's order values in another order on a rerun.
    rounded = {k: float(f"{v:.6g}") for k, v in {**asdict(models.purchases), **asdict(models.spend)}.items()}
    fingerprint = json.dumps([rounded, value.unit, ctx.as_of.isoformat()], sort_keys=True, default=str)
    model_version = f"clv-{ctx.as_of:%Y%m%d}-{hashlib.sha256(fingerprint.encode()).hexdigest()[:8]}"
    # A refit is judged against the model in force before this date's fit (also on a rerun of the date).
    current = clv_model_in_force(spark, ctx.as_of - timedelta(days=1))
    promoted, decision = promotion(mae, current, float(conf["max_holdout_mae_increase"]))
    if not promoted:
        log.warning("clv fit: %s", decision)
    bg, gg = models.purchases, models.spend
    record = {
        "model_version": model_version, "as_of_date": ctx.as_of, "fitted_at": ctx.started_at,
        "time_unit": value.unit, "calibration_end": calibration_end, "holdout_end": ctx.as_of,
        "data_version": int(data_version), "r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b,
        "p": gg.p, "q": gg.q, "gamma": gg.gamma,
        "bgnbd_log_likelihood": models.purchases_fit.log_likelihood,
        "gamma_gamma_log_likelihood": models.spend_fit.log_likelihood,
        "customers": models.purchases_fit.customers, "distinct_points": models.purchases_fit.distinct_points,
        "repeat_customers": models.spend_fit.customers,
        "fit_seconds": models.purchases_fit.seconds + models.spend_fit.seconds,
        "holdout_mae": mae, "holdout_correlation": correlation, "promoted": promoted, "decision": decision,
    }
    replace_slice(spark.createDataFrame([tuple(record[c] for c in CLV_MODELS.column_names)], CLV_MODELS.struct),
                  CLV_MODELS, f"model_version = {sql_literal(model_version)}")
    holdout_table.insert(0, "model_version", model_version)
    replace_slice(spark.createDataFrame(holdout_table[CLV_HOLDOUT.column_names], CLV_HOLDOUT.struct), CLV_HOLDOUT,
                  f"model_version = {sql_literal(model_version)}")
    clv.plot_holdout(holdout_table, f"{model_version}: holdout {calibration_end} to {ctx.as_of}",
                     ctx.settings.paths.warehouse.parent / "reports" / "clv" / f"{model_version}.png")
    return record


def run_refit(ctx: RunContext) -> dict[str, object]:
    """The model-refit DAG's stage: a new CLV model as of the date, promoted only if it validates."""
    _, _, daily = value_inputs(ctx)
    record = fit_clv_model(ctx, daily)
    ctx.gate("refit", {CLV_MODELS.name: ctx.spark.table(CLV_MODELS.name)
                       .where(F.col("model_version") == record["model_version"])})
    return {k: record[k] for k in ("model_version", "promoted", "decision", "holdout_mae", "customers")}


def run_value(ctx: RunContext) -> dict[str, object]:
    """Score every buying customer with the CLV model in force on the date (fitting the first one when
    there is none), train and evaluate the churn classifier, and write the value and forecast slices."""
    spark, conf = ctx.spark, ctx.settings.section("clv")
    value = clv.ValueSettings.from_conf(conf)
    tables, graph, daily = value_inputs(ctx)
    model = clv_model_in_force(spark, ctx.as_of)
    if model is None:
        log.info("value: no CLV model in force on %s: fitting the first", ctx.as_of)
        fit_clv_model(ctx, daily)
        model = clv_model_in_force(spark, ctx.as_of)
    bg = btyd.BetaGeo(model["r"], model["alpha"], model["a"], model["b"])
    gg = btyd.GammaGamma(model["p"], model["q"], model["gamma"])

    sources = churn.ChurnSources(daily, *[identity.attach_customer(tables[name], name, graph).where(
        F.col("customer_id").isNotNull()) for name in ("events", "campaign_events", "tickets", "surveys")])
    churn_model = churn.train_churn_model(sources, ctx.as_of, int(conf["churn_window_days"]))
    log.info("value: churn classifier AUC %.3f on %d customers (trained on %d)", churn_model.validation_auc,
             churn_model.validation_rows, churn_model.train_rows)
    ensure_table(spark, CHURN_MODELS)
    replace_slice(spark.createDataFrame([(ctx.as_of, ctx.run_id, churn_model.validation_auc, churn_model.train_rows,
                                          churn_model.validation_rows, ctx.started_at)], CHURN_MODELS.struct),
                  CHURN_MODELS, f"as_of_date = DATE {sql_literal(ctx.as_of.isoformat())}")

    summary = clv.customer_summary(daily, ctx.as_of, value.unit).localCheckpoint()
    scored = clv.score(summary, bg, gg, value).localCheckpoint()
    values = customer_values(scored, spark.table(gold.CUSTOMER_PROFILE.name), tables["referrals"], graph, conf,
                             value).join(churn.churn_scores(churn_model, sources, ctx.as_of), "customer_id", "left")
    as_of_slice = f"as_of_date = DATE {sql_literal(ctx.as_of.isoformat())}"
    stamp = [F.lit(ctx.as_of).alias("as_of_date"), F.lit(model["model_version"]).alias("model_version")]
    replace_slice(values.select("*", *stamp), gold.CUSTOMER_VALUE, as_of_slice)
    forecast = reduce(DataFrame.unionByName, [scored.select(
        "customer_id", F.lit(h).alias("horizon_days"), F.col(f"expected_purchases_{h}d").alias("expected_purchases"),
        (F.col(f"expected_purchases_{h}d") * F.col("expected_spend")).alias("expected_revenue"), *stamp)
        for h in value.horizons_days])
    replace_slice(forecast, gold.CUSTOMER_FORECAST, as_of_slice)
    ctx.gate("value", {
        gold.CUSTOMER_VALUE.name: spark.table(gold.CUSTOMER_VALUE.name).where(F.col("as_of_date") == ctx.as_of),
        CLV_MODELS.name: spark.table(CLV_MODELS.name).where(F.col("model_version") == model["model_version"])})
    return {"model_version": model["model_version"], "model_as_of": model["as_of_date"],
            "holdout_mae": round(model["holdout_mae"], 4), "churn_auc": round(churn_model.validation_auc, 3),
            "customers": model["customers"], "r": round(bg.r, 4), "alpha": round(bg.alpha, 4),
            "a": round(bg.a, 4), "b": round(bg.b, 4), "p": round(gg.p, 4), "q": round(gg.q, 4),
            "gamma": round(gg.gamma, 4)}


def customer_values(scored: DataFrame, profile: DataFrame, referrals: DataFrame, graph: DataFrame, conf: dict,
                    value: clv.ValueSettings) -> DataFrame:
    """CLV parts per customer: historical (margin so far), current (scored), potential (referrals)."""
    margin = float(conf["margin"])
    historical = profile.select("customer_id", (F.col("net_revenue") * margin).alias("historical_value"))
    own = scored.join(historical, "customer_id", "left").withColumn(
        "historical_value", F.coalesce("historical_value", F.lit(0.0)))
    # A referrer earns a share of the value of each customer they brought.
    referred_value = own.select(F.col("customer_id").alias("referred_customer"),
                                (F.col("historical_value") + F.col("current_value")).alias("referred_value"))
    links = identity.attach_customer(referrals, "referrals", graph).withColumnRenamed("customer_id", "referrer") \
        .join(identity.attach_customer(referrals, "referred", graph).select(
            "referral_id", F.col("customer_id").alias("referred_customer")), "referral_id")
    potential = links.join(referred_value, "referred_customer").groupBy(F.col("referrer").alias("customer_id")).agg(
        (F.sum("referred_value") * float(conf["referral_credit"])).alias("potential_value"))
    result = own.join(potential, "customer_id", "left").withColumn(
        "potential_value", F.coalesce("potential_value", F.lit(0.0)))
    return result.select(
        "customer_id", F.lit(value.unit).alias("time_unit"), "frequency", "recency", "T", "monetary_value",
        "p_alive", (1 - F.col("p_alive")).alias("churn_risk"), "expected_purchases", "expected_spend",
        "historical_value", "current_value", "potential_value",
        (F.col("historical_value") + F.col("current_value") + F.col("potential_value")).alias("clv"),
        F.lit(value.clv_horizon_days).alias("clv_horizon_days"))


SEGMENT_COLUMNS = ["rfm_segment", "cluster_label", "value_tier", "value_quadrant", "age_band", "region",
                   "preferred_channel", "consent_status", "lifecycle_stage", "relationship_stage"]


def customer_activity(profile: DataFrame, tables: dict[str, DataFrame], graph: DataFrame,
                      transactions: DataFrame, as_of: date) -> DataFrame:
    """(customer_id, events_90d, online_share, category_breadth, tickets): engagement, channel mix,
    breadth of categories bought and service contacts, the clustering features beyond RFM."""
    events = identity.attach_customer(tables["events"], "events", graph).where(
        F.col("customer_id").isNotNull() & (F.col("event_date") > F.lit(as_of - timedelta(days=90)))
        & (F.col("event_date") <= F.lit(as_of))).groupBy("customer_id").agg(F.count("*").alias("events_90d"))
    breadth = transactions.where(F.to_date("ts") <= F.lit(as_of)).join(
        tables["order_lines"], ["source", "transaction_id"]).groupBy("customer_id").agg(
        F.countDistinct("category").alias("category_breadth"))
    purchases = F.col("order_count") + F.col("store_transactions")
    channels = profile.select("customer_id", F.when(purchases > 0, F.col("order_count") / purchases)
                              .alias("online_share"), "tickets")
    return channels.join(events, "customer_id", "left").join(breadth, "customer_id", "left")


def run_segments(ctx: RunContext) -> dict[str, object]:
    """RFM, clusters, value tiers and matrix, attribute segments and lifecycle stages as of the date;
    the stage history and segment membership carried forward from the previous run."""
    spark = ctx.spark
    settings = segments.SegmentSettings.from_conf(ctx.settings.section("segments"))
    stages = lifecycle.LifecycleSettings.from_conf(ctx.settings.section("lifecycle"))
    tables = {**silver_by_source(spark), "order_lines": spark.table(silver.ORDER_LINES.name)}
    graph, profile = spark.table(gold.IDENTITY_GRAPH.name), spark.table(gold.CUSTOMER_PROFILE.name)
    values = spark.table(gold.CUSTOMER_VALUE.name).where(F.col("as_of_date") == F.lit(ctx.as_of)).localCheckpoint()
    if values.isEmpty():
        raise ValueError(f"gold.customer_value has no scores for {ctx.as_of}: run the value stage for it first")
    transactions = customer_transactions(graph, tables)
    summary = segments.purchase_summary(clv.daily_transactions(transactions), ctx.as_of).localCheckpoint()
    rfm = segments.rfm_scores(summary, settings.quantile_error).withColumn(
        "rfm_segment", segments.rfm_segment(settings.rfm_rules))
    activity = customer_activity(profile, tables, graph, transactions, ctx.as_of)
    clustering = segments.cluster_customers(segments.cluster_features(summary, activity), settings)
    worth = values.select("customer_id", "clv", "current_value", "potential_value")
    wide = (profile.select("customer_id", "age_band", F.col("country").alias("region"),
                           segments.preferred_channel().alias("preferred_channel"),
                           segments.consent_status().alias("consent_status"))
            .join(rfm, "customer_id", "left")
            .join(clustering.assignments, "customer_id", "left")
            .join(segments.value_tiers(worth.select("customer_id", "clv"), settings.tier_shares), "customer_id", "left")
            .join(segments.value_quadrants(worth, settings.matrix_quantiles, settings.quantile_error),
                  "customer_id", "left")
            .join(values.select("customer_id", "p_alive", "churn_probability"), "customer_id", "left")
            .fillna({"frequency": 0, "monetary": 0.0}))
    stage = lifecycle.lifecycle_stage(stages)
    customer_segments = wide.select(
        F.lit(ctx.as_of).alias("as_of_date"), "*", stage.alias("lifecycle_stage"),
        lifecycle.relationship_stage(stage).alias("relationship_stage")).localCheckpoint()
    as_of_slice = f"as_of_date = DATE {sql_literal(ctx.as_of.isoformat())}"
    replace_slice(customer_segments, gold.CUSTOMER_SEGMENTS, as_of_slice)
    replace_slice(clustering.profiles.select(
        F.lit(ctx.as_of).alias("as_of_date"), "*", F.lit(clustering.k).alias("k"),
        F.lit(clustering.silhouette).alias("silhouette"),
        F.create_map(*[F.lit(x) for k, v in sorted(clustering.silhouette_by_k.items()) for x in (k, v)])
        .alias("silhouette_by_k")), gold.CLUSTER_PROFILES, as_of_slice)
    replace_slice(segments.value_matrix(customer_segments, worth, settings.strategies).select(
        F.lit(ctx.as_of).alias("as_of_date"), "*"), gold.VALUE_MATRIX, as_of_slice)

    for table in (gold.LIFECYCLE_HISTORY, gold.SEGMENT_MEMBERSHIP):
        ensure_table(spark, table)
    today = customer_segments.select("customer_id", F.explode(F.array(
        *[F.struct(F.lit(m).alias("model"), F.col(c).alias("stage"))
          for m, c in (("lifecycle", "lifecycle_stage"), ("relationship", "relationship_stage"))])).alias("s")) \
        .select("s.model", "customer_id", "s.stage")
    history = lifecycle.advance_history(spark.table(gold.LIFECYCLE_HISTORY.name), today, ctx.as_of).localCheckpoint()
    overwrite(history, gold.LIFECYCLE_HISTORY)
    previous = segments.previous_slice(spark.table(gold.SEGMENT_MEMBERSHIP.name), ctx.as_of)
    replace_slice(segments.membership(customer_segments, SEGMENT_COLUMNS, previous, ctx.as_of),
                  gold.SEGMENT_MEMBERSHIP, as_of_slice)

    on_date = {t.name: spark.table(t.name).where(F.col("as_of_date") == F.lit(ctx.as_of)) for t in (
        gold.CUSTOMER_SEGMENTS, gold.SEGMENT_MEMBERSHIP, gold.CLUSTER_PROFILES, gold.VALUE_MATRIX)}
    ctx.gate("segments", {**on_date, gold.LIFECYCLE_HISTORY.name: spark.table(gold.LIFECYCLE_HISTORY.name)})
    counts = customer_segments.groupBy("lifecycle_stage").count().collect()
    return {"customers": customer_segments.count(), "clusters": clustering.k,
            "silhouette": round(clustering.silhouette, 3),
            "lifecycle": {r.lifecycle_stage: r["count"] for r in counts}}


def run_insights(ctx: RunContext) -> dict[str, object]:
    """KPIs by period and segment, association rules and cross-sell, feedback sentiment, as of the date;
    after the segments stage, whose membership the KPIs are broken down by."""
    spark, conf = ctx.spark, ctx.settings.section("insights")
    tables = silver_by_source(spark)
    graph = spark.table(gold.IDENTITY_GRAPH.name)
    membership = spark.table(gold.SEGMENT_MEMBERSHIP.name).where(F.col("as_of_date") == F.lit(ctx.as_of))
    if membership.isEmpty():
        raise ValueError(f"gold.segment_membership has no rows for {ctx.as_of}: run the segments stage for it first")
    resolved = {name: identity.attach_customer(tables[name], name, graph)
                for name in ("tickets", "surveys", "campaign_events", "referrals")}
    feedback = sentiment.score_texts(sentiment.feedback(resolved["tickets"], resolved["surveys"])) \
        .where(F.col("customer_id").isNotNull()).localCheckpoint()
    transactions = customer_transactions(graph, tables).where(F.to_date("ts") <= F.lit(ctx.as_of)).localCheckpoint()
    as_of_slice = f"as_of_date = DATE {sql_literal(ctx.as_of.isoformat())}"
    stamp = F.lit(ctx.as_of).alias("as_of_date")

    kpi = conf["kpi"]
    replace_slice(kpis.kpis(
        transactions, spark.table(gold.CUSTOMER_PROFILE.name).select("customer_id", "signup_channel"), membership,
        spark.table(silver.MARKETING_SPEND.name), resolved["campaign_events"], resolved["tickets"],
        resolved["surveys"], resolved["referrals"].withColumnRenamed("customer_id", "referrer_customer_id"),
        feedback, ctx.as_of, kpi["periods"], int(kpi["attribution_days"])), gold.KPI, as_of_slice)

    rules, suggestions = [], []
    order_lines = spark.table(silver.ORDER_LINES.name)
    for level, mining in conf["baskets"]["levels"].items():
        level_baskets = baskets.baskets(order_lines, transactions, level).localCheckpoint()
        level_rules = baskets.association_rules(level_baskets, level, float(mining["min_support"]),
                                                float(mining["min_confidence"]), int(mining["max_rules"]))
        rules.append(level_rules.localCheckpoint())
        suggestions.append(baskets.cross_sell(level_baskets, rules[-1], int(conf["baskets"]["cross_sell_top_n"]),
                                              float(conf["baskets"]["min_lift"])))
    replace_slice(reduce(DataFrame.unionByName, rules).select(stamp, "*"), gold.ASSOCIATION_RULES, as_of_slice)
    replace_slice(reduce(DataFrame.unionByName, suggestions).select(stamp, "*"), gold.CROSS_SELL, as_of_slice)
    replace_slice(sentiment.customer_sentiment(feedback, ctx.as_of).select(stamp, "*"), gold.CUSTOMER_SENTIMENT,
                  as_of_slice)

    on_date = {t.name: spark.table(t.name).where(F.col("as_of_date") == F.lit(ctx.as_of)) for t in (
        gold.KPI, gold.ASSOCIATION_RULES, gold.CROSS_SELL, gold.CUSTOMER_SENTIMENT)}
    ctx.gate("insights", on_date)
    return {name: frame.count() for name, frame in on_date.items()}


def run_export(ctx: RunContext) -> dict[str, object]:
    """Publish the segment exports of conf `export.scheduled` as of the date into <paths.exports>. A
    (segment, destination, date) exported before is not exported again, so a rerun is a no-op; a segment
    with no members on the date is reported, not exported."""
    from jobs.export import export_segment, known_segments, read_manifests
    from jobs.privacy import erased_customers

    out = ctx.settings.paths.exports
    done = {(m["segment"]["segment_type"], m["segment"]["segment"], m["destination"], m["as_of_date"])
            for m in read_manifests(out)} if out.is_dir() else set()
    known = known_segments(ctx.spark.table(gold.SEGMENT_MEMBERSHIP.name), ctx.as_of)
    summary: dict[str, object] = {}
    for job in ctx.settings.section("export").get("scheduled", []):
        segment_type, segment, destination = job["segment_type"], job["segment"], job["destination"]
        if segment_type not in SEGMENT_COLUMNS:
            raise ValueError(f"export.scheduled: unknown segment type {segment_type!r}; types: {SEGMENT_COLUMNS}")
        name = f"{segment_type}={segment}->{destination}"
        if (segment_type, segment, destination, ctx.as_of.isoformat()) in done:
            summary[name] = "exported before"
        elif (segment_type, segment) not in known:
            summary[name] = "no members"    # a segment may be empty on a day: nothing to send
        else:
            summary[name] = export_segment(ctx.spark, ctx.settings, segment_type, segment, ctx.as_of, destination,
                                           job.get("format", "csv"), out, erased_customers(ctx.spark))["rows"]
    return summary


def run_report(ctx: RunContext) -> dict[str, object]:
    """The run's static HTML report (charts of what the run published), last in the daily DAG."""
    from jobs.report import build_report

    return {"report": str(build_report(ctx.spark, ctx.settings, ctx.as_of, ctx.run_id))}


STAGE_FUNCTIONS = {"ingest": run_ingest, "cleanse": run_cleanse, "resolve": run_resolve, "profile": run_profile,
                   "value": run_value, "segments": run_segments, "insights": run_insights, "refit": run_refit,
                   "export": run_export, "report": run_report}
def _rows_in(ctx: RunContext, stage: str) -> int:
    spark = ctx.spark
    return sum(spark.table(t.name).count() for t in STAGE_TABLES[stage][0] if spark.catalog.tableExists(t.name))


def _versions(spark: SparkSession, tables: Iterable[Table]) -> dict[str, int]:
    """The current Delta version of each of `tables` that exists."""
    return {t.name: spark.sql(f"DESCRIBE HISTORY {t.name} LIMIT 1").first()["version"]
            for t in dict.fromkeys(tables) if spark.catalog.tableExists(t.name)}


def _rows_out(ctx: RunContext, stage: str, since: datetime) -> int:
    """Rows written by the Delta commits made to the stage's tables since `since`."""
    spark, total = ctx.spark, 0
    for table in STAGE_TABLES[stage][1]:
        if spark.catalog.tableExists(table.name):
            total += spark.sql(f"DESCRIBE HISTORY {table.name} LIMIT 50").where(F.col("timestamp") >= F.lit(since)) \
                .agg(F.sum(F.col("operationMetrics")["numOutputRows"].cast("long"))).first()[0] or 0
    return total


def run_logged(ctx: RunContext, stage: str) -> object:
    """Run one stage and record it in ops.pipeline_runs, failed or not (then re-raise), with the Delta
    versions it started from and ended at, from which `cdp rebuild` reproduces it."""
    if stage not in STAGE_FUNCTIONS:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGE_FUNCTIONS)}")
    spark = ctx.spark
    ensure_table(spark, PIPELINE_RUNS)
    inputs, outputs = STAGE_TABLES[stage]
    # Commit timestamps have millisecond precision: start the window on a whole millisecond.
    now = datetime.now(UTC)
    started = now.replace(microsecond=now.microsecond // 1000 * 1000)
    clock = time.monotonic()
    rows_in = None if stage == "ingest" else _rows_in(ctx, stage)
    input_versions = _versions(spark, (*inputs, *outputs))    # a stage may read its own earlier state
    result, error = None, None
    try:
        result = STAGE_FUNCTIONS[stage](ctx)
        return result
    except Exception as exc:
        error = exc
        raise
    finally:
        if stage == "ingest" and spark.catalog.tableExists(INGEST_ACCOUNTING.name):
            rows_in = spark.table(INGEST_ACCOUNTING.name).where(F.col("run_id") == ctx.run_id) \
                .agg(F.sum("rows_read")).first()[0] or 0
        record = (ctx.run_id, ctx.as_of, stage, "failed" if error else "success", rows_in,
                  _rows_out(ctx, stage, started), round(time.monotonic() - clock, 3), started,
                  datetime.now(UTC), input_versions, _versions(spark, outputs),
                  None if error else json.dumps(result, default=str), str(error) if error else None)
        replace_slice(spark.createDataFrame([record], PIPELINE_RUNS.struct), PIPELINE_RUNS,
                      f"run_id = {sql_literal(ctx.run_id)} AND stage = {sql_literal(stage)}")


def run_stage(stage: str, settings: Settings, as_of: date, run_id: str | None = None) -> object:
    return run_logged(RunContext.create(settings, as_of, run_id), stage)
