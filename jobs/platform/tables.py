"""Delta table IO at the edges: create from `schemas/`, conform, replace the slice a run owns."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from schemas import Table

T = TypeVar("T")
# Spark runs jobs from several driver threads at once. A small Delta commit or count is mostly waiting on
# planning, the log and the metastore, not on executors: eight 100-row appends took 7.3 s one after
# another and 3.1 s four at a time. At scale the jobs queue for the same executor slots instead.
CONCURRENT_ACTIONS = 4


class SchemaMismatch(ValueError):
    """A DataFrame leaving a stage does not match its table's schema."""


def concurrently(actions: Iterable[Callable[[], T]]) -> list[T]:
    """Run independent Spark actions (each on tables of its own) from a few driver threads; return their
    results in order. All of them run to the end, then the first failure is raised."""
    actions = list(actions)
    if len(actions) <= 1:
        return [action() for action in actions]
    with ThreadPoolExecutor(min(CONCURRENT_ACTIONS, len(actions)), thread_name_prefix="cdp-action") as pool:
        futures = [pool.submit(action) for action in actions]
    return [future.result() for future in futures]


def _session_catalog(spark: SparkSession, name: str):
    # The metastore alone answers in milliseconds; `spark.catalog.tableExists` and DESCRIBE DETAIL go
    # through Delta's catalog, which loads the table's log first (about a second a call on small tables).
    database, table = name.split(".")
    jvm = spark._jvm
    return spark._jsparkSession.sessionState().catalog(), \
        jvm.org.apache.spark.sql.catalyst.TableIdentifier.apply(table, jvm.scala.Some(database))


def table_exists(spark: SparkSession, name: str) -> bool:
    """Whether the metastore has the table `database.table`."""
    catalog, identifier = _session_catalog(spark, name)
    return bool(catalog.tableExists(identifier))


def table_names(spark: SparkSession, database: str) -> list[str]:
    """The tables (and views) of `database` as `database.table`, from the metastore alone: unlike
    `spark.catalog.listTables`, no Delta log is loaded, and it also works without generated code."""
    return sorted(f"{database}.{r.tableName}" for r in spark.sql(f"SHOW TABLES IN {database}").collect()
                  if not r.isTemporary)


def ensure_table(spark: SparkSession, table: Table) -> None:
    """Create the Delta table from its schema if it does not exist yet (never inferred), with file
    statistics on its `stats_columns` only and its declared properties (a change data feed)."""
    if table_exists(spark, table.name):
        if table.properties:    # a property declared since the table was created is set on it
            current = table_properties(spark, table)
            missing = {k: v for k, v in table.properties if current.get(k) != v}
            if missing:
                spark.sql(f"ALTER TABLE {table.name} SET TBLPROPERTIES ({_property_list(missing)})")
        return
    statistics = {"delta.dataSkippingStatsColumns": ",".join(table.stats_columns)} if table.stats_columns \
        else {"delta.dataSkippingNumIndexedCols": "0"}
    # A DDL statement, not the write of an empty frame: no Spark job (0.4 s a table instead of 0.9 s, and a
    # first day creates about a hundred), and no statistics in the metastore (`saveAsTable` stored the empty
    # write's size, which the writes by path never update: read by name, every table looked tiny).
    # Its columns nullable, as a DataFrame write would make them: `schemas/`
    # declares what must not be null, and the gates check it, with a reason, before anything is written.
    columns = spark._jvm.org.apache.spark.sql.types.DataType.fromJson(table.struct.json()).asNullable().toDDL()
    partitions = f" PARTITIONED BY ({', '.join(table.partition_by)})" if table.partition_by else ""
    spark.sql(f"CREATE TABLE IF NOT EXISTS {table.name} ({columns}) USING delta{partitions} "
              f"TBLPROPERTIES ({_property_list(dict(table.properties) | statistics)})")


def table_properties(spark: SparkSession, table: Table | str) -> dict[str, str]:
    """The table's Delta properties (its log's metadata; through Spark for a table off the file system)."""
    log = delta_log(spark, table)
    if log is not None:
        return dict(log.metadata().configuration)
    return spark.sql(f"DESCRIBE DETAIL {_name(table)}").first()["properties"] or {}


def _property_list(properties: dict[str, str]) -> str:
    return ", ".join(f"{sql_literal(k)} = {sql_literal(v)}" for k, v in properties.items())


def conform(df: DataFrame, table: Table) -> DataFrame:
    """Select the table's columns in order, cast to their declared types; fail naming what is missing."""
    fields = [(f.name, f.dataType) for f in df.schema.fields]
    if fields == [(c.name, c.data_type) for c in table.columns]:
        return df   # already conformed (a staged frame): a select of casts is tens of calls into the JVM
    missing = [c.name for c in table.columns if c.name not in dict(fields)]
    if missing:
        raise SchemaMismatch(f"{table.name}: output lacks column(s) {missing}")
    return df.select(*[F.col(c.name).cast(c.data_type).alias(c.name) for c in table.columns])


def _name(table: Table | str) -> str:
    return table if isinstance(table, str) else table.name


def location(spark: SparkSession, table: Table | str) -> str:
    """Where the table's files are, as the metastore records it (`table`: a schema or its name)."""
    catalog, identifier = _session_catalog(spark, _name(table))
    return catalog.getTableMetadata(identifier).location().toString()


# ------------------------------------------------------------------------ the log, without a Spark job
# Bookkeeping (versions for time travel, rows read and written) reads only a table's Delta log. Through Spark
# each answer is a DESCRIBE HISTORY or a count, a query with planning and a job: about 60 s of a 2,000-person
# run's bookkeeping. delta-rs reads the same log in milliseconds. Tables elsewhere than on a file system
# (an object store, whose credentials Spark holds) are asked through Spark as before.


def delta_log(spark: SparkSession, table: Table | str) -> Any | None:
    """The table's Delta log as delta-rs reads it (a `deltalake.DeltaTable`), if it is on a local or mounted
    file system; None otherwise."""
    from deltalake import DeltaTable

    uri = urlparse(location(spark, table))
    return DeltaTable(uri.path) if uri.scheme in ("", "file") else None


def table_version(spark: SparkSession, table: Table | str) -> int:
    """The table's current Delta version."""
    log = delta_log(spark, table)
    return log.version() if log is not None else \
        spark.sql(f"DESCRIBE HISTORY {_name(table)} LIMIT 1").first()["version"]


def last_commit_metrics(spark: SparkSession, table: Table | str) -> dict[str, str]:
    """The operation metrics of the table's latest commit (numOutputRows, numTargetRowsDeleted, ...)."""
    return commits_since(spark, table, None, limit=1)[0].get("operationMetrics") or {}


def commits_since(spark: SparkSession, table: Table | str, since: datetime | None, limit: int = 50) -> list[dict]:
    """The table's latest commits (newest first, at most `limit`) made at or after `since`: each with its
    `version`, `timestamp` (ms since the epoch) and `operationMetrics`."""
    log = delta_log(spark, table)
    if log is not None:
        commits = log.history(limit)
    else:
        commits = [{"version": r["version"], "timestamp": int(r["timestamp"].timestamp() * 1000),
                    "operationMetrics": r["operationMetrics"]}
                   for r in spark.sql(f"DESCRIBE HISTORY {_name(table)} LIMIT {limit}").collect()]
    floor = since.timestamp() * 1000 if since is not None else float("-inf")
    return [c for c in commits if c["timestamp"] >= floor]


def row_count(spark: SparkSession, table: Table | str) -> int:
    """The table's rows: the sum of its files' record counts in the log (a Spark count where deletion vectors
    may hide rows the counts include, or a file has none)."""
    import pyarrow as pa

    log = _log_of_every_row(spark, table)
    counts = None if log is None else pa.table(log.get_add_actions(flatten=True)).column("num_records").to_pylist()
    if counts is None or None in counts:    # a file written without statistics has no count
        return spark.table(_name(table)).count()
    return sum(counts)


def small_table(spark: SparkSession, table: Table | str, columns: list[str]) -> Any | None:
    """`columns` of a small table (a `pyarrow.Table`) as delta-rs reads its files, without a Spark job (the run
    log's questions before each stage); None where Spark must read it: off the file system, or with deletion
    vectors (rows its files still hold may be deleted)."""
    log = _log_of_every_row(spark, table)
    return None if log is None else log.to_pyarrow_table(columns=columns)


def _log_of_every_row(spark: SparkSession, table: Table | str) -> Any | None:
    """The table's delta-rs log if its files' rows are all the table's: not where deletion vectors may mark some
    deleted (or the table is off the file system)."""
    log = delta_log(spark, table)
    return None if log is None or "deletionVectors" in (log.protocol().writer_features or []) else log


def _write(df: DataFrame, table: Table, predicate: str | None, mode: str = "overwrite") -> None:
    # Written by path: a Delta commit is the whole write, with no metastore schema update on every run
    # (the table's entry in the metastore only points at the location).
    spark = df.sparkSession
    ensure_table(spark, table)
    # mergeSchema: a column added to the table's schema in `schemas/` is added to an existing table (earlier
    # rows read null) instead of failing the upgrade; `conform` lets nothing but declared columns through.
    writer = conform(df, table).write.format("delta").mode(mode).option("mergeSchema", "true")
    if predicate is not None:
        writer = writer.option("replaceWhere", predicate)
    writer.save(location(spark, table))


def replace_slice(df: DataFrame, table: Table, predicate: str) -> None:
    """Atomically replace exactly the rows matching `predicate` with `df` (a rerun is a no-op)."""
    _write(df, table, predicate)


def overwrite(df: DataFrame, table: Table) -> None:
    """Replace the whole table (for tables fully recomputed each run)."""
    _write(df, table, None)


def append(df: DataFrame, table: Table) -> None:
    """Add `df`'s rows to the table (one commit, no files to find and replace)."""
    _write(df, table, None, mode="append")


def merge_by_key(df: DataFrame, table: Table, update_when: str, update_columns: list[str],
                 delete_missing: bool | str = False) -> None:
    """Delta MERGE of `df` into `table` on its keys: insert new rows, update matched rows where
    `update_when` holds (aliases t = table, s = df), and with `delete_missing` delete rows absent
    from `df` (all of them, or those where it holds, when it is a condition on t). Only changed rows
    are rewritten, and the table's history shows each change."""
    from delta.tables import DeltaTable

    spark = df.sparkSession
    ensure_table(spark, table)
    on = " AND ".join(f"t.{k} = s.{k}" for k in table.keys)
    merge = (DeltaTable.forPath(spark, location(spark, table)).alias("t").merge(conform(df, table).alias("s"), on)
             .whenMatchedUpdate(condition=update_when, set={c: f"s.{c}" for c in update_columns})
             .whenNotMatchedInsertAll())
    if delete_missing:
        merge = merge.whenNotMatchedBySourceDelete(None if delete_missing is True else delete_missing)
    merge.execute()


def merge_changes(upserts: DataFrame, deletes: DataFrame, table: Table) -> None:
    """One Delta MERGE on the table's keys: `upserts` (whole rows) inserted or replacing theirs, the rows keyed
    by `deletes` (key columns) deleted. With deletion vectors (the table's property), only the rows changed
    are written, not the files that hold them."""
    from delta.tables import DeltaTable

    spark = upserts.sparkSession
    ensure_table(spark, table)
    source = conform(upserts, table).withColumn("_delete", F.lit(False)).unionByName(
        deletes.select(*table.keys).withColumn("_delete", F.lit(True)), allowMissingColumns=True)
    on = " AND ".join(f"t.{k} = s.{k}" for k in table.keys)
    every = {c: f"s.{c}" for c in table.column_names}
    (DeltaTable.forPath(spark, location(spark, table)).alias("t").merge(source.alias("s"), on)
     .whenMatchedDelete(condition="s._delete")
     .whenMatchedUpdate(set=every)
     .whenNotMatchedInsert(condition="NOT s._delete", values=every)
     .execute())


def sql_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
