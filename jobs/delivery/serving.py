"""Serving: gold to BI tools over JDBC/ODBC (Spark Thrift Server) and to Python without Spark (delta-rs).

`cdp serve` (`make serve`) builds the project's SparkSession (`jobs.platform.runtime.spark_session`: Delta, the
warehouse, the Derby metastore), creates the curated views of the `bi` database and starts Spark's
Thrift Server (HiveServer2 protocol, bundled with PySpark) inside that session, on the loopback
interface and the port of conf `serving:`. BI tools connect with any HiveServer2 driver:
``jdbc:hive2://127.0.0.1:10000/bi``, or ``pyhive.hive.connect("127.0.0.1", 10000, database="bi")``.

The embedded Derby metastore admits one JVM at a time: while the server runs, `cdp run`, `make run`
and the Airflow DAG cannot open the metastore (and the other way round). Stop the server for a run,
or point the server at a copy: with its own `paths.metastore` it registers the Delta tables it finds
under `paths.warehouse` by location (`register_tables`), so any warehouse copy can be served.

The views read the latest as-of date at query time, so they follow the pipeline without being
recreated. They expose masked contact points only: names, birth years and the PII vault are not in
`bi`. The server itself authenticates and restricts nobody: a client can query any table of the
metastore (the vault stays encrypted), which is why it listens on the loopback interface only.

`read_table` opens the same Delta tables with delta-rs into pandas, with no JVM (and so no
metastore lock): for notebooks, scripts and DuckDB (which queries a pandas frame in place).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from datetime import date
from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession

from jobs.platform.config import Settings
from jobs.platform.jars import require_jars
from jobs.platform.tables import sql_literal, table_exists
from schemas import Table
from schemas.gold import (
    CUSTOMER_PROFILE,
    CUSTOMER_SEGMENTS,
    CUSTOMER_VALUE,
    KPI,
    LIFECYCLE_HISTORY,
    SEGMENT_MEMBERSHIP,
)

log = logging.getLogger(__name__)

BI_DATABASE = "bi"


def _latest(table: Table) -> str:
    return f"(SELECT max(as_of_date) FROM {table.name})"


# Profile columns fit for BI: masked contact points, coarse geography and age, consent, activity.
# Names and birth year stay out (with postcode and gender they identify a person).
_PROFILE_COLUMNS = (
    "customer_id", "email_masked", "phone_masked", "city", "postcode", "country", "gender", "age", "age_band",
    "email_opt_in", "sms_opt_in", "unsubscribed", "loyalty_member", "signup_channel", "channels", "first_seen",
    "last_seen", "first_order_ts", "last_order_ts", "order_count", "store_transactions", "net_revenue",
    "average_order_value", "returned_orders", "tickets", "open_tickets", "latest_nps", "latest_csat",
    "referrals_made",
)
_VALUE_COLUMNS = ("p_alive", "churn_risk", "churn_probability", "purchase_probability", "expected_purchases",
                  "expected_spend", "historical_value", "current_value", "growth_value", "word_of_mouth_value",
                  "potential_value", "clv", "model_version")
_SEGMENT_COLUMNS = ("rfm_segment", "r_score", "f_score", "m_score", "cluster_label", "value_tier", "value_quadrant",
                    "preferred_channel", "consent_status", "lifecycle_stage", "lifecycle_action", "lifecycle_pattern",
                    "relationship_stage", "purchase_intent")


def bi_views() -> dict[str, str]:
    """The curated views of the `bi` database: view name -> SELECT over gold."""
    p, v, s = CUSTOMER_PROFILE.name, CUSTOMER_VALUE.name, CUSTOMER_SEGMENTS.name
    select_360 = ", ".join([*(f"p.{c}" for c in _PROFILE_COLUMNS), *(f"v.{c}" for c in _VALUE_COLUMNS),
                            *(f"s.{c}" for c in _SEGMENT_COLUMNS), "p.as_of_date AS profile_as_of",
                            "v.as_of_date AS value_as_of", "s.as_of_date AS segments_as_of"])
    kpi = ("SELECT as_of_date, period_start, segment_type, segment, kpi, value, numerator, denominator "
           f"FROM {KPI.name} WHERE grain = '{{grain}}' AND as_of_date = {_latest(KPI)}")
    return {
        "customer_360":
            f"SELECT {select_360} FROM {p} p "
            f"LEFT JOIN (SELECT * FROM {v} WHERE as_of_date = {_latest(CUSTOMER_VALUE)}) v "
            "ON v.customer_id = p.customer_id "
            f"LEFT JOIN (SELECT * FROM {s} WHERE as_of_date = {_latest(CUSTOMER_SEGMENTS)}) s "
            "ON s.customer_id = p.customer_id",
        "segment_membership":
            "SELECT as_of_date, segment_type, segment, customer_id, entered_on "
            f"FROM {SEGMENT_MEMBERSHIP.name} WHERE as_of_date = {_latest(SEGMENT_MEMBERSHIP)}",
        # from_stage is null on a customer's first row: the stage they were first seen in.
        "lifecycle_transitions":
            "SELECT customer_id, model, previous_stage AS from_stage, stage AS to_stage, reason, "
            f"valid_from AS transition_date FROM {LIFECYCLE_HISTORY.name}",
        "kpi_daily": kpi.format(grain="day"),
        "kpi_monthly": kpi.format(grain="month"),
        # Deciles by CLV (1 = lowest) of the latest scoring, with each decile's share of the total.
        "clv_distribution":
            "SELECT as_of_date, clv_decile, count(*) AS customers, min(clv) AS min_clv, max(clv) AS max_clv, "
            "avg(clv) AS avg_clv, sum(clv) AS total_clv, "
            "sum(clv) / sum(sum(clv)) OVER (PARTITION BY as_of_date) AS clv_share "
            "FROM (SELECT as_of_date, clv, ntile(10) OVER (ORDER BY clv, customer_id) AS clv_decile "
            f"FROM {v} WHERE as_of_date = {_latest(CUSTOMER_VALUE)}) GROUP BY as_of_date, clv_decile",
    }


VIEW_SOURCES = (CUSTOMER_PROFILE, CUSTOMER_VALUE, CUSTOMER_SEGMENTS, SEGMENT_MEMBERSHIP, LIFECYCLE_HISTORY, KPI)


def create_bi_views(spark: SparkSession) -> list[str]:
    """Create (or replace) every view of `bi`; returns their names. Fails naming the gold tables missing."""
    missing = [t.name for t in VIEW_SOURCES if not table_exists(spark, t.name)]
    if missing:
        raise LookupError(f"the bi views need {missing}: run the pipeline (make run) first")
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {BI_DATABASE}")
    for name, query in bi_views().items():
        spark.sql(f"CREATE OR REPLACE VIEW {BI_DATABASE}.{name} AS {query}")
    return [f"{BI_DATABASE}.{name}" for name in bi_views()]


def table_path(warehouse: Path, table: Table) -> Path:
    """Where `table` lives in a warehouse: Spark's managed location, <warehouse>/<database>.db/<table>."""
    database, name = table.name.split(".")
    return warehouse / f"{database}.db" / name


def register_tables(spark: SparkSession, warehouse: Path, tables: tuple[Table, ...]) -> list[str]:
    """Name in the session's metastore every table of `tables` that exists under `warehouse` but is not
    registered yet (a fresh metastore over a warehouse copy); returns the names registered."""
    registered = []
    for table in tables:
        path = table_path(warehouse, table)
        if table_exists(spark, table.name) or not (path / "_delta_log").is_dir():
            continue
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {table.database}")
        spark.sql(f"CREATE TABLE {table.name} USING DELTA LOCATION {sql_literal(path.as_uri())}")
        registered.append(table.name)
    return registered


def thrift_settings(settings: Settings, host: str, port: int) -> Settings:
    """`settings` with the Thrift Server's address in the Spark conf (the server reads its HiveConf from it)
    and what the server needs beyond a batch session: the Delta jars on the driver's class path (it runs
    statements under a class loader that does not see `spark.jars`), and no answers from Delta statistics
    (`max(as_of_date)` from the log builds java.sql dates, which fail in the server's sessions, where
    Spark uses java.time)."""
    jars = require_jars(settings.delta.maven_coordinates, settings.paths.jars)
    return settings.with_spark_conf({"spark.hadoop.hive.server2.thrift.bind.host": host,
                                     "spark.hadoop.hive.server2.thrift.port": str(port),
                                     "spark.driver.extraClassPath": os.pathsep.join(str(j) for j in jars),
                                     "spark.databricks.delta.optimizeMetadataQuery.enabled": "false"})


def serve(settings: Settings, port: int | None = None) -> None:
    """Serve the warehouse over HiveServer2 (`port`, default from conf) until SIGTERM or SIGINT."""
    from jobs.platform.runtime import spark_session
    from schemas.gold import TABLES

    host, port = settings.serving.host, port or settings.serving.port
    spark = spark_session(thrift_settings(settings, host, port))
    try:
        registered = register_tables(spark, settings.paths.warehouse, TABLES)
        if registered:
            log.info("registered by location: %s", ", ".join(registered))
        views = create_bi_views(spark)
        server = spark._jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2.startWithSparkSession(
            spark._jsparkSession, True)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        # The listener thread binds the port a moment after this line; clients retry until it does.
        print(f"serving {', '.join(views)} on jdbc:hive2://{host}:{port}/{BI_DATABASE}", flush=True)
        stop.wait()
        server.stop()
    finally:
        spark.stop()


def read_table(warehouse: Path, table: Table, as_of: date | None = None,
               columns: list[str] | None = None) -> pd.DataFrame:
    """A gold (or any) Delta table of the warehouse as pandas, read by delta-rs without Spark; with `as_of`,
    only that as-of date (partition pruning on tables partitioned by it)."""
    from deltalake import DeltaTable

    delta = DeltaTable(str(table_path(warehouse, table)))
    filters = [("as_of_date", "=", as_of)] if as_of is not None else None
    return delta.to_pandas(columns=columns, filters=filters)
