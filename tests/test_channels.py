"""Every channel through bronze, silver, identity resolution and the profile, checked against the ground truth."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import re
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest
from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F

from jobs.config import Settings
from jobs.export import read_manifests
from jobs.generate import generate
from jobs.identity import record_customers
from jobs.pipeline import (
    RunContext,
    clv_model_in_force,
    customer_transactions,
    pii_keys,
    run_cleanse,
    run_export,
    run_ingest,
    run_insights,
    run_profile,
    run_refit,
    run_resolve,
    run_segments,
    run_value,
    silver_by_source,
)
from jobs.resolution_quality import pairwise_scores
from schemas.ops import ROW_COUNTS
from schemas.raw import SOURCES

AS_OF = date(2026, 11, 20)
PEOPLE = 300


@pytest.fixture(scope="module")
def landed(settings: Settings, empty_warehouse_module: SparkSession) -> dict:
    summary = generate(settings.section("generator"), settings.paths.landing, settings.paths.truth,
                       customers=PEOPLE)
    ctx = RunContext.create(settings, AS_OF, "run-channels")
    results = run_ingest(ctx)
    counts = run_cleanse(ctx)
    return {"summary": summary, "results": results, "silver": counts}


@pytest.fixture(scope="module")
def empty_warehouse_module(spark: SparkSession) -> SparkSession:
    from jobs.runtime import DATABASES

    for database in DATABASES:
        for table in spark.catalog.listTables(database):
            spark.sql(f"DROP TABLE IF EXISTS {database}.{table.name}")
    return spark


def _truth(settings: Settings) -> list[dict]:
    return [row for p in sorted((settings.paths.truth / "records").glob("*.csv")) for row in csv.DictReader(p.open())]


def test_every_line_is_loaded_quarantined_or_deduplicated_as_the_truth_says(
    landed: dict, settings: Settings, spark: SparkSession
) -> None:
    expected: dict[str, Counter] = {name: Counter() for name in SOURCES}
    for row in _truth(settings):
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
    assert got["fx_rates"].rows_loaded == settings.section("generator")["history_days"]
    assert spark.table("bronze.events").count() == expected["events"]["loaded"]


def test_quarantine_reasons_cover_each_kind_of_break(landed: dict, spark: SparkSession) -> None:
    reasons = {r.reason_code for r in spark.table("ops.quarantine").select("reason_code").distinct().collect()}
    assert {"MALFORMED_ROW", "TYPE_MISMATCH", "IMPOSSIBLE_DATE", "MISSING_REQUIRED"} <= reasons
    assert spark.table("ops.quarantine").where("raw_payload IS NULL OR line_number < 1").count() == 0


def test_rerun_of_the_same_date_is_a_no_op(landed: dict, settings: Settings, spark: SparkSession) -> None:
    versions = {t: spark.sql(f"DESCRIBE HISTORY bronze.{t}").agg(F.max("version")).first()[0] for t in SOURCES}
    assert run_ingest(RunContext.create(settings, AS_OF, "run-again")) == []
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


def test_vault_round_trips_with_the_key_and_is_unreadable_without(
    landed: dict, settings: Settings, spark: SparkSession
) -> None:
    from jobs import pii

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
    with pytest.raises(Exception, match="InvalidTag"):
        wrong.collect()
    moved = vault.select(pii.decrypt(F.col("email_enc"), F.lit("contacts|another-record|email"),
                                     keys.encryption_key).alias("e"))
    with pytest.raises(Exception, match="InvalidTag"):
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


def test_ground_truth_directory_is_not_read_by_the_pipeline() -> None:
    stages = ("ingest", "cleanse", "matching", "identity", "profile", "pipeline", "quality", "airflow_tasks",
              "standardise", "pii", "tables", "contact_list", "clv", "btyd")
    code = "\n".join((Path("jobs") / f"{module}.py").read_text() for module in stages)
    assert "truth" not in code


EARLIER = date(2026, 11, 18)


def _graph(spark: SparkSession) -> dict[str, str]:
    return {r.node: r.customer_id for r in spark.table("gold.identity_graph").collect()}


@pytest.fixture(scope="module")
def resolved(landed: dict, settings: Settings, spark: SparkSession) -> dict:
    """Resolution as of an earlier day, then as of the sample's last day (two more daily batches)."""
    earlier = RunContext.create(settings, EARLIER, "run-resolve-earlier")
    run_cleanse(earlier)
    run_resolve(earlier)
    before = _graph(spark)
    later = RunContext.create(settings, AS_OF, "run-resolve-later")
    run_cleanse(later)
    summary = run_resolve(later)
    return {"before": before, "summary": summary, "settings": settings}


def test_resolution_meets_its_quality_target_against_the_truth(resolved: dict, settings: Settings,
                                                              spark: SparkSession) -> None:
    truth = spark.createDataFrame([(f"{r['source']}:{r['record_id']}", r["person_id"]) for r in _truth(settings)],
                                  "record string, person_id string")
    mapped = record_customers(spark.table("gold.identity_graph"), silver_by_source(spark)).select(
        F.concat_ws(":", "source", "record_id").alias("record"), "customer_id")
    overall = pairwise_scores(mapped, truth)
    contacts = pairwise_scores(mapped.where("record LIKE 'contacts:%'"), truth)
    assert overall.records > 0.9 * spark.table("silver.orders").count()
    assert overall.precision >= 0.99 and overall.f1 >= 0.98, overall
    assert contacts.precision >= 0.99 and contacts.f1 >= 0.98, contacts
    assert contacts.customers <= 1.02 * contacts.persons


def test_customer_ids_survive_new_batches_unless_merged_or_split(resolved: dict, spark: SparkSession) -> None:
    before, after = resolved["before"], _graph(spark)
    history = spark.table("gold.customer_id_history").where("run_id = 'run-resolve-later'")
    explained = {r.old_customer_id for r in history.where("change IN ('merged', 'split')").collect()}
    changed = {n for n in before if n in after and after[n] != before[n]}
    assert all(before[n] in explained for n in changed)
    assert len(changed) <= 0.01 * len(before)
    assert len(after) > len(before)                      # the two later batches brought new identifiers
    assert set(after.values()) >= {before[n] for n in before if n not in changed and before[n] not in explained}


def test_rerunning_resolution_changes_nothing(resolved: dict, settings: Settings, spark: SparkSession) -> None:
    before = _graph(spark)
    run_resolve(RunContext.create(settings, AS_OF, "run-resolve-again"))
    assert _graph(spark) == before
    assert spark.table("gold.customer_id_history").where("run_id = 'run-resolve-again'").count() == 0
    runs = spark.table("ops.resolution_runs").where("run_id = 'run-resolve-again'").first()
    assert runs.ids_merged == runs.ids_split == 0 and runs.customers == len(set(before.values()))


def test_profile_accounts_for_every_customer_and_transaction(resolved: dict, settings: Settings,
                                                             spark: SparkSession) -> None:
    run_profile(RunContext.create(settings, AS_OF, "run-profile"))
    profile = spark.table("gold.customer_profile")
    customers = spark.table("gold.identity_graph").select("customer_id").distinct().count()
    assert profile.count() == customers == profile.select("customer_id").distinct().count()
    totals = profile.agg(F.sum("order_count"), F.sum("store_transactions"), F.sum("contact_records"),
                         F.sum("tickets")).first()
    assert totals[0] == spark.table("silver.orders").where("status = 'completed'").count()
    assert totals[1] == spark.table("silver.pos_transactions").where("loyalty_number IS NOT NULL").count()
    assert totals[2] == spark.table("silver.contacts").count()
    assert totals[3] == spark.table("silver.tickets").count()
    assert profile.where("age_band IS NULL AND age >= 18").count() == 0
    assert profile.where("given_name IS NOT NULL").count() > 0.9 * profile.where("contact_records > 0").count()


def test_value_stage_scores_every_buying_customer_with_a_validated_model(
    resolved: dict, settings: Settings, spark: SparkSession
) -> None:
    summary = run_value(RunContext.create(settings, AS_OF, "run-value"))
    values = spark.table("gold.customer_value").where(F.col("as_of_date") == AS_OF)
    buyers = spark.table("gold.customer_profile").where("order_count + store_transactions > 0").count()
    assert values.count() == buyers == values.select("customer_id").distinct().count()
    assert values.where("p_alive < 0 OR p_alive > 1 OR current_value < 0 OR clv < historical_value").count() == 0
    assert values.where("potential_value > 0").count() > 0            # referrers get credit
    model = spark.table("ops.clv_models").where(F.col("model_version") == summary["model_version"]).first()
    # Customers whose first purchase is on the as-of day have T = 0: scored, but nothing to fit.
    assert model.promoted and 0.9 * buyers <= model.customers <= buyers and model.distinct_points <= model.customers
    holdout = spark.table("ops.clv_holdout").where(F.col("model_version") == model.model_version)
    assert holdout.agg(F.sum("customers")).first()[0] > 0
    assert (settings.paths.warehouse.parent / "reports" / "clv" / f"{model.model_version}.png").is_file()
    horizons = {r.horizon_days for r in spark.table("gold.customer_forecast").select("horizon_days").distinct()
                .collect()}
    assert horizons == set(settings.section("clv")["horizons_days"])
    # Rerunning the date gives the same model and the same scores.
    again = run_value(RunContext.create(settings, AS_OF, "run-value-again"))
    assert again["model_version"] == summary["model_version"]
    assert spark.table("gold.customer_value").where(F.col("as_of_date") == AS_OF).count() == buyers


def test_a_refit_scores_only_from_its_date_on(resolved: dict, settings: Settings, spark: SparkSession) -> None:
    daily_model = clv_model_in_force(spark, AS_OF)
    week_before = AS_OF - timedelta(days=7)
    refit = run_refit(RunContext.create(settings, week_before, "run-refit"))
    assert refit["promoted"] and refit["decision"] == "first model"     # nothing was in force before it
    assert refit["model_version"].startswith("clv-20261113-")
    # The model fitted on the 13th scores the days up to the 19th; the 20th keeps the one fitted on the 20th.
    assert clv_model_in_force(spark, AS_OF - timedelta(days=1))["model_version"] == refit["model_version"]
    assert clv_model_in_force(spark, AS_OF)["model_version"] == daily_model["model_version"]
    assert clv_model_in_force(spark, week_before - timedelta(days=1)) is None


def test_segments_stage_gives_every_customer_a_stage_and_keeps_history_once(
    resolved: dict, settings: Settings, spark: SparkSession
) -> None:
    summary = run_segments(RunContext.create(settings, AS_OF, "run-segments"))
    run_segments(RunContext.create(settings, AS_OF, "run-segments-again"))

    customers = spark.table("gold.customer_profile").count()
    today = spark.table("gold.customer_segments").where(F.col("as_of_date") == AS_OF)
    assert today.count() == customers == summary["customers"]
    buyers = today.where("frequency > 0")
    # Every buying customer has RFM scores, a named segment, a cluster and a value quadrant.
    assert buyers.where("rfm_segment IS NULL OR cluster IS NULL OR value_quadrant IS NULL").count() == 0
    assert today.where("frequency = 0").select("lifecycle_stage").distinct().collect() == \
        [Row(lifecycle_stage="prospect")]
    # The rerun added no history: one open row per customer per model.
    history = spark.table("gold.lifecycle_history")
    assert history.count() == history.where("valid_to IS NULL").count() == 2 * customers
    membership = spark.table("gold.segment_membership").where(F.col("as_of_date") == AS_OF)
    assert membership.where("segment_type = 'lifecycle_stage'").count() == customers
    assert spark.table("gold.value_matrix").where(F.col("as_of_date") == AS_OF).agg(
        F.sum("customers")).first()[0] == buyers.count()


def test_insights_stage_reports_kpis_rules_and_sentiment_that_agree_with_the_other_tables(
    resolved: dict, settings: Settings, spark: SparkSession
) -> None:
    summary = run_insights(RunContext.create(settings, AS_OF, "run-insights"))
    assert run_insights(RunContext.create(settings, AS_OF, "run-insights-again")) == summary   # a rerun replaces

    kpi = spark.table("gold.kpi").where(F.col("as_of_date") == AS_OF)
    assert kpi.count() == summary["gold.kpi"] > 0
    # Revenue over every reported day equals the completed purchases of resolved customers on those days.
    first_day = kpi.where("grain = 'day'").agg(F.min("period_start")).first()[0]
    revenue = kpi.where("grain = 'day' AND segment_type = 'all' AND kpi = 'revenue'").agg(F.sum("value")).first()[0]
    graph = spark.table("gold.identity_graph")
    bought = customer_transactions(graph, silver_by_source(spark)).where(
        F.to_date("ts").between(first_day, AS_OF)).agg(F.sum("amount")).first()[0]
    assert revenue == pytest.approx(bought)
    # Each lifecycle stage's active customers add up to everyone's (the stages partition the customers).
    month = kpi.where("grain = 'month' AND kpi = 'active_customers'").groupBy("period_start").pivot(
        "segment_type", ["all", "lifecycle_stage"]).agg(F.sum("value")).collect()
    assert month and all(r["all"] == r["lifecycle_stage"] for r in month)
    assert kpi.where("kpi = 'feedback_sentiment'").count() > 0

    rules = spark.table("gold.association_rules").where(F.col("as_of_date") == AS_OF)
    assert {r.basket_level for r in rules.select("basket_level").distinct().collect()} == {"category", "product"}
    suggestions = spark.table("gold.cross_sell").where(F.col("as_of_date") == AS_OF)
    assert suggestions.count() > 0 and suggestions.where("lift <= 1").count() == 0
    sentiment = spark.table("gold.customer_sentiment").where(F.col("as_of_date") == AS_OF)
    profile = spark.table("gold.customer_profile")
    assert sentiment.join(profile, "customer_id", "left_anti").count() == 0    # every writer is a customer
    assert sentiment.count() > 0.2 * profile.count()


def test_export_stage_publishes_the_scheduled_segments_once_per_date(
    resolved: dict, settings: Settings, spark: SparkSession
) -> None:
    summary = run_export(RunContext.create(settings, AS_OF, "run-export"))
    scheduled = settings.section("export")["scheduled"]
    assert len(summary) == len(scheduled)
    exported = {name: rows for name, rows in summary.items() if isinstance(rows, dict)}
    assert exported and all(rows["members"] > 0 for rows in exported.values())
    manifests = read_manifests(settings.paths.exports)
    assert len(manifests) == len(exported) and {m["as_of_date"] for m in manifests} == {AS_OF.isoformat()}
    # Every exported e-mail belongs to a customer who opted in and did not unsubscribe.
    opted_in = {r.customer_id for r in spark.table("gold.customer_profile")
                .where("email_opt_in AND NOT unsubscribed").select("customer_id").collect()}
    for manifest in manifests:
        members = spark.read.format(manifest["format"]).option("header", True).load(
            str(settings.paths.exports / manifest["export_id"] / "members"))
        assert members.count() == manifest["rows"]["members"]
        assert {r.customer_id for r in members.select("customer_id").collect()} <= opted_in
    again = run_export(RunContext.create(settings, AS_OF, "run-export-again"))
    assert {name: again[name] for name in exported} == {name: "exported before" for name in exported}
    assert len(read_manifests(settings.paths.exports)) == len(manifests)


def test_a_giant_cluster_stops_resolution_before_anything_is_published(
    resolved: dict, settings: Settings, spark: SparkSession
) -> None:
    from jobs.quality import QualityGateFailed
    from jobs.tables import overwrite
    from schemas.silver import CONTACTS

    graph_version = spark.sql("DESCRIBE HISTORY gold.identity_graph").agg(F.max("version")).first()[0]
    # A hotline number typed into 60 people's contacts chains them into one customer.
    contacts = spark.table("silver.contacts").localCheckpoint()
    hub = F.col("contact_id").isin([r.contact_id for r in contacts.orderBy("contact_id").limit(60).collect()])
    overwrite(contacts.withColumn("phone_key", F.when(hub, F.lit("hotline")).otherwise(F.col("phone_key"))), CONTACTS)
    try:
        with pytest.raises(QualityGateFailed, match=r"largest customer has \d+ nodes .* worst: CU-"):
            run_resolve(RunContext.create(settings, AS_OF, "run-resolve-hub"))
    finally:
        overwrite(contacts, CONTACTS)
    assert spark.sql("DESCRIBE HISTORY gold.identity_graph").agg(F.max("version")).first()[0] == graph_version
    checks = spark.table("ops.resolution_checks").where("run_id = 'run-resolve-hub' AND breach IS NOT NULL")
    assert {r.check_name for r in checks.collect()} >= {"largest_cluster", "conflicting_share"}


def test_erasure_leaves_nothing_of_the_person_in_tables_or_data_files(
    resolved: dict, settings: Settings, spark: SparkSession
) -> None:
    # Last in the module: the vacuum leaves no time travel behind it.
    import pyarrow.parquet as pq

    from jobs import pii
    from jobs.privacy import ErasureError, ErasureRequest, erase, erased_customers, person_records

    with pytest.raises(ErasureError, match="no customer with that email"):
        erase(spark, settings, ErasureRequest(email="nobody@nowhere.example"), "test")
    # A buying customer with an e-mail in the vault, named by that e-mail as a person would type it.
    keys = pii_keys(settings)
    graph = spark.table("gold.identity_graph")
    buyers = spark.table("gold.customer_profile").where("order_count > 0 AND email_masked IS NOT NULL")
    contact = graph.where("node_type = 'contact'").join(buyers.select("customer_id"), "customer_id") \
        .select("customer_id", F.substring_index("node", ":", -1).alias("record_id"))
    row = spark.table("silver.pii_vault").where("source = 'contacts' AND email_enc IS NOT NULL").join(
        contact, "record_id").orderBy("customer_id").select("customer_id", pii.decrypt(
            F.col("email_enc"), F.concat_ws("|", F.lit("contacts"), "record_id", F.lit("email")),
            keys.encryption_key).alias("email")).first()
    customer_id, email = row.customer_id, row.email
    records = {r.record_id for r in person_records(graph, silver_by_source(spark), customer_id).collect()}
    assert len(records) > 2                                   # a contact, an order and more

    audit = erase(spark, settings, ErasureRequest(email=f"  {email.upper()} "), "test")
    assert audit["customer_id"] == customer_id and audit["request_kind"] == "email"
    assert audit["rows_deleted"]["gold.identity_graph"] > 0 and audit["rows_deleted"]["bronze.orders"] > 0
    assert email not in json.dumps(audit, default=str)        # the audit names the person by a keyed hash only

    # The person's ids, record ids and e-mail as whole words, in any case (raw lines keep the case typed).
    mention = "|".join(re.escape(n.lower()) for n in {customer_id, email, *records})
    pattern = f"(^|[^a-z0-9._%+-])({mention})($|[^a-z0-9._%+-])"
    for database in ("bronze", "silver", "gold", "ops"):
        for table in spark.catalog.listTables(database):
            name = f"{database}.{table.name}"
            if name == "ops.erasures":
                continue
            # Current versions: no row mentions the person.
            text = spark.table(name).select(F.lower(F.to_json(F.struct("*"))).alias("j"))
            assert text.where(F.col("j").rlike(pattern)).count() == 0, name
            # Data files: what is left on disk after the vacuum holds none of it either.
            location = Path(spark.sql(f"DESCRIBE DETAIL {name}").first()["location"].removeprefix("file:"))
            for data_file in location.rglob("*.parquet"):
                rows = json.dumps(pq.read_table(data_file).to_pylist(), default=str).lower()
                assert not re.search(pattern, rows), data_file
    assert customer_id in {r.customer_id for r in erased_customers(spark).collect()}
