"""The ingest stage: every pending landing batch up to the logical date -> staged bronze rows and
accounting -> the gate -> published. A batch counts as done only once its accounting is published,
which happens only after its gate passed: rerunning a failed date finds the batch pending again and
gates it again, until the data is fixed or an operator releases the batch (`cdp release`), whose
gate is then still run and recorded but no longer stops it."""

from __future__ import annotations

import logging
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.ingest.accounting import accounting_frame
from jobs.ingest.batches import BatchResult, batch_results, landed_batches, parse_batches
from jobs.platform.context import RunContext
from jobs.platform.tables import sql_literal
from schemas import Table
from schemas.bronze import TABLES as BRONZE
from schemas.ops import BATCH_RELEASES, INGEST_ACCOUNTING, QUARANTINE
from schemas.raw import SOURCES

log = logging.getLogger(__name__)


def run_ingest(ctx: RunContext) -> list[BatchResult]:
    """Stage every pending batch of every source, gate what was staged, then publish it."""
    spark = ctx.spark
    history = ctx.read(INGEST_ACCOUNTING)
    released = {(r.source, r.batch_id) for r in ctx.read(BATCH_RELEASES).collect()}
    staged: dict[str, tuple[DataFrame, DataFrame]] = {}
    for name, source in SOURCES.items():
        done = {r.source_file for r in history.where(F.col("source") == name).select("source_file").distinct()
                .collect()}
        batches = landed_batches(spark, str(ctx.settings.paths.landing), source, ctx.as_of.isoformat(), done)
        if not batches:
            continue
        ids = ", ".join(sql_literal(b) for b in batches)
        earlier = ctx.read(BRONZE[name]).where(f"_batch_id NOT IN ({ids})").select("_content_hash")
        parsed = parse_batches(spark, source, [f for files in batches.values() for f in files], earlier, ctx.run_id,
                               ctx.started_at)
        try:
            batch_slice = f"source = {sql_literal(name)} AND batch_id IN ({ids})"
            # Recorded at once, gate or no gate: the quarantined lines are what an operator looks at first.
            ctx.record(parsed.quarantine, QUARANTINE, batch_slice)
            staged[name] = (ctx.stage_slice(parsed.bronze, BRONZE[name], f"_batch_id IN ({ids})"),
                            ctx.stage_slice(parsed.accounting, INGEST_ACCOUNTING, batch_slice))
        finally:
            parsed.release()
    if not staged:
        log.info("ingest: no new batches up to %s", ctx.as_of)
        return []
    is_released = F.concat_ws("/", "source", "batch_id").isin([f"{s}/{b}" for s, b in released] or [""])
    blocking = gate_frames(staged, history, ~is_released)
    if blocking:
        ctx.gate(blocking)
    waived = gate_frames(staged, history, is_released)
    if waived:
        ctx.gate(waived, stage_name="ingest-released", enforce=False)
    ctx.publish()
    return [result for name, (_, accounting) in staged.items() for result in batch_results(accounting, name)]


def gate_frames(staged: dict[str, tuple[DataFrame, DataFrame]], history: DataFrame,
                which: Column) -> dict[Table, DataFrame]:
    """The gate's frames for the staged batches that `which` selects (on source and batch_id)."""
    accounting = reduce(DataFrame.unionByName, [a for _, a in staged.values()]).where(which)
    sources = {r.source: r.ids for r in accounting.groupBy("source").agg(
        F.collect_set("batch_id").alias("ids")).collect()}
    if not sources:
        return {}
    frames: dict[Table, DataFrame] = {INGEST_ACCOUNTING: accounting_frame(accounting, history)}
    for name, ids in sorted(sources.items()):
        frames[BRONZE[name]] = staged[name][0].where(F.col("_batch_id").isin(ids))
    return frames
