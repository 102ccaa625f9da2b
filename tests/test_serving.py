"""Serving: the bi views through a real Spark Thrift Server and HiveServer2 client; gold through delta-rs.

The test writes a small warehouse by path (gold, and the PII vault) into its own folder, adds a user with
`cdp serve-user add`, and starts `cdp serve` over it once for every check: logins, the views, what the
analyst cannot see and cannot do, and the audit log.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from jobs.delivery.serving import bi_views, read_table, table_path
from jobs.delivery.serving_auth import ServingAuthError, add_user, hash_password, read_users, server_properties
from jobs.platform.config import load_settings
from schemas.gold import (
    CUSTOMER_PROFILE,
    CUSTOMER_SEGMENTS,
    CUSTOMER_VALUE,
    KPI,
    LIFECYCLE_HISTORY,
    SEGMENT_MEMBERSHIP,
)
from schemas.silver import PII_VAULT
from schemas.silver import TABLES as SILVER
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


USER, PASSWORD = "analyst1", "correct horse battery"


@pytest.fixture(scope="module")
def warehouse(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gold warehouse written by path, named in no metastore, with the PII vault beside it."""
    root = tmp_path_factory.mktemp("served") / "warehouse"
    for table, rows in GOLD.items():
        write_delta(frame(spark, table, rows), table, table_path(root, table))
    write_delta(frame(spark, PII_VAULT, [{"customer_id": "C1"}]), PII_VAULT, table_path(root, PII_VAULT))
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(proc: subprocess.Popen, port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"cdp serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"cdp serve did not listen on {port} within {timeout} s")


@pytest.fixture(scope="module")
def serving_env(warehouse: Path) -> dict[str, str]:
    """The environment of `cdp serve` over `warehouse`, with one user."""
    users = warehouse.parent / "users"
    # Fewer PBKDF2 iterations than `cdp serve-user add` uses: the tests log in some twenty times.
    add_user(users, USER, PASSWORD, iterations=10_000)
    return {**os.environ, "CDP_PROFILE": "test", "CDP__PATHS__WAREHOUSE": str(warehouse),
            "CDP__PATHS__SERVING": str(warehouse.parent / "serving"), "CDP__PATHS__SERVING_USERS": str(users)}


@contextmanager
def _server(env: dict[str, str], *args: str) -> Iterator[int]:
    """`cdp serve *args` on a free port, until the block ends."""
    port = _free_port()
    cdp = Path(sys.executable).with_name("cdp")
    # To a file, not a pipe: the server logs a stack trace per refused statement, and a full pipe would stop it.
    log = Path(env["CDP__PATHS__SERVING"]).with_name(f"serve-{port}.log")
    with log.open("w") as out:
        proc = subprocess.Popen([str(cdp), "serve", "--port", str(port), *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_port(proc, port, log, timeout=180)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def thrift_port(serving_env: dict[str, str]) -> Iterator[int]:
    with _server(serving_env) as port:
        yield port


def _query(port: int, sql: str, user: str = USER, password: str | None = PASSWORD) -> list[tuple]:
    from pyhive import hive

    auth = "NONE" if password is None else "CUSTOM"
    with hive.connect("127.0.0.1", port, database="bi", username=user, password=password, auth=auth) as conn:
        cursor = conn.cursor()
        cursor.execute(sql)
        return cursor.fetchall()


def _refusal(port: int, sql: str, user: str = USER) -> str:
    """The error of a statement the server refuses."""
    from pyhive.exc import OperationalError

    with pytest.raises(OperationalError) as refused:
        _query(port, sql, user)
    return str(refused.value)


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


def test_logins_need_a_user_and_password(thrift_port: int) -> None:
    from thrift.transport.TTransport import TTransportException

    for user, password in [(USER, None), (USER, "wrong horse battery"), ("intruder", PASSWORD)]:
        with pytest.raises(TTransportException, match="Error validating the login"):
            _query(thrift_port, "SELECT 1", user, password)
    assert _query(thrift_port, "SELECT 1") == [(1,)]


def test_the_analyst_reads_bi_only(thrift_port: int, warehouse: Path) -> None:
    assert sorted(r[0] for r in _query(thrift_port, "SHOW DATABASES")) == ["bi", "default"]
    assert _query(thrift_port, "SHOW TABLES IN default") == []
    for name in ("silver.pii_vault", "gold.customer_profile", "bronze.contacts", "ops.quarantine"):
        assert f"{name} is not in a served database" in _refusal(thrift_port, f"SELECT * FROM {name}")
    # Nor by path, though the view texts read gold that way.
    vault = table_path(warehouse, PII_VAULT).as_uri()
    for relation in (f"delta.`{vault}`", f"parquet.`{vault}`"):
        assert "is not in a served database" in _refusal(thrift_port, f"SELECT * FROM {relation}")
    assert "is not in a served database" in _refusal(
        thrift_port, f"WITH v AS (SELECT * FROM delta.`{vault}`) SELECT count(*) FROM v")
    assert "DescribeQueryCommand is not a query" in _refusal(thrift_port,
                                                            f"DESCRIBE QUERY SELECT * FROM delta.`{vault}`")
    assert "the function reflect" in _refusal(thrift_port, "SELECT reflect('java.lang.System', 'getenv', 'HOME')")


def test_the_analyst_cannot_change_anything(thrift_port: int, serving_env: dict[str, str]) -> None:
    for sql, node in [("DROP TABLE bi.customer_360", "DropTable"), ("DROP VIEW bi.kpi_daily", "DropView"),
                      ("CREATE TABLE bi.mine (a INT) USING delta", "CreateTable"),
                      ("CREATE TABLE bi.copy AS SELECT * FROM bi.kpi_daily", "CreateTableAsSelect"),
                      ("INSERT INTO bi.kpi_daily SELECT * FROM bi.kpi_daily", "InsertIntoStatement"),
                      ("ADD JAR /tmp/any.jar", "AddJarsCommand")]:
        assert f"refused by the read-only serving endpoint: {node} is not a query" in _refusal(thrift_port, sql)
    assert sorted(r[1] for r in _query(thrift_port, "SHOW VIEWS IN bi")) == sorted(bi_views())

    # Every session and statement is audited, the refused ones with their error.
    audit = Path(serving_env["CDP__PATHS__SERVING"]) / "audit.jsonl"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:   # the listener writes from Spark's event thread, a moment later
        events = [json.loads(line) for line in audit.read_text().splitlines()]
        if any("DROP TABLE bi.customer_360" in (e["detail"] or "") for e in events if e["event"] == "statement"):
            break
        time.sleep(0.5)
    statements = {e["detail"]: e for e in events if e["event"] == "statement"}
    assert statements["DROP TABLE bi.customer_360"]["user"] == USER
    refused = {e["operation"] for e in events if e["event"] == "error" and "read-only" in e["detail"]}
    assert statements["DROP TABLE bi.customer_360"]["operation"] in refused
    assert {e["user"] for e in events if e["event"] == "session"} == {USER}


@pytest.mark.slow
def test_the_silver_reader_role(spark: SparkSession, warehouse: Path, serving_env: dict[str, str]) -> None:
    """A second server, for the opt-in role: its named users only, silver but the vault, audited."""
    from thrift.transport.TTransport import TTransportException

    for table in SILVER:
        if table is not PII_VAULT:
            write_delta(frame(spark, table, []), table, table_path(warehouse, table))
    reader = "reader1"
    add_user(Path(serving_env["CDP__PATHS__SERVING_USERS"]), reader, PASSWORD, iterations=10_000)
    env = {**serving_env, "CDP__SERVING__SILVER_READERS": f"[{reader}]"}
    with _server(env, "--role", "silver_reader") as port:
        with pytest.raises(TTransportException, match="Error validating the login"):
            _query(port, "SELECT 1")   # the analyst is not a silver reader
        assert sorted(r[0] for r in _query(port, "SHOW DATABASES", reader)) == ["bi", "default", "silver"]
        served = sorted(r[1] for r in _query(port, "SHOW VIEWS IN silver", reader))
        assert served == sorted(t.name.split(".")[1] for t in SILVER if t is not PII_VAULT)
        assert _query(port, "SELECT count(*) FROM silver.contacts", reader) == [(0,)]
        assert "TABLE_OR_VIEW_NOT_FOUND" in _refusal(port, "SELECT * FROM silver.pii_vault", reader)
        assert "DropView is not a query" in _refusal(port, "DROP VIEW silver.contacts", reader)
    audit = [json.loads(line) for line in (Path(env["CDP__PATHS__SERVING"]) / "audit.jsonl").read_text().splitlines()]
    assert any(e["server"] == "silver_reader" and e["user"] == reader and e["detail"] == "SELECT count(*) FROM "
               "silver.contacts" for e in audit)
    assert any(e["server"] == "silver_reader" and e["event"] == "login_failed" and e["user"] == USER for e in audit)


def test_users_file_and_server_settings(tmp_path: Path) -> None:
    users = tmp_path / "users"
    assert add_user(users, "ana", "a long passphrase", iterations=1000)
    assert not add_user(users, "ana", "another long passphrase", iterations=1000)
    stored = read_users(users)["ana"]
    scheme, iterations, salt, _ = stored.split("$")
    assert (scheme, iterations) == ("pbkdf2_sha256", "1000")
    assert "another long passphrase" not in users.read_text()
    assert stored == hash_password("another long passphrase", 1000, base64.b64decode(salt))
    with pytest.raises(ServingAuthError, match="12 characters"):
        add_user(users, "bo", "short")
    with pytest.raises(ServingAuthError, match="letters, digits"):
        add_user(users, "bo:x", "a long passphrase")

    settings = load_settings("test").with_paths(serving_users=users, serving=tmp_path / "serving")
    props = server_properties(settings, "analyst")
    assert props["hive.server2.authentication"] == "CUSTOM"
    assert props["cdp.serving.users"] == str(users) and "cdp.serving.allowed" not in props
    with pytest.raises(ServingAuthError, match="silver_readers is empty"):
        server_properties(settings, "silver_reader")


def test_gold_reads_without_spark(warehouse: Path) -> None:
    latest = read_table(warehouse, CUSTOMER_VALUE, as_of=NEW, columns=["customer_id", "clv"])
    pd.testing.assert_frame_equal(latest.sort_values("customer_id", ignore_index=True),
                                  pd.DataFrame({"customer_id": ["C1", "C2"], "clv": [300.0, 10.0]}))

    profile = read_table(warehouse, CUSTOMER_PROFILE)
    assert list(profile.columns) == CUSTOMER_PROFILE.column_names
    assert profile.set_index("customer_id").loc["C1", ["as_of_date", "net_revenue"]].tolist() == [NEW, 120.0]
