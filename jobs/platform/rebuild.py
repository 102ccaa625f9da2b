"""Rebuild a stage's tables as they were published for a past logical date, and compare.

`ops.pipeline_runs` records, for every stage run, the Delta version of each table the stage read
or wrote when it started (`input_versions`) and of each table it wrote when it ended
(`output_versions`). A rebuild clones every input at its recorded version (Delta shallow clones:
metadata only, the data files are shared) into a scratch warehouse with its own metastore, runs
the same stage code there for the same date, and compares each output with the published table
at its recorded end version (the date's slice where the table is sliced by as_of_date). Bronze,
silver and gold tables are compared, not the operational ones (they record fit times and
durations); run columns and ciphertexts (fresh nonces by design) are left out of the comparison.
The model in force then is reproduced too: `ops.clv_models` is one of the value stage's tables.
Only the tables a stage declares are cloned, so a stage that read anything else would fail here:
rebuilding every stage is also the proof that each reads only what it declares. A stage that
writes files (export, report) is rebuilt into the scratch folder and its files are listed.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, DoubleType, MapType

from jobs.delivery.serving import table_path
from jobs.platform.config import Settings
from jobs.platform.context import RunContext
from jobs.platform.stages import stage as registered
from schemas import Table
from schemas.ops import PIPELINE_RUNS

# Columns that name the run or its wall-clock time, not the data.
RUN_COLUMNS = ("run_id", "recorded_at", "_run_id", "_ingested_at")


def comparable(df: DataFrame) -> DataFrame:
    """`df` without run columns and ciphertexts; doubles to 6 decimals (sums may add in another order);
    maps as JSON (set operations take no maps)."""
    columns = []
    for field in df.schema.fields:
        if field.name in RUN_COLUMNS or isinstance(field.dataType, BinaryType):
            continue
        column = F.col(field.name)
        if isinstance(field.dataType, DoubleType):
            column = F.round(column, 6)
        elif isinstance(field.dataType, MapType):
            column = F.to_json(F.transform_values(column, lambda _, v: F.round(v, 6)))
        columns.append(column.alias(field.name))
    return df.select(*columns)


def differences(published: DataFrame, rebuilt: DataFrame) -> dict[str, int]:
    """Row counts of both and the rows of each missing from the other (after `comparable`)."""
    left, right = comparable(published), comparable(rebuilt)
    return {"published": left.count(), "rebuilt": right.count(),
            "only_published": left.exceptAll(right).count(), "only_rebuilt": right.exceptAll(left).count()}


def scratch_settings(settings: Settings, out: Path) -> Settings:
    """The same settings with a warehouse, metastore and reports of their own under `out`."""
    return settings.with_paths(warehouse=out / "warehouse", metastore=out / "metastore", gx=out / "gx",
                               alerts=out / "alerts", exports=out / "exports")


def _path(settings: Settings, table: Table) -> str:
    return str(table_path(settings.paths.warehouse, table))


def published_run(spark: SparkSession, settings: Settings, stage: str, as_of: date) -> dict:
    """The latest successful run of `stage` for `as_of` in the published warehouse's run log."""
    runs = spark.read.format("delta").load(_path(settings, PIPELINE_RUNS)).where(
        (F.col("stage") == stage) & (F.col("logical_date") == F.lit(as_of)) & (F.col("status") == "success"))
    latest = runs.orderBy(F.col("finished_at").desc()).limit(1).collect()
    if not latest:
        raise ValueError(f"no successful {stage} run for {as_of} in {settings.paths.warehouse}: nothing to rebuild")
    return latest[0].asDict()


def rebuild_stage(settings: Settings, stage: str, as_of: date, out: Path) -> dict[str, dict[str, int]]:
    """Rebuild `stage` for `as_of` under `out` from the published warehouse of `settings`; return, per
    output table, the comparison with what was published (none for the stages that write files only:
their files are written under `out`)."""
    step = registered(stage)
    scratch = scratch_settings(settings, out)
    ctx = RunContext.create(scratch, as_of)
    spark = ctx.spark
    run = published_run(spark, settings, stage, as_of)
    for table in step.tables:   # a table the stage created is created again; none is left from an earlier rebuild
        spark.sql(f"DROP TABLE IF EXISTS {table.name}")
    tables = {t.name: t for t in step.tables}
    for name, version in sorted(run["input_versions"].items()):
        spark.sql(f"CREATE TABLE {name} SHALLOW CLONE delta.`{_path(settings, tables[name])}` VERSION AS OF {version}")
    rebuild = dataclasses.replace(ctx, run_id=f"rebuild__{run['run_id']}").for_stage(step)
    step.function()(rebuild)

    report: dict[str, dict[str, int]] = {}
    for table in (t for t in step.writes if t.database != "ops"):   # ops tables hold fit times and durations
        published = spark.read.format("delta").option("versionAsOf", run["output_versions"][table.name]) \
            .load(_path(settings, table))
        rebuilt = spark.table(table.name)
        if "as_of_date" in table.partition_by:
            published, rebuilt = (df.where(F.col("as_of_date") == F.lit(as_of)) for df in (published, rebuilt))
        elif "_run_id" in table.column_names:    # bronze: the rows this run landed
            published = published.where(F.col("_run_id") == F.lit(run["run_id"]))
            rebuilt = rebuilt.where(F.col("_run_id") == F.lit(rebuild.run_id))
        report[table.name] = differences(published, rebuilt)
    return report
