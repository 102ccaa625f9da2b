import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession

from jobs.platform.jars import JarCacheError, require_jars
from jobs.platform.tables import (
    commits_since,
    last_commit_metrics,
    location,
    overwrite,
    replace_slice,
    row_count,
    table_exists,
    table_version,
)
from schemas import Column, Table


def test_delta_round_trip_by_table_name_with_merge_and_time_travel(spark: SparkSession) -> None:
    spark.sql("DROP TABLE IF EXISTS silver.roundtrip")
    spark.createDataFrame([(1, "a"), (2, "b")], "id int, v string").write.format("delta").saveAsTable(
        "silver.roundtrip")
    spark.createDataFrame([(2, "B"), (3, "c")], "id int, v string").createOrReplaceTempView("updates")
    spark.sql("""MERGE INTO silver.roundtrip t USING updates u ON t.id = u.id
                 WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *""")

    current = {r.id: r.v for r in spark.table("silver.roundtrip").collect()}
    first = {r.id: r.v for r in spark.read.option("versionAsOf", 0).table("silver.roundtrip").collect()}
    detail = spark.sql("DESCRIBE DETAIL silver.roundtrip").first()

    assert current == {1: "a", 2: "B", 3: "c"}
    assert first == {1: "a", 2: "b"}
    assert detail["format"] == "delta"
    # The metastore-only lookups the writers use agree with Delta's own view of the table.
    roundtrip = Table("silver.roundtrip", (Column("id", "int"), Column("v", "string")), "a test table")
    assert table_exists(spark, "silver.roundtrip") and location(spark, roundtrip) == detail["location"]
    spark.sql("DROP TABLE silver.roundtrip")
    assert not table_exists(spark, "silver.roundtrip")


def test_the_bookkeeping_read_from_the_delta_log_agrees_with_spark(spark: SparkSession) -> None:
    table = Table("silver.log_probe", (Column("id", "int"), Column("v", "string")), "a test table")
    spark.sql(f"DROP TABLE IF EXISTS {table.name}")
    overwrite(spark.createDataFrame([(1, "a"), (2, "b"), (3, "c")], table.struct), table)
    before_delete = datetime.now(UTC)
    spark.sql(f"DELETE FROM {table.name} WHERE id = 2")
    replace_slice(spark.createDataFrame([(4, "d"), (5, "e")], table.struct), table, "id >= 4")

    history = spark.sql(f"DESCRIBE HISTORY {table.name}").collect()
    since = commits_since(spark, table, before_delete)
    counted, version, metrics = row_count(spark, table), table_version(spark, table), last_commit_metrics(spark, table)
    expected = spark.table(table.name).count()
    spark.sql(f"DROP TABLE {table.name}")
    assert version == max(r.version for r in history) == 3      # created, written, deleted from, appended to
    assert counted == expected == 4
    assert [c["version"] for c in since] == [3, 2]           # the delete and the append, not the first write
    assert metrics["numOutputRows"] == history[0].operationMetrics["numOutputRows"] == "2"


def test_tables_keep_file_statistics_on_the_columns_queries_prune_by(spark: SparkSession) -> None:
    table = Table("silver.stats_probe", (Column("order_id", "string", False), Column("note", "string"),
                                         Column("amount", "double"), Column("order_ts", "timestamp"),
                                         Column("customer_id", "string")), "a test table", keys=("order_id",))
    spark.sql(f"DROP TABLE IF EXISTS {table.name}")
    overwrite(spark.createDataFrame([("o1", "free text", 2.5, None, "c1")], table.struct), table)

    stats = spark.sql(f"SHOW TBLPROPERTIES {table.name}").where("key = 'delta.dataSkippingStatsColumns'").first()
    log = Path(location(spark, table).removeprefix("file:")) / "_delta_log"
    adds = [json.loads(line)["add"] for f in sorted(log.glob("*.json")) for line in f.read_text().splitlines()
            if '"add"' in line]
    spark.sql(f"DROP TABLE {table.name}")
    assert stats.value == "order_id,order_ts,customer_id"
    assert set(json.loads(adds[-1]["stats"])["minValues"]) == {"order_id", "customer_id"}   # order_ts is null


def test_a_table_is_created_as_declared_and_read_by_name_is_sized_by_its_files(spark: SparkSession) -> None:
    """A table made by `ensure_table` has no statistics in the metastore: read by name or by location, Spark
    sizes it by its files. (Created by writing an empty frame, it kept that write's few hundred bytes: every
    join with it was planned as a broadcast, a 5.6M-node identity graph built into the driver's heap.)"""
    table = Table("gold.sized_probe", (Column("as_of_date", "date", False), Column("customer_id", "string", False),
                                       Column("note", "string")), "a test table",
                  keys=("as_of_date", "customer_id"), partition_by=("as_of_date",),
                  properties=(("delta.enableChangeDataFeed", "true"),))
    spark.sql(f"DROP TABLE IF EXISTS {table.name}")
    overwrite(spark.range(20_000).selectExpr("DATE'2026-11-20' AS as_of_date", "uuid() AS customer_id",
                                             "repeat('x', 40) AS note"), table)

    def size(df: DataFrame) -> int:
        return int(df._jdf.queryExecution().optimizedPlan().stats().sizeInBytes())

    by_name, by_location = size(spark.table(table.name)), size(spark.read.format("delta").load(location(spark, table)))
    detail = spark.sql(f"DESCRIBE DETAIL {table.name}").first()
    fields = [(f.name, f.dataType.simpleString(), f.nullable) for f in spark.table(table.name).schema.fields]
    spark.sql(f"DROP TABLE {table.name}")
    assert by_name == by_location > 100_000
    assert fields == [("as_of_date", "date", True), ("customer_id", "string", True), ("note", "string", True)]
    assert detail.partitionColumns == ["as_of_date"] and detail.properties["delta.enableChangeDataFeed"] == "true"


def test_a_column_added_to_a_table_schema_is_added_to_the_existing_table(spark: SparkSession) -> None:
    """An upgrade that declares a new column writes on: earlier rows read null, the new rows carry it."""
    before = Table("gold.evolving", (Column("as_of_date", "date", False), Column("customer_id", "string", False)),
                   "a test table", keys=("as_of_date", "customer_id"), partition_by=("as_of_date",))
    after = Table(before.name, (*before.columns, Column("growth_value", "double", False)), before.doc,
                  keys=before.keys, partition_by=before.partition_by)
    spark.sql(f"DROP TABLE IF EXISTS {before.name}")
    replace_slice(spark.createDataFrame([(date(2026, 1, 1), "c1")], before.struct), before,
                  "as_of_date = '2026-01-01'")
    replace_slice(spark.createDataFrame([(date(2026, 1, 2), "c1", 4.5)], after.struct), after,
                  "as_of_date = '2026-01-02'")

    rows = sorted(spark.table(before.name).collect())
    spark.sql(f"DROP TABLE {before.name}")
    assert [tuple(r) for r in rows] == [(date(2026, 1, 1), "c1", None), (date(2026, 1, 2), "c1", 4.5)]


def test_missing_jar_cache_names_the_command_that_fixes_it(tmp_path: Path) -> None:
    with pytest.raises(JarCacheError, match="make setup"):
        require_jars("io.delta:delta-spark_4.2_2.13:4.4.0", tmp_path / "nothing-here")


def test_stale_jar_cache_is_refused(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"coordinates": "io.delta:delta-spark_4.1_2.13:4.0.0"}')
    (tmp_path / "delta-spark_4.1_2.13-4.0.0.jar").write_bytes(b"")
    with pytest.raises(JarCacheError, match=r"resolved for io\.delta:delta-spark_4\.1"):
        require_jars("io.delta:delta-spark_4.2_2.13:4.4.0", tmp_path)


def test_a_stage_is_logged_running_from_its_start_and_a_dead_run_is_marked_abandoned(
    empty_warehouse: SparkSession, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyspark.sql import functions as F

    from jobs.platform.context import RunContext
    from jobs.platform.runlog import run_logged
    from jobs.platform.stages import Stage

    spark = empty_warehouse

    def status_seen_by_the_stage(ctx: RunContext) -> dict:
        runs = spark.table("ops.pipeline_runs").where(F.col("stage") == "report")
        return {r.run_id: r.status for r in runs.collect()}

    monkeypatch.setattr(Stage, "function", lambda self: status_seen_by_the_stage)
    # The first run sees itself running; it is killed before it records an end (its row stays running).
    seen = run_logged(RunContext.create(settings, date(2026, 11, 20), "run-1"), "report")
    assert seen == {"run-1": "running"}
    spark.sql("UPDATE ops.pipeline_runs SET status = 'running' WHERE run_id = 'run-1'")   # as kill -9 leaves it

    seen = run_logged(RunContext.create(settings, date(2026, 11, 20), "run-2"), "report")

    assert seen == {"run-1": "abandoned", "run-2": "running"}
    runs = {r.run_id: r for r in spark.table("ops.pipeline_runs").collect()}
    assert runs["run-2"].status == "success" and runs["run-1"].status == "abandoned"
    assert "without recording an outcome" in runs["run-1"].message
    assert runs["run-1"].finished_at >= runs["run-2"].started_at


def test_a_stage_releases_its_own_checkpoints_and_no_one_elses(
    empty_warehouse: SparkSession, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs.platform.context import RunContext
    from jobs.platform.runlog import persisted_rdds, run_logged
    from jobs.platform.stages import Stage

    spark = empty_warehouse
    earlier = spark.range(5).localCheckpoint()      # a caller's, made before the stage
    made: list[set[int]] = []

    def checkpointing_stage(ctx: RunContext) -> dict:
        before = persisted_rdds(spark)
        assert spark.range(7).localCheckpoint().count() == 7
        made.append(persisted_rdds(spark) - before)
        return {}

    monkeypatch.setattr(Stage, "function", lambda self: checkpointing_stage)
    run_logged(RunContext.create(settings, date(2026, 11, 20), "run-1"), "report")

    assert made[0] and not made[0] & persisted_rdds(spark)      # the stage's checkpoint is gone
    assert earlier.count() == 5                                 # the caller's is still readable
