"""Running a stage: the date guard, then the stage, recorded in ops.pipeline_runs whatever happens.

Dates. Silver, the customer profile, the identity graph and the lifecycle history hold the
*current* state, not one slice per date. Running a stage for a date earlier than the latest date
it was published for would rewind that state (and could change ids issued since), so it fails
with `DateOrderError`, which says how to get the earlier date instead: `cdp rebuild` reproduces a
published date from Delta time travel, and a backfill into an empty warehouse recomputes history.
Rerunning the latest date, or any later one, is fine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.platform.config import Settings
from jobs.platform.context import RunContext
from jobs.platform.stages import Stage, stage
from jobs.platform.tables import (
    append,
    commits_since,
    ensure_table,
    replace_slice,
    row_count,
    small_table,
    sql_literal,
    table_exists,
    table_version,
)
from schemas import Table
from schemas.ops import INGEST_ACCOUNTING, PIPELINE_RUNS


class DateOrderError(RuntimeError):
    """A stage was asked to run for a date before the latest one it has published."""


def check_date_order(spark: SparkSession, step: Stage, as_of: date) -> None:
    """Refuse to rewind a stage's state: see the module's docstring."""
    _refuse_rewind(step, as_of, _log_state(spark, step.name)[0])


def _log_state(spark: SparkSession, stage_name: str) -> tuple[date | None, int]:
    """The latest date the stage was published for, and how many of its runs are still `running`: one query."""
    if not table_exists(spark, PIPELINE_RUNS.name):
        return None, 0
    runs = small_table(spark, PIPELINE_RUNS, ["stage", "status", "logical_date"])
    if runs is not None:    # a few hundred rows a month: read without planning a Spark job (a second a stage)
        mine = [r for r in runs.to_pylist() if r["stage"] == stage_name]
        return max((r["logical_date"] for r in mine if r["status"] == "success"), default=None), \
            sum(r["status"] == "running" for r in mine)
    row = spark.table(PIPELINE_RUNS.name).where(F.col("stage") == stage_name).agg(
        F.max(F.when(F.col("status") == "success", F.col("logical_date"))),
        F.count(F.when(F.col("status") == "running", 1))).first()
    return row[0], row[1]


def _refuse_rewind(step: Stage, as_of: date, latest: date | None) -> None:
    if latest is not None and latest > as_of:
        raise DateOrderError(
            f"stage {step.name} was published for {latest}, after {as_of}: its tables hold the state as of "
            f"{latest}, and running {as_of} now would rewind it. To see {as_of} as it was published, run "
            f"`cdp rebuild --stage {step.name} --date {as_of} --out DIR`; to recompute history, backfill into an "
            "empty warehouse (`cdp backfill --start ... --end ...` with other paths.warehouse and paths.metastore)")


def _versions(spark: SparkSession, tables: Iterable[Table]) -> dict[str, int]:
    """The current Delta version of each of `tables` that exists."""
    names = [t.name for t in dict.fromkeys(tables) if table_exists(spark, t.name)]
    return {name: table_version(spark, name) for name in names}


def _rows_in(spark: SparkSession, step: Stage) -> int:
    return sum(row_count(spark, t) for t in step.reads if table_exists(spark, t.name))


def _rows_out(spark: SparkSession, step: Stage, since: datetime) -> int:
    """Rows written by the Delta commits made to the stage's tables since `since`."""
    return sum(int((c.get("operationMetrics") or {}).get("numOutputRows") or 0)
               for t in step.writes if table_exists(spark, t.name) for c in commits_since(spark, t, since))


def abandon_unfinished(spark: SparkSession, stage_name: str, now: datetime) -> None:
    """Mark `abandoned` the stage's runs still `running`: a process that died (kill -9, a lost node) never
    recorded its end. Called before the stage starts again."""
    spark.sql(f"UPDATE {PIPELINE_RUNS.name} SET status = 'abandoned', "
              f"finished_at = TIMESTAMP {sql_literal(now.isoformat())}, "
              f"message = 'the process ended without recording an outcome (killed or lost); a later run "
              f"of the stage found it running' WHERE stage = {sql_literal(stage_name)} AND status = 'running'")


def _record_run(spark: SparkSession, record: tuple) -> None:
    """The stage's outcome: it replaces its `running` row (and any row of an earlier attempt)."""
    replace_slice(_run_row(spark, record), PIPELINE_RUNS,
                  f"run_id = {sql_literal(record[0])} AND stage = {sql_literal(record[2])}")


def _run_row(spark: SparkSession, record: tuple) -> DataFrame:
    return spark.createDataFrame([record], PIPELINE_RUNS.struct)


def run_logged(ctx: RunContext, name: str) -> object:
    """Run one stage and record it in ops.pipeline_runs: `running` when it starts (so that a crash leaves a
    row, which the stage's next run marks `abandoned`), then success or failed (then re-raise), with the
    Delta versions it started from and ended at, from which `cdp rebuild` reproduces it."""
    step = stage(name)
    ctx = ctx.for_stage(step)
    spark = ctx.spark
    ensure_table(spark, PIPELINE_RUNS)
    latest, unfinished = _log_state(spark, step.name)
    _refuse_rewind(step, ctx.as_of, latest)
    # Commit timestamps have millisecond precision: start the window on a whole millisecond.
    now = datetime.now(UTC)
    started = now.replace(microsecond=now.microsecond // 1000 * 1000)
    clock = time.monotonic()
    if unfinished:
        abandon_unfinished(spark, step.name, started)
    rows_in = None if step.name == "ingest" else _rows_in(spark, step)
    input_versions = _versions(spark, step.tables)    # a stage may read its own earlier state
    # A new row, so an append (one commit, no files to find and replace); the outcome replaces it.
    append(_run_row(spark, (ctx.run_id, ctx.as_of, step.name, "running", rows_in, None, 0.0, 0.0, started, started,
                            input_versions, {}, None, None)), PIPELINE_RUNS)
    result, error = None, None
    checkpoints_before = persisted_rdds(spark)
    try:
        result = step.function()(ctx)
        return result
    except BaseException as exc:   # an interrupt (Ctrl-C) too: it is no success
        error = exc
        raise
    finally:
        if step.name == "ingest" and table_exists(spark, INGEST_ACCOUNTING.name):
            rows_in = spark.table(INGEST_ACCOUNTING.name).where(F.col("run_id") == ctx.run_id) \
                .agg(F.sum("rows_read")).first()[0] or 0
        record = (ctx.run_id, ctx.as_of, step.name, "failed" if error else "success", rows_in,
                  _rows_out(spark, step, started), round(time.monotonic() - clock, 3), round(ctx.gate_seconds, 3),
                  started,
                  datetime.now(UTC), input_versions, _versions(spark, step.writes),
                  None if error else json.dumps(result, default=str),
                  (str(error) or type(error).__name__) if error else None)
        _record_run(spark, record)
        # What the stage cached is its own, as when it runs as its own spark-submit: a session that runs
        # stage after stage (`cdp run`, the tests) would otherwise match every later plan against it.
        spark.catalog.clearCache()
        # So are its local checkpoints (staged outputs, intermediate results): they stay in the block
        # manager until the JVM collects their RDDs. A 1M-customer `cdp run` was found in the profile
        # stage with its 12g heap full (over 900 full collections) after cleanse's and resolve's.
        release_rdds(spark, checkpoints_before)


def persisted_rdds(spark: SparkSession) -> set[int]:
    return {int(rdd_id) for rdd_id in spark.sparkContext._jsc.getPersistentRDDs().keySet()}


def release_rdds(spark: SparkSession, kept: set[int]) -> None:
    """Drop the blocks of every RDD persisted or checkpointed since `kept` was taken."""
    for rdd_id, rdd in spark.sparkContext._jsc.getPersistentRDDs().items():
        if int(rdd_id) not in kept:
            rdd.unpersist(False)


def run_stage(name: str, settings: Settings, as_of: date, run_id: str | None = None,
              requested_by: str | None = None) -> object:
    """Run one stage for `as_of`; `requested_by` (default the OS user) is who the exports audit."""
    return run_logged(RunContext.create(settings, as_of, run_id, requested_by), name)
