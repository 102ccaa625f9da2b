"""The ingest stage: every pending landing batch up to the logical date -> staged bronze rows and
accounting -> the gate -> published. A batch counts as done only once its accounting is published,
which happens only after its gate passed: rerunning a failed date finds the batch pending again and
gates it again, until the data is fixed or an operator releases the batch (`cdp release`), whose
gate is then still run and recorded but no longer stops it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial, reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.ingest.accounting import accounting_frame
from jobs.ingest.batches import BatchResult, batch_results, landed_batches, parse_batches, replay_window_hashes
from jobs.platform.context import RunContext
from jobs.platform.pii import pii_keys
from jobs.platform.tables import concurrently, sql_literal
from schemas import Table
from schemas.bronze import TABLES as BRONZE
from schemas.ops import BATCH_RELEASES, INGEST_ACCOUNTING, QUARANTINE
from schemas.raw import SOURCES

log = logging.getLogger(__name__)


def run_ingest(ctx: RunContext) -> list[BatchResult]:
    """Stage every pending batch of every source, gate what was staged, then publish it."""
    history = ctx.read(INGEST_ACCOUNTING)
    released = {(r.source, r.batch_id) for r in ctx.read(BATCH_RELEASES).collect()}
    done: dict[str, set[str]] = {}
    for r in history.select("source", "source_file").distinct().collect():
        done.setdefault(r.source, set()).add(r.source_file)
    landing, as_of = str(ctx.settings.paths.landing), ctx.as_of.isoformat()
    pending = {name: batches for name, source in SOURCES.items()
               if (batches := landed_batches(ctx.spark, landing, source, as_of, done.get(name, set())))}
    if not pending:
        log.info("ingest: no new batches up to %s", ctx.as_of)
        return []
    # The sources are independent: parsed and staged side by side, each from its own driver thread.
    staged = dict(zip(pending, concurrently(partial(_stage_source, ctx, name, batches)
                                            for name, batches in pending.items()), strict=True))
    batch_slice = " OR ".join(f"(source = {sql_literal(name)} AND batch_id IN ({_ids(batches)}))"
                              for name, batches in pending.items())
    # Recorded at once, gate or no gate: the quarantined lines are what an operator looks at first.
    ctx.record(_union(s.quarantine for s in staged.values()), QUARANTINE, batch_slice)
    accounting = ctx.stage_slice(_union(s.accounting for s in staged.values()), INGEST_ACCOUNTING, batch_slice)
    is_released = F.concat_ws("/", "source", "batch_id").isin([f"{s}/{b}" for s, b in released] or [""])
    blocking = gate_frames(staged, accounting, history, ~is_released)
    if blocking:
        ctx.gate(blocking)
    waived = gate_frames(staged, accounting, history, is_released)
    if waived:
        ctx.gate(waived, stage_name="ingest-released", enforce=False)
    ctx.publish(last=(INGEST_ACCOUNTING,))    # a batch is done once its accounting is in, not before
    return batch_results(accounting)


@dataclass(frozen=True)
class StagedSource:
    bronze: DataFrame        # staged for publishing
    accounting: DataFrame    # checkpointed: staged with every other source's, in one commit
    quarantine: DataFrame    # checkpointed: recorded with every other source's, in one commit


def _stage_source(ctx: RunContext, name: str, batches: dict[str, list[str]]) -> StagedSource:
    ids = _ids(batches)
    replay_from = (ctx.as_of - timedelta(days=ctx.settings.ingest.replay_window_days)).isoformat()
    earlier = replay_window_hashes(ctx.read(BRONZE[name]), list(batches), replay_from)
    parsed = parse_batches(ctx.spark, SOURCES[name], [f for files in batches.values() for f in files], earlier,
                           ctx.run_id, ctx.started_at, pii_keys(ctx.settings).encryption_key,
                           ctx.settings.ingest.maximums())
    try:
        return StagedSource(ctx.stage_slice(parsed.bronze, BRONZE[name], f"_batch_id IN ({ids})"),
                            parsed.accounting.localCheckpoint(), parsed.quarantine.localCheckpoint())
    finally:
        parsed.release()


def _ids(batches: dict[str, list[str]]) -> str:
    return ", ".join(sql_literal(b) for b in batches)


def _union(frames: Iterable[DataFrame]) -> DataFrame:
    return reduce(DataFrame.unionByName, frames)


def gate_frames(staged: dict[str, StagedSource], accounting: DataFrame, history: DataFrame,
                which: Column) -> dict[Table, DataFrame]:
    """The gate's frames for the staged batches that `which` selects (on source and batch_id)."""
    accounting = accounting.where(which)
    sources = {r.source: (r.ids, r.new_rows) for r in accounting.groupBy("source").agg(
        F.collect_set("batch_id").alias("ids"),
        (F.sum("rows_read") - F.sum("rows_deduplicated")).alias("new_rows")).collect()}
    if not sources:
        return {}
    frames: dict[Table, DataFrame] = {INGEST_ACCOUNTING: accounting_frame(accounting, history)}
    for name, (ids, new_rows) in sorted(sources.items()):
        # Empty files and re-sent copies add no rows: a bronze suite's row count has nothing to judge then.
        if new_rows:
            frames[BRONZE[name]] = staged[name].bronze.where(F.col("_batch_id").isin(ids))
    return frames
