"""Stage entry points: read config and inputs, call the pure transforms, write, gate.

Each stage is keyed by the run's logical date (`as_of`) and is safe to rerun. Airflow tasks
and the `cdp run` command call these and nothing else.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cached_property

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import cleanse, identity, matching, pii, quality
from jobs.config import Settings
from jobs.ingest import BatchResult, ingest_source
from jobs.profile import Survivorship, build_customer_profile
from jobs.runtime import spark_session
from jobs.tables import ensure_table, merge_by_key, overwrite, replace_slice, sql_literal
from schemas import gold, silver
from schemas.bronze import TABLES as BRONZE
from schemas.ops import INGEST_ACCOUNTING, RESOLUTION_CHECKS, RESOLUTION_RUNS, ROW_COUNTS
from schemas.raw import SOURCES

log = logging.getLogger(__name__)

PIPELINE_SOURCES = tuple(SOURCES)
STAGES = ("ingest", "cleanse", "resolve", "profile")
# Silver tables by the source names identity resolution and the profile use.
IDENTITY_SOURCES = {
    "contacts": silver.CONTACTS, "orders": silver.ORDERS, "pos": silver.POS_TRANSACTIONS, "tickets": silver.TICKETS,
    "surveys": silver.SURVEYS, "campaign_events": silver.CAMPAIGN_EVENTS, "events": silver.EVENTS,
    "referrals": silver.REFERRALS,
}


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


STAGE_FUNCTIONS = {"ingest": run_ingest, "cleanse": run_cleanse, "resolve": run_resolve, "profile": run_profile}


def run_stage(stage: str, settings: Settings, as_of: date, run_id: str | None = None) -> object:
    if stage not in STAGE_FUNCTIONS:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    return STAGE_FUNCTIONS[stage](RunContext.create(settings, as_of, run_id))
