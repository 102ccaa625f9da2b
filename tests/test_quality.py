"""The quality gate runs real GX suites on real batches and stops the run on critical failures."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.platform.config import PROJECT_ROOT
from jobs.platform.quality import QualityGateFailed, gate, validate_frame

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
