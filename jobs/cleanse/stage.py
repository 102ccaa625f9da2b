"""The cleanse stage: bronze as of the logical date -> silver and the PII vault, staged, gated with
the integrity checks between silver tables, then published."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import partial

from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from jobs.cleanse import incremental
from jobs.cleanse import sources as cleanse
from jobs.cleanse.accounting import outcomes, silver_accounting
from jobs.cleanse.suppression import reject_erased
from jobs.ingest.batches import unsealed_bronze
from jobs.platform.context import RunContext
from jobs.platform.pii import pii_keys
from jobs.platform.quality import with_reference
from jobs.platform.tables import concurrently, row_count, table_exists
from schemas import Table, silver
from schemas.bronze import TABLES as BRONZE
from schemas.ops import ERASED_SUBJECTS, SILVER_ACCOUNTING
from schemas.raw import SOURCES
from schemas.silver import IDENTIFIERS

log = logging.getLogger(__name__)


def bronze_as_of(bronze: DataFrame, as_of: date) -> DataFrame:
    return bronze.where(F.col("_batch_id") <= F.lit(as_of.isoformat()))


def run_cleanse(ctx: RunContext) -> dict[str, int]:
    """Rebuild silver from bronze as of the logical date (and the PII vault), silver.events brought up to date
    from the last day's where it can be (`events_day`); publish it if it passes."""
    conf = ctx.settings.cleanse
    patterns, currency = list(conf.test_account_email_patterns), conf.reporting_currency
    keys = pii_keys(ctx.settings)
    email = {"local_part": conf.email_local_part}
    # Bronze holds personal fields encrypted: decrypted here, in the stage's memory only.
    bronze = {name: unsealed_bronze(bronze_as_of(ctx.read(BRONZE[name]), ctx.as_of), source, keys.encryption_key)
              for name, source in SOURCES.items()}

    cleansed_fx = cleanse.cleanse_fx_rates(bronze["fx_rates"]).persist()
    fx = ctx.stage_overwrite(cleanse.kept(cleansed_fx), silver.FX_RATES)
    staged = {silver.FX_RATES: fx}
    cleansed = {
        silver.CONTACTS: cleanse.cleanse_contacts(bronze["contacts"], conf.default_phone_region, patterns,
                                                  keys.hmac_key, **email),
        silver.ORDERS: cleanse.cleanse_orders(bronze["orders"], patterns, keys.hmac_key, fx, currency, **email),
        silver.POS_TRANSACTIONS: cleanse.cleanse_pos(
            bronze["pos"], SOURCES["pos"].timezone, cleanse.test_loyalty_numbers(bronze["contacts"], patterns), fx,
            currency),
        silver.EVENTS: cleanse.cleanse_events(bronze["events"], cleanse.test_accounts(bronze["orders"], patterns),
                                              conf.session_gap_minutes),
        silver.TICKETS: cleanse.cleanse_tickets(bronze["tickets"], patterns, keys.hmac_key, **email),
        silver.SURVEYS: cleanse.cleanse_surveys(bronze["surveys"], patterns, keys.hmac_key, **email),
        silver.CAMPAIGN_EVENTS: cleanse.cleanse_campaign_events(bronze["campaign_events"], patterns, keys.hmac_key,
                                                                **email),
        silver.MARKETING_SPEND: cleanse.cleanse_marketing_spend(bronze["marketing_spend"], fx, currency),
        silver.REFERRALS: cleanse.cleanse_referrals(bronze["referrals"], patterns, keys.hmac_key, **email),
    }
    erased = ctx.read(ERASED_SUBJECTS)
    anyone_erased = not erased.isEmpty()    # the usual day: nobody erased, no identifier to hash
    source_of = {table: source for source, table in silver.OF_SOURCE.items()}

    def suppressed(frame: DataFrame, table: Table) -> DataFrame:
        return reject_erased(frame, source_of[table], erased, keys.hmac_key) \
            if anyone_erased and source_of[table] in IDENTIFIERS else frame

    day = events_day(ctx, bronze, erased if anyone_erased else None, partial(suppressed, table=silver.EVENTS)) \
        if conf.incremental_events else None
    if day is not None:
        del cleansed[silver.EVENTS]
    cleansed = {table: suppressed(frame, table) for table, frame in cleansed.items()}
    for frame in cleansed.values():
        frame.persist()  # each is staged, accounted, and feeds the vault or the order lines (with its raw columns)
    outputs = {table: cleanse.kept(frame) for table, frame in cleansed.items()}
    with_email = [outputs[t] for t in (silver.ORDERS, silver.TICKETS, silver.SURVEYS, silver.CAMPAIGN_EVENTS,
                                       silver.REFERRALS)]
    derived = {
        silver.ORDER_LINES: cleanse.order_lines(outputs[silver.ORDERS], bronze["orders"],
                                                outputs[silver.POS_TRANSACTIONS], fx, currency),
        silver.PII_VAULT: cleanse.pii_vault(outputs[silver.CONTACTS], with_email, keys.encryption_key, keys.hmac_key),
    }
    frame_of = {**cleansed, silver.FX_RATES: cleansed_fx}
    by_source = {source: (table.name, day.outcomes if day is not None and table == silver.EVENTS
                          else outcomes(frame_of[table])) for source, table in silver.OF_SOURCE.items()}
    accounting = silver_accounting(bronze, by_source, ctx.as_of, ctx.run_id)
    try:
        # Independent tables, staged side by side (a persisted input shared by two is computed once).
        frames = outputs | derived
        staged |= dict(zip(frames, concurrently(partial(ctx.stage_overwrite, df, t) for t, df in frames.items()),
                           strict=True))
        if day is not None:
            staged[silver.EVENTS] = day.stage()
        accounted = ctx.stage_slice(accounting, SILVER_ACCOUNTING, f"as_of_date = '{ctx.as_of.isoformat()}'")
    finally:
        for frame in [*cleansed.values(), cleansed_fx]:
            frame.unpersist()
    gated = silver_gate_frames(staged)
    if day is not None and staged[silver.EVENTS].isEmpty():
        del gated[silver.EVENTS]     # no event changed: nothing of silver.events is written, nothing to check
    ctx.gate({**gated, SILVER_ACCOUNTING: accounted})
    ctx.publish()
    if day is not None:
        day.release()
    counts = concurrently(partial(row_count, ctx.spark, t) if day is not None and t == silver.EVENTS
                          else staged[t].count for t in silver.TABLES)
    return dict(zip([t.name for t in silver.TABLES], counts, strict=True))


@dataclass
class EventsDay:
    """silver.events brought up to date from the last day's (`jobs.cleanse.incremental`): the day's
    outcomes for the accounting, and the MERGE to stage."""
    outcomes: DataFrame
    stage: Callable[[], DataFrame]
    persisted: list[DataFrame]

    def release(self) -> None:
        for frame in self.persisted:
            frame.unpersist()


def last_accounting(ctx: RunContext, erased: DataFrame | None) -> dict[str, Row] | None:
    """The accounting rows (per source) of the last cleanse before the date, if silver.events can be brought
    up to date from it: no later date cleansed (a backfill), each row knows the bronze rows it read
    (`loaded_through`), and nobody was erased since (an erasure deletes rows under the accounting)."""
    accounting = ctx.read(SILVER_ACCOUNTING)
    dates = accounting.agg(F.max("as_of_date").alias("latest"),
                           F.max(F.when(F.col("as_of_date") < F.lit(ctx.as_of), F.col("as_of_date"))).alias("last")
                           ).first()
    if dates.last is None or dates.latest > ctx.as_of or not table_exists(ctx.spark, silver.EVENTS.name):
        return None
    rows = {r.source: r for r in accounting.where(F.col("as_of_date") == F.lit(dates.last)).collect()}
    if any(source not in rows or rows[source].loaded_through is None for source in ("events", "orders")):
        return None
    if erased is not None:
        latest_erasure = erased.agg(F.max("added_at")).first()[0]
        if latest_erasure > min(rows["events"].loaded_through, rows["orders"].loaded_through):
            return None
    return rows


def events_day(ctx: RunContext, bronze: dict[str, DataFrame], erased: DataFrame | None,
               suppressed: Callable[[DataFrame], DataFrame]) -> EventsDay | None:
    """silver.events' day as a MERGE (only the devices the new rows touch derived again), or None when it
    must be derived whole: no usable last day (`last_accounting`), or that day's silver.events is not what
    those devices' bronze rows of then give (the premise of `jobs.cleanse.incremental`)."""
    last = last_accounting(ctx, erased)
    if last is None:
        return None
    conf = ctx.settings.cleanse
    patterns, gap = list(conf.test_account_email_patterns), conf.session_gap_minutes
    events, orders = bronze["events"], bronze["orders"]
    new_events = incremental.is_new(last["events"].as_of_date.isoformat(), last["events"].loaded_through)
    new_orders = incremental.is_new(last["orders"].as_of_date.isoformat(), last["orders"].loaded_through)
    published = ctx.read(silver.EVENTS)
    tests = cleanse.test_accounts(orders, patterns).localCheckpoint()
    devices = incremental.devices_to_derive(events, events.where(new_events), published, tests).localCheckpoint()
    now = suppressed(cleanse.cleanse_events(incremental.of_devices(events, devices), tests, gap)).persist()
    before = suppressed(cleanse.cleanse_events(incremental.of_devices(events.where(~new_events), devices),
                                               cleanse.test_accounts(orders.where(~new_orders), patterns), gap)
                        ).persist()
    published_here = incremental.of_devices(published, devices).persist()
    persisted = [now, before, published_here]
    kept_before = cleanse.kept(before)
    n_published, n_before, n_same, n_devices = concurrently([
        published_here.count, kept_before.count,
        kept_before.join(published_here, ["event_id", "device_id"], "left_semi").count, devices.count])
    if not (n_published == n_before == n_same and last["events"].kept_rows == row_count(ctx.spark, silver.EVENTS)):
        log.warning("cleanse: silver.events is not what the bronze rows of %s give (%d published events of the "
                    "devices, %d derived, %d the same); derived whole", last["events"].as_of_date, n_published,
                    n_before, n_same)
        for frame in persisted:
            frame.unpersist()
        return None
    log.info("cleanse: silver.events brought up to date from %s, %d devices derived again",
             last["events"].as_of_date, n_devices)
    upserts, deletes = incremental.event_changes(cleanse.kept(now), published_here)
    last_day = ctx.read(SILVER_ACCOUNTING).where((F.col("as_of_date") == F.lit(last["events"].as_of_date))
                                                 & (F.col("source") == "events"))
    day_outcomes = incremental.day_outcomes(incremental.accounted_outcomes(last_day), outcomes(before),
                                            outcomes(now))
    return EventsDay(day_outcomes, lambda: ctx.stage_changes(upserts, deletes, silver.EVENTS), persisted)


def silver_gate_frames(table: dict[Table, DataFrame]) -> dict[Table, DataFrame]:
    """Every silver table, with the reference flags its suite checks for integrity between tables."""
    frames = dict(table)
    orders, pos = table[silver.ORDERS], table[silver.POS_TRANSACTIONS]
    transactions = orders.select(F.col("order_id").alias("id")).unionByName(
        pos.select(F.col("transaction_id").alias("id")))
    frames[silver.ORDER_LINES] = with_reference(table[silver.ORDER_LINES], "transaction_id", transactions, "id",
                                                "transaction_found")
    frames[silver.EVENTS] = with_reference(table[silver.EVENTS], "order_id", orders, "order_id", "order_found")
    frames[silver.TICKETS] = with_reference(table[silver.TICKETS], "account_id", orders, "account_id",
                                            "account_found")
    frames[silver.REFERRALS] = with_reference(table[silver.REFERRALS], "referrer_loyalty_number",
                                              table[silver.CONTACTS], "loyalty_number", "referrer_found")
    return frames
