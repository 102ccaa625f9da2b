"""Bounded samples for what is fitted in the driver, drawn by a hash of a key: the same rows on every
run, whatever the partitioning (`DataFrame.sample` draws per partition, so its rows follow the layout)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def hashed_sample(frame: DataFrame, key: str, total: int, size: int) -> DataFrame:
    """About `size` of the `total` rows of `frame` (all of them when `total <= size`), by a hash of `key`."""
    if total <= size:
        return frame
    return frame.where((F.abs(F.xxhash64(key)) % 1_000_000) < int(1_000_000 * size / total))


def sample_matrix(frame: DataFrame, key: str, columns: Sequence[str], total: int, size: int) -> np.ndarray:
    """`hashed_sample`'s `columns` (not the key) through Arrow as a float matrix, rows in a fixed order."""
    rows = hashed_sample(frame, key, total, size).select(*[F.col(c).cast("double") for c in columns]) \
        .toPandas().to_numpy(float)
    return rows[np.lexsort(rows.T[::-1])]
