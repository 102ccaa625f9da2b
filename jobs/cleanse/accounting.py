"""Silver's accounting: every bronze row of a source is a kept silver row, a version merged into one, or a
record a silver rule rejected (with its reason). Counted from the frames the cleanse stage publishes, against
bronze's own count, so a row lost or duplicated between the layers breaks the identity and the gate."""

from __future__ import annotations

from datetime import date
from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def outcomes(cleansed: DataFrame) -> DataFrame:
    """(reason, records, represented) of cleansed records with `_rejected` (a reason, or null when kept) and
    `_bronze_rows` (the versions each stands for: `latest_version`)."""
    return cleansed.groupBy(F.col("_rejected").alias("reason")).agg(
        F.count(F.lit(1)).alias("records"), F.sum("_bronze_rows").cast("long").alias("represented"))


def silver_accounting(bronze: dict[str, DataFrame], cleansed: dict[str, tuple[str, DataFrame]], as_of: date,
                      run_id: str) -> DataFrame:
    """One row per source: `bronze` holds its rows as of the date; `cleansed` its silver table's name and the
    `outcomes` of its records (a reason may come in several rows: they are summed)."""
    outcome_rows = reduce(DataFrame.unionByName, [
        df.select(F.lit(source).alias("source"), "reason", "records", "represented")
        for source, (_, df) in cleansed.items()]) \
        .groupBy("source", "reason").agg(F.sum("records").alias("records"), F.sum("represented").alias("represented"))
    bronze_rows = reduce(DataFrame.unionByName, [
        df.agg(F.count(F.lit(1)).alias("bronze_rows"), F.max("_ingested_at").alias("loaded_through"))
        .select(F.lit(source).alias("source"), "bronze_rows", "loaded_through")
        for source, df in bronze.items()])
    rejected = F.col("reason").isNotNull()
    per_source = outcome_rows.groupBy("source").agg(
        F.sum(F.when(~rejected, F.col("records")).otherwise(0)).alias("kept_rows"),
        F.sum(F.when(rejected, F.col("records")).otherwise(0)).alias("rejected_rows"),
        (F.sum("represented") - F.sum("records")).alias("merged_rows"),
        F.map_from_entries(F.filter(F.collect_list(F.struct("reason", "records")), lambda e: e.reason.isNotNull()))
        .alias("rejected_reasons"))
    table_of = F.create_map(*[F.lit(x) for source, (table, _) in cleansed.items() for x in (source, table)])
    return bronze_rows.join(per_source, "source", "left").select(
        F.lit(as_of).alias("as_of_date"), "source", table_of[F.col("source")].alias("silver_table"), "bronze_rows",
        *[F.coalesce(c, F.lit(0)).cast("long").alias(c) for c in ("kept_rows", "merged_rows", "rejected_rows")],
        F.coalesce("rejected_reasons", F.create_map().cast("map<string,bigint>")).alias("rejected_reasons"),
        F.lit(run_id).alias("run_id"), "loaded_through",
    ).withColumn("rows_add_up", F.col("bronze_rows") == F.col("kept_rows") + F.col("merged_rows")
                 + F.col("rejected_rows"))
