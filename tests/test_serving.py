"""Serving: the bi views through a real Spark Thrift Server and HiveServer2 client; gold through delta-rs.

The session's SparkSession (conftest) holds the test Derby metastore, and Derby admits one JVM, so
the server cannot share it. The test writes a small gold warehouse by path into its own folder and
starts `cdp serve` with its own, empty metastore there: the server registers the Delta tables it
finds by location (`register_tables`), as it would over any copied warehouse.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from jobs.delivery.serving import bi_views, read_table, table_path
from schemas.gold import (
    CUSTOMER_PROFILE,
    CUSTOMER_SEGMENTS,
    CUSTOMER_VALUE,
    KPI,
    LIFECYCLE_HISTORY,
    SEGMENT_MEMBERSHIP,
)
from tests.factories import frame, write_delta

pytestmark = pytest.mark.e2e

OLD, NEW = date(2026, 11, 19), date(2026, 11, 20)


def _value(as_of: date, customer: str, clv: float) -> dict:
    return {"as_of_date": as_of, "customer_id": customer, "time_unit": "week", "p_alive": 0.5, "clv": clv,
            "model_version": "m1"}


GOLD = {
    CUSTOMER_PROFILE: [
        {"customer_id": "C1", "given_name": "Ann", "email_masked": "a***@example.com", "country": "US",
         "email_opt_in": True, "as_of_date": NEW, "net_revenue": 120.0},
        {"customer_id": "C2", "given_name": "Bob", "email_masked": "b***@example.com", "country": "DE",
         "email_opt_in": False, "as_of_date": NEW},
    ],
    # An older scoring with other values: the views must read the latest only.
    CUSTOMER_VALUE: [_value(OLD, "C1", 1.0), _value(NEW, "C1", 300.0), _value(NEW, "C2", 10.0)],
    CUSTOMER_SEGMENTS: [
        {"as_of_date": OLD, "customer_id": "C1", "rfm_segment": "New", "lifecycle_stage": "new"},
        {"as_of_date": NEW, "customer_id": "C1", "rfm_segment": "Champions", "lifecycle_stage": "growing"},
        {"as_of_date": NEW, "customer_id": "C2", "rfm_segment": "Lost", "lifecycle_stage": "churned"},
    ],
    SEGMENT_MEMBERSHIP: [
        {"as_of_date": OLD, "segment_type": "rfm_segment", "segment": "New", "customer_id": "C1", "entered_on": OLD},
        {"as_of_date": NEW, "segment_type": "rfm_segment", "segment": "Champions", "customer_id": "C1",
         "entered_on": NEW},
    ],
    LIFECYCLE_HISTORY: [
        {"model": "lifecycle", "customer_id": "C1", "stage": "new", "valid_from": OLD, "valid_to": NEW},
        {"model": "lifecycle", "customer_id": "C1", "stage": "growing", "previous_stage": "new", "valid_from": NEW},
    ],
    KPI: [
        {"as_of_date": NEW, "grain": "day", "period_start": NEW, "segment_type": "all", "segment": "all",
         "kpi": "revenue", "value": 120.0},
        {"as_of_date": NEW, "grain": "month", "period_start": date(2026, 11, 1), "segment_type": "all",
         "segment": "all", "kpi": "revenue", "value": 900.0},
        {"as_of_date": OLD, "grain": "day", "period_start": OLD, "segment_type": "all", "segment": "all",
         "kpi": "revenue", "value": 5.0},
    ],
}


@pytest.fixture(scope="module")
def warehouse(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gold warehouse written by path, named in no metastore."""
    root = tmp_path_factory.mktemp("served") / "warehouse"
    for table, rows in GOLD.items():
        write_delta(frame(spark, table, rows), table, table_path(root, table))
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(proc: subprocess.Popen, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"cdp serve exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"cdp serve did not listen on {port} within {timeout} s")


@pytest.fixture(scope="module")
def thrift_port(warehouse: Path) -> Iterator[int]:
    port = _free_port()
    env = {**os.environ, "CDP_PROFILE": "test", "CDP__PATHS__WAREHOUSE": str(warehouse),
           "CDP__PATHS__METASTORE": str(warehouse.parent / "metastore")}
    cdp = Path(sys.executable).with_name("cdp")
    proc = subprocess.Popen([str(cdp), "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_port(proc, port, timeout=120)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _query(port: int, sql: str) -> list[tuple]:
    from pyhive import hive

    with hive.connect("127.0.0.1", port, database="bi", username="test") as conn:
        cursor = conn.cursor()
        cursor.execute(sql)
        return cursor.fetchall()


def test_bi_views_over_hiveserver2(thrift_port: int) -> None:
    assert sorted(r[1] for r in _query(thrift_port, "SHOW VIEWS IN bi")) == sorted(bi_views())

    rows = _query(thrift_port, "SELECT customer_id, email_masked, clv, rfm_segment, value_as_of "
                               "FROM customer_360 ORDER BY customer_id")
    assert rows == [("C1", "a***@example.com", 300.0, "Champions", "2026-11-20"),
                    ("C2", "b***@example.com", 10.0, "Lost", "2026-11-20")]
    columns = [r[0] for r in _query(thrift_port, "DESCRIBE customer_360")]
    assert not {"given_name", "family_name", "birth_year"} & set(columns)

    assert _query(thrift_port, "SELECT segment, customer_id FROM segment_membership") == [("Champions", "C1")]
    assert _query(thrift_port, "SELECT from_stage, to_stage, transition_date FROM lifecycle_transitions "
                               "ORDER BY transition_date") == [(None, "new", "2026-11-19"),
                                                               ("new", "growing", "2026-11-20")]
    assert _query(thrift_port, "SELECT period_start, value FROM kpi_daily") == [("2026-11-20", 120.0)]
    assert _query(thrift_port, "SELECT period_start, value FROM kpi_monthly") == [("2026-11-01", 900.0)]
    assert _query(thrift_port, "SELECT clv_decile, customers, total_clv, clv_share FROM clv_distribution "
                               "ORDER BY clv_decile") == [(1, 1, 10.0, 10 / 310), (2, 1, 300.0, 300 / 310)]


def test_gold_reads_without_spark(warehouse: Path) -> None:
    latest = read_table(warehouse, CUSTOMER_VALUE, as_of=NEW, columns=["customer_id", "clv"])
    pd.testing.assert_frame_equal(latest.sort_values("customer_id", ignore_index=True),
                                  pd.DataFrame({"customer_id": ["C1", "C2"], "clv": [300.0, 10.0]}))

    profile = read_table(warehouse, CUSTOMER_PROFILE)
    assert list(profile.columns) == CUSTOMER_PROFILE.column_names
    assert profile.set_index("customer_id").loc["C1", ["as_of_date", "net_revenue"]].tolist() == [NEW, 120.0]
