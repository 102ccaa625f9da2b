"""The quality gate runs real GX suites on real batches and stops the run on critical failures."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.ingest.accounting import accounting_frame
from jobs.platform.config import PROJECT_ROOT
from jobs.platform.quality import QualityGateFailed, gate, reads_materialised_rows, suite_columns, validate_frame

SUITES = PROJECT_ROOT / "expectations"
NOW = datetime(2026, 11, 20, tzinfo=UTC)


def _orders(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    """silver.orders-shaped rows from (order_id, order_ts, status, net_amount, gross_amount)."""
    df = spark.createDataFrame(
        rows, "order_id string, order_ts timestamp, status string, net_amount double, gross_amount double")
    return df.withColumn("net_amount_reporting", F.col("net_amount")).withColumn("email_key", F.lit("ab" * 32))


def test_gate_passes_a_good_batch_and_records_every_result(spark: SparkSession) -> None:
    good = _orders(spark, [("o1", NOW, "completed", 10.0, 10.0), ("o2", NOW, "returned", 0.0, 12.0)])
    outcomes = gate(spark, "cleanse", {"silver.orders": good}, SUITES, "run-good", NOW)

    assert outcomes and all(o.success for o in outcomes)
    stored = spark.table("ops.dq_results").where("run_id = 'run-good'").collect()
    assert len(stored) == len(outcomes)
    assert {r.expectation_type for r in stored} >= {"expect_column_values_to_be_unique"}


def test_gate_fails_a_broken_batch_with_a_readable_summary(spark: SparkSession) -> None:
    broken = _orders(spark, [("o1", NOW, "completed", 10.0, 10.0), ("o1", NOW, "lost", -5.0, 10.0)])
    with pytest.raises(QualityGateFailed) as failure:
        gate(spark, "cleanse", {"silver.orders": broken}, SUITES, "run-bad", NOW)

    message = str(failure.value)
    assert "quality gate 'cleanse' failed: 3 critical" in message
    assert "silver.orders: expect_column_values_to_be_unique(order_id) failed (2 rows" in message
    assert "expect_column_values_to_be_in_set(status) failed (1 rows, e.g. [\"lost\"])" in message
    assert "expect_column_values_to_be_between(net_amount)" in message
    failed = spark.table("ops.dq_results").where("run_id = 'run-bad' AND NOT success").count()
    assert failed == 3


def test_a_staged_frame_is_validated_in_place_with_the_same_results(spark: SparkSession) -> None:
    rows = [("o1", NOW, "completed", 10.0, 10.0), ("o1", NOW, "lost", -5.0, 10.0), ("o2", NOW, "completed", 1.0, 1.0)]
    staged = _orders(spark, rows).localCheckpoint()
    # A staged frame, or a slice of it, is scanned where it is; anything computed is cached for the suite.
    assert reads_materialised_rows(staged) and reads_materialised_rows(staged.where("order_id = 'o1'"))
    assert not reads_materialised_rows(_orders(spark, rows))
    assert not reads_materialised_rows(staged.join(staged.select("order_id"), "order_id"))
    # A caller's cached frame, cut to a suite's columns, is read from that cache, not cached again.
    cached = _orders(spark, rows).join(staged.select("order_id").distinct(), "order_id").persist()
    assert reads_materialised_rows(cached.select("order_id", "status"))
    cached.unpersist()
    # Only what the suite checks is scanned: the pair, the unique id, and a source to name, if any.
    suite = {"expectations": [{"type": "expect_column_values_to_be_unique", "kwargs": {"column": "order_id"}},
                              {"type": "expect_column_pair_values_a_to_be_greater_than_b",
                               "kwargs": {"column_A": "gross_amount", "column_B": "net_amount"}}]}
    assert suite_columns(staged, suite).columns == ["order_id", "net_amount", "gross_amount"]
    assert suite_columns(staged.withColumn("source", F.lit("orders")), suite).columns[-1] == "source"
    assert suite_columns(staged, {"expectations": [{"type": "expect_table_row_count_to_be_between",
                                                    "kwargs": {"min_value": 1}}]}).columns == staged.columns

    with pytest.raises(QualityGateFailed) as failure:
        gate(spark, "cleanse", {"silver.orders": staged.where("order_id = 'o1'")}, SUITES, "run-staged", NOW)
    failed = {(r.expectation_type, r.column_name) for r in spark.table("ops.dq_results")
              .where("run_id = 'run-staged' AND NOT success").collect()}
    assert ("expect_column_values_to_be_unique", "order_id") in failed
    assert "silver.orders" in str(failure.value)


def test_warnings_are_recorded_but_do_not_stop_the_run(spark: SparkSession) -> None:
    outlier = _orders(spark, [("o1", NOW, "completed", 90000.0, 90000.0)])
    outcomes = validate_frame(outlier, "silver.orders", {"name": "t", "expectations": [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "gross_amount", "max_value": 5000},
         "severity": "warning"}]})
    assert [(o.success, o.severity) for o in outcomes] == [(False, "warning")]
    recorded = gate(spark, "cleanse", {"silver.orders": outlier}, SUITES, "run-warn", NOW)  # does not raise
    assert [o.expectation_id for o in recorded if not o.success] == ["expect_column_values_to_be_between(gross_amount)"]


def test_gate_renders_data_docs(spark: SparkSession, tmp_path: Path) -> None:
    good = _orders(spark, [("o1", NOW, "completed", 10.0, 10.0)])
    gate(spark, "cleanse", {"silver.orders": good}, SUITES, "run-docs", NOW, docs_dir=tmp_path)

    pages = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.html")]
    assert "index.html" in pages
    assert any(p.startswith("validations/silver/orders/run-docs-cleanse/") for p in pages)
    assert "silver.orders" in (tmp_path / "index.html").read_text()


def test_nan_or_infinity_in_any_floating_column_fails_a_silver_or_gold_gate(spark: SparkSession) -> None:
    # A NaN passes the suite's `>= 0` (every comparison with NaN is false): the finite check catches it.
    bad = _orders(spark, [("o1", NOW, "completed", float("nan"), 10.0), ("o2", NOW, "completed", 5.0, float("inf")),
                          ("o3", NOW, "completed", 5.0, 5.0)])
    with pytest.raises(QualityGateFailed) as failure:
        gate(spark, "cleanse", {"silver.orders": bad}, SUITES, "run-nan", NOW)
    message = str(failure.value)
    assert "silver.orders: expect_column_values_to_be_null(non_finite_columns) failed (2 rows" in message
    assert "net_amount,net_amount_reporting" in message and "gross_amount" in message
    assert "1 critical" in message    # nothing else in the suite saw the NaN


def test_a_breached_share_names_the_sources_and_personal_samples_are_masked(spark: SparkSession) -> None:
    # One bad row is forgiven (referrals: 1 of 16 is 6%); a wholly bad small batch (surveys) is not.
    files = spark.createDataFrame(
        [("pos", "2026-11-19", 100, 60, 40, 0), ("orders", "2026-11-19", 100, 99, 1, 0),
         ("referrals", "2026-11-19", 16, 15, 1, 0), ("surveys", "2026-11-19", 3, 0, 3, 0)],
        "source string, batch_id string, rows_read long, rows_loaded long, rows_quarantined long, "
        "rows_deduplicated long")
    accounting = accounting_frame(files, files.limit(0))
    shares = {r.source: (r.quarantine_share, r.quarantine_share_after_grace) for r in accounting.collect()}
    assert shares == {"pos": (0.4, 0.39), "orders": (0.01, 0.0), "referrals": (0.0625, 0.0), "surveys": (1.0, 2 / 3)}
    breach = r"expect_column_values_to_be_between\(quarantine_share_after_grace\) failed \(2 rows, sources pos, surveys"
    with pytest.raises(QualityGateFailed, match=breach + r", e\.g\. \[0\.39, 0\.66") as failed:
        gate(spark, "ingest", {"ops.ingest_accounting": accounting}, SUITES, "run-share", NOW)
    assert "1 critical" in str(failed.value)     # the 2% warning on the plain share is not critical

    contacts = spark.createDataFrame([("c1", "ann.lee@example.com")], "contact_id string, email string")
    [outcome] = validate_frame(contacts, "bronze.contacts", {"name": "t", "expectations": [
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "email", "regex": "^x"}}]})
    assert outcome.unexpected_sample == '["a*** (19 chars)"]'
