"""Hand-made rows of a table from `schemas/`: a test names the columns it is about, the rest get defaults."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.platform import pii
from jobs.platform.tables import conform
from schemas import Table

_DEFAULTS = {"string": "", "int": 0, "long": 0, "double": 0.0, "boolean": False, "date": date(2026, 1, 1),
             "timestamp": datetime(2026, 1, 1), "binary": b""}


def _default(type_: str) -> Any:
    if type_.startswith("array<"):
        return []
    if type_.startswith("map<"):
        return {}
    return _DEFAULTS[type_]


def frame(spark: SparkSession, table: Table, rows: list[dict[str, Any]]) -> DataFrame:
    """`rows` as a DataFrame of `table`: unnamed nullable columns are null, unnamed required ones a neutral
    value of their type (0, '', False, 2026-01-01)."""
    full = [tuple(row.get(c.name, None if c.nullable else _default(c.type)) for c in table.columns) for row in rows]
    return conform(spark.createDataFrame(full, table.struct), table)


def write_delta(df: DataFrame, table: Table, path: Path) -> None:
    """Write `df` as the Delta table `table` at `path` (by path: not named in any metastore)."""
    df.write.format("delta").mode("overwrite").partitionBy(*table.partition_by).save(str(path))


def contact_key(field: str, record: str) -> str:
    """Stands in for the HMAC key of a contact point (jobs.platform.pii.keyed_hash)."""
    return f"{field}_{record}"


def vault_frame(spark: SparkSession, contacts: list[tuple[str, str, str, str, str]], key: bytes) -> DataFrame:
    """silver.pii_vault rows of `contacts` (customer, field, vault source, record id, raw value), encrypted with
    `key`, keyed by `contact_key`."""
    rows = spark.createDataFrame([(s, r, f, v, contact_key(f, r)) for _, f, s, r, v in contacts],
                                 "source string, record_id string, field string, value string, key string")
    return rows.groupBy("source", "record_id").agg(
        F.max(F.when(F.col("field") == "email", F.col("key"))).alias("email_key"),
        F.max(F.when(F.col("field") == "phone", F.col("key"))).alias("phone_key"),
        F.first(F.when(F.col("field") == "email", F.col("value")), ignorenulls=True).alias("email"),
        F.first(F.when(F.col("field") == "phone", F.col("value")), ignorenulls=True).alias("phone"),
    ).select("source", "record_id", "email_key", "phone_key",
             pii.encrypt(F.col("email"), F.concat_ws("|", "source", "record_id", F.lit("email")), key)
             .alias("email_enc"),
             pii.encrypt(F.col("phone"), F.concat_ws("|", "source", "record_id", F.lit("phone")), key)
             .alias("phone_enc"),
             F.lit(None).cast("binary").alias("street_enc"), F.lit("b1").alias("_batch_id"))


def graph_rows(contacts: list[tuple[str, str, str, str, str]], seen: date) -> list[dict[str, Any]]:
    """gold.identity_graph rows linking each contact point of `contacts` to its customer."""
    return [{"node": f"{f}:{contact_key(f, r)}", "node_type": f, "customer_id": c, "first_seen_date": seen,
             "assigned_date": seen, "run_id": "r1"} for c, f, _, r, _ in contacts]
