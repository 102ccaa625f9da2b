"""The ingest gate's view of the accounting: per source over the run's batches, with the checks the
suite bounds (quarantine share, rows adding up, rows read against the previous batch)."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from schemas.ops import ROW_COUNTS


def accounting_frame(accounting: DataFrame, history: DataFrame) -> DataFrame:
    """Accounting per source over the run's batches, with the checks the ingest gate bounds.

    Per source rather than per file, so that a tiny daily file with one bad row does not stop
    the run; `row_ratio` compares the rows read with the source's previous batch in `history`.
    The critical bound applies to `quarantine_share_after_grace`, the share beyond one bad row: a
    16-row source with a single bad line is 6% quarantined, which says nothing about the feed,
    while a wholly bad batch still fails however small.
    """
    sums = [F.sum(c).alias(c) for c in ROW_COUNTS]
    run = accounting.groupBy("source").agg(F.count("*").alias("files"), F.min("batch_id").alias("first_batch"),
                                           *sums)
    per_batch = history.groupBy("source", "batch_id").agg(F.sum("rows_read").alias("prev_rows_read"))
    previous = (
        run.select("source", "first_batch").join(per_batch, "source")
        .where(F.col("batch_id") < F.col("first_batch"))
        .groupBy("source").agg(F.max_by("prev_rows_read", "batch_id").alias("prev_rows_read"))
    )
    read = F.greatest("rows_read", F.lit(1))
    return run.join(previous, "source", "left").select(
        "*",
        (F.col("rows_quarantined") / read).alias("quarantine_share"),
        (F.greatest(F.col("rows_quarantined") - 1, F.lit(0)) / read).alias("quarantine_share_after_grace"),
        # Null, not an error, after an empty batch (ANSI division by zero raises).
        F.try_divide("rows_read", "prev_rows_read").alias("row_ratio"),
        (F.col("rows_read") == F.col("rows_loaded") + F.col("rows_quarantined") + F.col("rows_deduplicated"))
        .alias("rows_add_up"),
    )
