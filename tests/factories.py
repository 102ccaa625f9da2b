"""Hand-made rows of a table from `schemas/`: a test names the columns it is about, the rest get defaults."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

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
