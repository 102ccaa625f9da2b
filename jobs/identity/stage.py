"""The resolve stage: silver -> matched, clustered and assigned customers -> the guards -> the
identity graph and the id history, published only when the guards pass.

When a guard breaks nothing is published: the graph, its history and the run log stay as the
previous run left them, and the gate's summary names the worst clusters. The guards' figures are
recorded in ops.resolution_checks either way.
"""

from __future__ import annotations

import json
import logging
import time

from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from jobs.identity import graph as identity
from jobs.identity import matching
from jobs.identity.resolution import Resolution, resolution
from jobs.platform.context import RunContext
from jobs.platform.settings import IdentityConfig
from jobs.platform.tables import sql_literal
from schemas import gold
from schemas.ops import RESOLUTION_CHECKS, RESOLUTION_RUNS

log = logging.getLogger(__name__)


def id_history_rows(changes: DataFrame, ctx: RunContext) -> DataFrame:
    return changes.select(F.lit(ctx.run_id).alias("run_id"), F.lit(ctx.as_of).alias("as_of_date"), "*",
                          F.lit(ctx.started_at).alias("recorded_at"))


def model_in_force(last_run: Row | None, records: int, conf: IdentityConfig) -> str | None:
    """The last published run's match model, or None when a new one is due: asked for (identity.refit),
    none yet, the records grew past retrain_growth since it was trained (against the records then, not
    its training sample's: a sample smaller than the records would retrain every run), or the shipped
    default is in force and there are now enough records to train on."""
    if conf.refit or last_run is None or records > (1 + conf.retrain_growth) * last_run["model_records"]:
        return None
    default = json.loads(last_run["model"]).get(matching.SHIPPED_DEFAULT, False)
    return None if default and records >= conf.min_records_to_train else last_run["model"]


def resolve(ctx: RunContext, tables: dict[str, DataFrame], conf: IdentityConfig,
            last_run: Row | None) -> Resolution:
    """The resolution of the silver tables against the published graph (see `resolution.resolution`)."""
    contacts = matching.contact_match_records(tables["contacts"]).localCheckpoint()
    previous = ctx.read(gold.IDENTITY_GRAPH).localCheckpoint()
    history = ctx.read(gold.CUSTOMER_ID_HISTORY)
    issued = previous.select("customer_id").unionByName(history.select(F.col("old_customer_id").alias("customer_id"))) \
        .unionByName(history.select(F.col("new_customer_id").alias("customer_id")).where("customer_id IS NOT NULL"))
    return resolution(contacts, tables, previous, ctx.read(gold.IDENTITY_LINKS), issued, conf,
                      model_in_force(last_run, contacts.count(), conf), ctx.as_of, ctx.run_id)


def run_resolve(ctx: RunContext) -> dict[str, object]:
    """Resolve silver records into customers, check the result, then publish the identity graph."""
    spark, conf = ctx.spark, ctx.settings.identity
    started = time.monotonic()
    tables = ctx.silver_sources()
    runs = ctx.read(RESOLUTION_RUNS).where(F.col("run_id") != ctx.run_id)
    last_run = next(iter(runs.orderBy(F.col("resolved_at").desc()).limit(1).collect()), None)
    result = resolve(ctx, tables, conf, last_run)
    log.info("resolve: resolved in %.1f s", time.monotonic() - started)

    checks = identity.guard_checks(result.graph, tables["contacts"], result.changes, result.previous_customers,
                                   last_run["merged_share"] if last_run else None,
                                   identity.GuardLimits.from_conf(conf.guards))
    checks_frame = spark.createDataFrame(
        [(ctx.run_id, name, observed, limit, breach, ctx.started_at) for name, observed, limit, breach in checks],
        RESOLUTION_CHECKS.struct)
    run_slice = f"run_id = {sql_literal(ctx.run_id)}"
    ctx.record(checks_frame, RESOLUTION_CHECKS, run_slice)
    history_rows = id_history_rows(result.changes, ctx)
    if not history_rows.isEmpty():  # a retry after the merge finds no changes: keep the rows written before
        history_rows = ctx.stage_slice(history_rows, gold.CUSTOMER_ID_HISTORY, run_slice)
    graph = ctx.stage_merge(result.graph, gold.IDENTITY_GRAPH,
                            update_when="t.customer_id <> s.customer_id OR NOT (t.match_fingerprint <=> "
                                        "s.match_fingerprint)",
                            update_columns=["customer_id", "assigned_date", "run_id", "match_fingerprint"],
                            delete_missing=True)
    links = ctx.stage_overwrite(result.links, gold.IDENTITY_LINKS)
    ctx.gate({RESOLUTION_CHECKS: ctx.read(RESOLUTION_CHECKS).where(F.col("run_id") == ctx.run_id),
              gold.IDENTITY_GRAPH: graph, gold.IDENTITY_LINKS: links, gold.CUSTOMER_ID_HISTORY: history_rows})
    log.info("resolve: checked in %.1f s", time.monotonic() - started)
    run = resolution_run(ctx, result, {name: observed for name, observed, _, _ in checks}, started)
    ctx.stage_slice(spark.createDataFrame([tuple(run[c] for c in RESOLUTION_RUNS.column_names)],
                                          RESOLUTION_RUNS.struct), RESOLUTION_RUNS, run_slice)
    # The id history, then the graph, then the run log: a retry after the merge finds no changes, so
    # the history must be in before the graph moves.
    ctx.publish(last=(gold.IDENTITY_GRAPH, RESOLUTION_RUNS))
    return {k: run[k] for k in ("customers", "contact_records", "nodes", "probabilistic_links", "ids_merged",
                                "ids_split", "seconds")}


def resolution_run(ctx: RunContext, result: Resolution, observed: dict[str, float | None],
                   started: float) -> dict[str, object]:
    """The row of ops.resolution_runs: the result's figures and the match model it used."""
    counts = {r["change"]: r["n"] for r in result.changes.groupBy("change").agg(F.count("*").alias("n")).collect()}
    summary = result.graph.agg(
        F.count("*").alias("nodes"), F.countDistinct("customer_id").alias("customers"),
        F.count(F.when(F.col("node_type") == "contact", 1)).alias("contact_records")).first()
    linkage = result.linkage
    return {
        "run_id": ctx.run_id, "as_of_date": ctx.as_of, "nodes": summary["nodes"],
        "contact_records": summary["contact_records"], "customers": summary["customers"],
        "largest_cluster": int(observed["largest_cluster"] or 0),
        "merged_share": identity.merged_share(result.graph).first()["merged_share"] or 0.0,
        "candidate_pairs": linkage.candidate_pairs, "probabilistic_links": linkage.links.count(),
        "links_cut": result.links_cut, "skipped_rules": len(linkage.skipped_rules),
        "oversized_blocks": sum(linkage.blocking.oversized_blocks.values()), "records_scored": linkage.scored_records,
        "shared_devices": result.shared_devices, "shared_contact_points": result.shared_contact_points,
        "ids_merged": counts.get("merged", 0), "ids_split": counts.get("split", 0),
        "match_share": linkage.match_share, "model_trained": linkage.trained, "model_records": linkage.model_records,
        "model": linkage.model_json,
        "seconds": round(time.monotonic() - started, 1), "resolved_at": ctx.started_at,
    }
