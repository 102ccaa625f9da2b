"""silver.events brought up to date from the last day's instead of derived whole.

Sessions and the stitched user are windows over a device's whole history, and a record's latest version
wins across batches, so a day's new bronze rows can change only the events of the devices they land on,
of the devices holding an earlier version of one of their events, and of the devices with an account
that became a test account. Those devices are derived again from all their bronze rows, and silver
receives the difference: events new or changed are upserted, events no longer kept are deleted (one
Delta MERGE). The accounting follows the same way: the last day's outcomes, less those devices' outcomes
as they were derived then (their bronze rows without the new ones), plus their outcomes now.

The stage checks the premise before using it: derived the way they were then, those devices' kept
events must be exactly the published ones of those devices. When they are not (an event id moved to
another device, a crash between the silver tables' commits, a table edited by hand), it derives silver
whole instead, as it does on a first day, a backfill, or after an erasure.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from schemas import silver


def is_new(batch_after: str, loaded_after: datetime) -> Column:
    """Bronze rows the last run did not read: a later batch, or loaded after the latest row it read (a late
    file of an earlier batch)."""
    return (F.col("_batch_id") > F.lit(batch_after)) | (F.col("_ingested_at") > F.lit(loaded_after))


def devices_to_derive(bronze: DataFrame, new: DataFrame, published: DataFrame, test_accounts: DataFrame) -> DataFrame:
    """(device_id) of the devices whose silver events the new rows can change: theirs, those holding an
    earlier version of one of their events, and those with a published event of a test account (a published
    event's account is never a test account the last run knew of: its whole device is rejected then)."""
    new_events = new.select("event_id").distinct()
    earlier = bronze.join(F.broadcast(new_events), "event_id", "left_semi")
    tests = F.broadcast(test_accounts.select(F.col("account_id").alias("user_id")).distinct())
    tested = published.join(tests, "user_id", "left_semi")
    return new.select("device_id").unionByName(earlier.select("device_id")).unionByName(tested.select("device_id")) \
        .distinct()


def of_devices(df: DataFrame, devices: DataFrame) -> DataFrame:
    """The rows of `df` on one of `devices` (a day's devices: few next to the history, so broadcast)."""
    return df.join(F.broadcast(devices), "device_id", "left_semi")


def event_changes(derived: DataFrame, published: DataFrame) -> tuple[DataFrame, DataFrame]:
    """The MERGE into silver.events for devices derived again: (upserts) their kept events that are new or
    differ from the `published` ones of the same devices, and (deletes) the event_id of the published ones
    no longer kept."""
    columns = silver.EVENTS.column_names
    derived = derived.select(*columns)
    upserts = derived.subtract(published.select(*columns))     # null-safe: a row equal to the published is left
    deletes = published.select("event_id").join(derived.select("event_id"), "event_id", "left_anti")
    return upserts, deletes


def accounted_outcomes(accounting: DataFrame) -> DataFrame:
    """An ops.silver_accounting row as the outcomes it counted: (reason, records, represented), the kept
    records with the versions merged into them, and each rejection reason's records."""
    kept = accounting.select(F.lit(None).cast("string").alias("reason"), F.col("kept_rows").alias("records"),
                             (F.col("kept_rows") + F.col("merged_rows")).alias("represented"))
    rejected = accounting.select(F.explode("rejected_reasons").alias("reason", "records")) \
        .withColumn("represented", F.col("records"))
    return kept.unionByName(rejected)


def day_outcomes(last_day: DataFrame, derived_before: DataFrame, derived_now: DataFrame) -> DataFrame:
    """Today's outcomes: the last day's, less the re-derived devices' outcomes as of then, plus theirs now
    (each a frame of `accounting.outcomes`)."""
    negated = derived_before.select("reason", (-F.col("records")).alias("records"),
                                    (-F.col("represented")).alias("represented"))
    return last_day.unionByName(negated).unionByName(derived_now) \
        .groupBy("reason").agg(F.sum("records").alias("records"), F.sum("represented").alias("represented")) \
        .where((F.col("records") != 0) | (F.col("represented") != 0))
