"""The cleanse stage: bronze as of the logical date -> silver and the PII vault, staged, gated with
the integrity checks between silver tables, then published."""

from __future__ import annotations

from datetime import date
from functools import partial

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.cleanse import sources as cleanse
from jobs.cleanse.accounting import silver_accounting
from jobs.cleanse.suppression import reject_erased
from jobs.ingest.batches import unsealed_bronze
from jobs.platform.context import RunContext
from jobs.platform.pii import pii_keys
from jobs.platform.quality import with_reference
from jobs.platform.tables import concurrently
from schemas import Table, silver
from schemas.bronze import TABLES as BRONZE
from schemas.ops import ERASED_SUBJECTS, SILVER_ACCOUNTING
from schemas.raw import SOURCES
from schemas.silver import IDENTIFIERS


def bronze_as_of(bronze: DataFrame, as_of: date) -> DataFrame:
    return bronze.where(F.col("_batch_id") <= F.lit(as_of.isoformat()))


def run_cleanse(ctx: RunContext) -> dict[str, int]:
    """Rebuild silver from bronze as of the logical date (and the PII vault); publish it if it passes."""
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
    if not erased.isEmpty():    # the usual day: nobody erased, no identifier to hash
        source_of = {table: source for source, table in silver.OF_SOURCE.items()}
        cleansed = {table: reject_erased(frame, source_of[table], erased, keys.hmac_key)
                    if source_of[table] in IDENTIFIERS else frame for table, frame in cleansed.items()}
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
    by_source = {source: (table.name, frame_of[table]) for source, table in silver.OF_SOURCE.items()}
    accounting = silver_accounting(bronze, by_source, ctx.as_of, ctx.run_id)
    try:
        # Independent tables, staged side by side (a persisted input shared by two is computed once).
        frames = outputs | derived
        staged |= dict(zip(frames, concurrently(partial(ctx.stage_overwrite, df, t) for t, df in frames.items()),
                           strict=True))
        accounted = ctx.stage_slice(accounting, SILVER_ACCOUNTING, f"as_of_date = '{ctx.as_of.isoformat()}'")
    finally:
        for frame in [*cleansed.values(), cleansed_fx]:
            frame.unpersist()
    ctx.gate({**silver_gate_frames(staged), SILVER_ACCOUNTING: accounted})
    ctx.publish()
    return dict(zip([t.name for t in silver.TABLES], concurrently(staged[t].count for t in silver.TABLES),
                    strict=True))


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
