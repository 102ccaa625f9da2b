"""Bronze and silver on the stage tier's warehouse (tests/stage_tier.py): every channel's lines loaded,
quarantined or deduplicated as the generator's truth says, silver's keys, masks, vault and conformed
values, a failed ingest batch that stays failed until released, and a cleanse gate that publishes nothing."""

from __future__ import annotations

import csv
import hashlib
import hmac
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.platform.config import Settings
from jobs.platform.pii import pii_keys
from schemas.ops import ROW_COUNTS
from schemas.raw import SOURCES
from tests.stage_tier import (
    AS_OF,
    EARLIER,
    assert_a_failing_gate_publishes_nothing,
    blind,
    release_batch,
    run,
    table_state,
    truth_records,
)

pytestmark = pytest.mark.stage


def test_every_line_is_loaded_quarantined_or_deduplicated_as_the_truth_says(
    landed: dict, settings: Settings, spark: SparkSession
) -> None:
    expected: dict[str, Counter] = {name: Counter() for name in SOURCES}
    for row in truth_records(settings):
        defects = row["defects"].split(";")
        copies = 1 + ("exact_duplicate" in defects) + ("replayed_event" in defects)
        if any(d.startswith("malformed_row") for d in defects):
            expected[row["source"]]["quarantined"] += copies
        else:
            expected[row["source"]]["loaded"] += 1
            expected[row["source"]]["deduplicated"] += copies - 1
    got = {
        r.source: r for r in spark.table("ops.ingest_accounting").groupBy("source").agg(
            *[F.sum(c).alias(c) for c in ROW_COUNTS]
        ).collect()
    }
    for name in ("contacts", "orders", "pos", "events", "tickets", "surveys", "campaign_events", "referrals"):
        e, g = expected[name], got[name]
        assert (g.rows_loaded, g.rows_quarantined, g.rows_deduplicated) == (
            e["loaded"], e["quarantined"], e["deduplicated"]), name
        assert g.rows_read == g.rows_loaded + g.rows_quarantined + g.rows_deduplicated
    assert got["fx_rates"].rows_loaded == settings.generator.history_days
    assert spark.table("bronze.events").count() == expected["events"]["loaded"]


def test_quarantine_reasons_cover_each_kind_of_break(landed: dict, spark: SparkSession) -> None:
    reasons = {r.reason_code for r in spark.table("ops.quarantine").select("reason_code").distinct().collect()}
    assert {"MALFORMED_ROW", "TYPE_MISMATCH", "IMPOSSIBLE_DATE", "MISSING_REQUIRED"} <= reasons
    assert spark.table("ops.quarantine").where("raw_payload IS NULL OR line_number < 1").count() == 0


def test_rerun_of_the_same_date_is_a_no_op(landed: dict, settings: Settings, spark: SparkSession) -> None:
    versions = {t: spark.sql(f"DESCRIBE HISTORY bronze.{t}").agg(F.max("version")).first()[0] for t in SOURCES}
    assert run(settings, AS_OF, "run-again", "ingest") == []
    assert versions == {t: spark.sql(f"DESCRIBE HISTORY bronze.{t}").agg(F.max("version")).first()[0]
                        for t in SOURCES}


def test_silver_removes_test_accounts_and_keeps_only_keys_and_masks(
    landed: dict, settings: Settings, spark: SparkSession
) -> None:
    key = pii_keys(settings).hmac_key
    persons = [r for p in (settings.paths.truth / "persons").glob("*.csv") for r in csv.DictReader(p.open())]
    test_keys = [hmac.new(key, p["email"].encode(), hashlib.sha256).hexdigest() for p in persons if p["is_test"] == "1"]
    real_keys = {hmac.new(key, p["email"].encode(), hashlib.sha256).hexdigest() for p in persons
                 if p["is_test"] == "0"}
    contacts = spark.table("silver.contacts")

    assert contacts.where(F.col("email_key").isin(test_keys)).count() == 0
    assert spark.table("silver.orders").where(F.col("email_key").isin(test_keys)).count() == 0
    contact_keys = {r.email_key for r in contacts.select("email_key").distinct().collect() if r.email_key}
    assert len(contact_keys & real_keys) > 0.85 * len(real_keys)
    for table in ("silver.contacts", "silver.orders", "silver.tickets", "silver.surveys", "silver.campaign_events"):
        columns = set(spark.table(table).columns)
        assert not columns & {"email", "phone", "street", "_email"}, table
    # Every bronze row (as of the date silver was cleansed for) is accounted for in silver: kept, merged into a
    # later version, or rejected with a reason.
    accounts = {r.source: r for r in spark.table("ops.silver_accounting").where(F.col("as_of_date") == EARLIER)
                .collect()}
    assert set(accounts) == set(SOURCES) and all(a.rows_add_up for a in accounts.values())
    for source, account in accounts.items():
        bronze = spark.table(f"bronze.{source}").where(F.col("_batch_id") <= EARLIER.isoformat())
        assert account.bronze_rows == bronze.count(), source
        assert account.kept_rows == spark.table(account.silver_table).count(), source
    assert accounts["contacts"].rejected_reasons["TEST_ACCOUNT"] > 0 and accounts["orders"].rejected_rows > 0


def test_vault_round_trips_with_the_key_and_is_unreadable_without(
    landed: dict, settings: Settings, spark: SparkSession
) -> None:
    from jobs.platform import pii

    keys = pii_keys(settings)
    vault = spark.table("silver.pii_vault").where("source = 'contacts' AND email_enc IS NOT NULL").limit(20)
    context = F.concat_ws("|", F.lit("contacts"), "record_id", F.lit("email"))
    decrypted = vault.select("email_key", "email_enc",
                             pii.decrypt(F.col("email_enc"), context, keys.encryption_key).alias("e")).collect()
    assert len(decrypted) == 20
    for row in decrypted:
        assert "@" in row.e and hmac.new(keys.hmac_key, row.e.encode(), hashlib.sha256).hexdigest() == row.email_key
        assert row.e.encode() not in bytes(row.email_enc)  # the stored bytes do not contain the address

    wrong = vault.select(pii.decrypt(F.col("email_enc"), context, b"x" * 32).alias("e"))
    with pytest.raises(Exception, match="Tag mismatch"):
        wrong.collect()
    moved = vault.select(pii.decrypt(F.col("email_enc"), F.lit("contacts|another-record|email"),
                                     keys.encryption_key).alias("e"))
    with pytest.raises(Exception, match="Tag mismatch"):
        moved.collect()  # a ciphertext copied to another row does not decrypt there


def test_pos_is_converted_to_utc_and_reporting_currency(landed: dict, spark: SparkSession) -> None:
    bronze = spark.table("bronze.pos").select("transaction_id", "local_ts", "amount")
    silver = spark.table("silver.pos_transactions").join(bronze.withColumnRenamed("amount", "eur"), "transaction_id")
    fx = spark.table("silver.fx_rates").where("currency = 'EUR'")
    row = silver.join(fx, silver.txn_date == fx.rate_date).select(
        "local_ts", "txn_ts", "eur", "amount_reporting", "rate").first()
    offset_hours = (row.local_ts - row.txn_ts).total_seconds() / 3600
    assert offset_hours in (1.0, 2.0)  # Berlin is UTC+1, or +2 in summer
    assert row.amount_reporting == pytest.approx(row.eur * row.rate, abs=0.01)


def test_events_attach_the_user_from_login_onward_and_derive_sessions(landed: dict, spark: SparkSession) -> None:
    events = spark.table("silver.events")
    bronze = spark.table("bronze.events").select("event_id", F.col("user_id").alias("sent_user"))
    joined = events.join(bronze, "event_id")
    attached = joined.where(F.col("sent_user").isNull() & F.col("user_id").isNotNull()).count()
    assert attached > 0  # anonymous events after a login on the same device got the user
    # No event gets a user before the device's first login.
    from pyspark.sql import Window

    first_login = events.where("event_type = 'login'").groupBy("device_id").agg(F.min("event_ts").alias("first"))
    early = joined.join(first_login, "device_id", "left").where(
        F.col("sent_user").isNull() & F.col("user_id").isNotNull()
        & (F.col("first").isNull() | (F.col("event_ts") < F.col("first"))))
    assert early.count() == 0
    # Within a session, consecutive events are at most 30 minutes apart.
    w = Window.partitionBy("session_id").orderBy("event_ts")
    gaps = events.withColumn("gap", F.col("event_ts").cast("long") - F.lag(F.col("event_ts").cast("long")).over(w))
    assert gaps.agg(F.max("gap")).first()[0] <= 30 * 60
    assert events.select("session_id").distinct().count() < events.count() / 2


def test_surveys_tickets_and_lines_are_conformed(landed: dict, spark: SparkSession) -> None:
    surveys = spark.table("silver.surveys")
    assert surveys.where("(survey_type = 'NPS' AND score NOT BETWEEN 0 AND 10) OR "
                         "(survey_type = 'CSAT' AND score NOT BETWEEN 1 AND 5)").count() == 0
    assert surveys.where("survey_type = 'NPS' AND score >= 9 AND nps_category != 'promoter'").count() == 0
    tickets = spark.table("silver.tickets")
    assert tickets.where("first_response_minutes < 0 OR resolution_hours < 0").count() == 0
    lines = spark.table("silver.order_lines")
    assert {r.source for r in lines.select("source").distinct().collect()} == {"orders", "pos"}
    orders_total = spark.table("silver.orders").where("status = 'completed'").agg(F.sum("net_amount")).first()[0]
    lines_total = lines.where("source = 'orders' AND is_net").agg(F.sum("line_amount_reporting")).first()[0]
    assert lines_total == pytest.approx(orders_total, rel=1e-3)


def test_stages_run_without_the_ground_truth(landed: dict, settings: Settings) -> None:
    # Every stage of this module runs through `run`, whose truth folder is missing.
    assert not blind(settings).paths.truth.exists() and (settings.paths.truth / "records").is_dir()
    assert landed["results"] and landed["silver"]["silver.contacts"] > 0


def test_a_failed_ingest_batch_fails_again_on_rerun_until_released(
    landed: dict, settings: Settings, spark: SparkSession
) -> None:
    from jobs.platform.quality import QualityGateFailed

    day = AS_OF + timedelta(days=1)
    landing = settings.paths.landing / "orders" / day.isoformat()
    landing.mkdir(parents=True)
    (landing / "part-corrupt.jsonl").write_text("\n".join(['{"order_id": "x1", "broken'] * 20) + "\n")
    published = {name: table_state(spark, name) for name in ("bronze.orders", "ops.ingest_accounting")}
    for attempt in ("run-bad-batch", "run-bad-batch-again"):       # the rerun finds the batch pending, and fails
        with pytest.raises(QualityGateFailed, match="quarantine_share"):
            run(settings, day, attempt, "ingest")
        assert {name: table_state(spark, name) for name in published} == published
    # The quarantined lines are recorded for the operator even though the batch did not load.
    assert spark.table("ops.quarantine").where(F.col("batch_id") == day.isoformat()).count() == 20

    released = release_batch(spark, settings, "orders", day.isoformat())
    results = run(settings, day, "run-bad-batch-released", "ingest")
    assert [(r.source, r.batch_id, r.rows_read, r.rows_quarantined) for r in results] == \
        [("orders", day.isoformat(), 20, 20)] and released
    accounting = spark.table("ops.ingest_accounting").where(F.col("batch_id") == day.isoformat()).first()
    assert accounting.rows_read == accounting.rows_quarantined == 20
    # The gate still ran and recorded its failure, under the released batches' name.
    failures = spark.table("ops.dq_results").where(
        "run_id = 'run-bad-batch-released' AND stage = 'ingest-released' AND NOT success")
    assert {r.table_name for r in failures.collect()} == {"ops.ingest_accounting", "bronze.orders"}




@pytest.mark.slow   # the mechanism is the same for every stage: tests/test_stages.py runs it for profile
def test_a_failing_cleanse_gate_leaves_every_published_table_as_it_was(
    landed: dict, settings: Settings, spark: SparkSession, tmp_path: Path
) -> None:
    assert_a_failing_gate_publishes_nothing(spark, settings, tmp_path, "cleanse", "silver.contacts",
                                            ["silver.contacts", "silver.orders", "silver.pii_vault", "silver.events"])


