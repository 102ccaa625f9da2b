"""Serving: gold to BI tools over JDBC/ODBC (Spark Thrift Server) and to Python without Spark (delta-rs).

`cdp serve` (`make serve`) starts Spark's Thrift Server (HiveServer2 protocol, bundled with PySpark)
inside a SparkSession of its own: Delta, and a metastore of its own under `paths.serving`, which holds
nothing but the views of one role, created at each start over the warehouse's Delta tables by path
(``delta.`<warehouse>/gold.db/...` ``). The analyst role's catalog is the `bi` database: bronze, silver,
the PII vault, the quarantine and gold's own tables are not named in it at all. The opt-in
silver_reader role (conf `serving.silver_readers`, its own port) adds a `silver` database without the vault.
BI tools connect with any HiveServer2 driver and a user of `cdp serve-user add`:
``jdbc:hive2://127.0.0.1:10000/bi;user=NAME;password=...``, or
``pyhive.hive.connect("127.0.0.1", 10000, database="bi", username=NAME, password=..., auth="CUSTOM")``.

Three pieces of serving/java (compiled into the jar cache at `make setup`) make it an endpoint for others:
`PasswordFileAuthenticator` (HiveServer2 CUSTOM authentication against salted hashes,
`jobs.delivery.serving_auth`), `ReadOnlyExtension` (a parser that refuses, once the views exist, anything
but queries over the served databases, SHOW, DESCRIBE, USE and SET: no DDL, DML, reads by path or Java
reflection) and `AuditListener` (each session, statement and error to `paths.serving`/audit.jsonl).

The server never opens the pipeline's metastore, so it runs beside `make run` and the Airflow DAG. The
views read the latest as-of date at query time, so they follow the pipeline without being recreated.
They expose masked contact points only: names, birth years and the PII vault are not in `bi`.

`read_table` opens the same Delta tables with delta-rs into pandas, with no JVM: for notebooks,
scripts and DuckDB (which queries a pandas frame in place).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession

from jobs.delivery.serving_auth import ROLES, server_properties
from jobs.platform.config import Settings
from jobs.platform.jars import require_jars, require_serving_jar
from schemas import Table
from schemas.gold import (
    CUSTOMER_PROFILE,
    CUSTOMER_SEGMENTS,
    CUSTOMER_VALUE,
    KPI,
    LIFECYCLE_HISTORY,
    SEGMENT_MEMBERSHIP,
)

BI_DATABASE = "bi"
SILVER_DATABASE = "silver"

# How a view names a table it reads: by its metastore name, or by path (`by_path`).
Relation = Callable[[Table], str]


def by_name(table: Table) -> str:
    return table.name


def by_path(warehouse: Path) -> Relation:
    """Tables read as ``delta.`<location>` ``: views over them need no table in the catalog."""
    return lambda table: "delta.`" + table_path(warehouse, table).as_uri().replace("`", "``") + "`"


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


def bi_views(relation: Relation = by_name) -> dict[str, str]:
    """The curated views of the `bi` database: view name -> SELECT over gold (tables named by `relation`)."""
    p, v, s = relation(CUSTOMER_PROFILE), relation(CUSTOMER_VALUE), relation(CUSTOMER_SEGMENTS)

    def latest(table: Table) -> str:
        return f"(SELECT max(as_of_date) FROM {relation(table)})"

    select_360 = ", ".join([*(f"p.{c}" for c in _PROFILE_COLUMNS), *(f"v.{c}" for c in _VALUE_COLUMNS),
                            *(f"s.{c}" for c in _SEGMENT_COLUMNS), "p.as_of_date AS profile_as_of",
                            "v.as_of_date AS value_as_of", "s.as_of_date AS segments_as_of"])
    kpi = ("SELECT as_of_date, period_start, segment_type, segment, kpi, value, numerator, denominator "
           f"FROM {relation(KPI)} WHERE grain = '{{grain}}' AND as_of_date = {latest(KPI)}")
    return {
        "customer_360":
            f"SELECT {select_360} FROM {p} p "
            f"LEFT JOIN (SELECT * FROM {v} WHERE as_of_date = {latest(CUSTOMER_VALUE)}) v "
            "ON v.customer_id = p.customer_id "
            f"LEFT JOIN (SELECT * FROM {s} WHERE as_of_date = {latest(CUSTOMER_SEGMENTS)}) s "
            "ON s.customer_id = p.customer_id",
        "segment_membership":
            "SELECT as_of_date, segment_type, segment, customer_id, entered_on "
            f"FROM {relation(SEGMENT_MEMBERSHIP)} WHERE as_of_date = {latest(SEGMENT_MEMBERSHIP)}",
        # from_stage is null on a customer's first row: the stage they were first seen in.
        "lifecycle_transitions":
            "SELECT customer_id, model, previous_stage AS from_stage, stage AS to_stage, reason, "
            f"valid_from AS transition_date FROM {relation(LIFECYCLE_HISTORY)}",
        "kpi_daily": kpi.format(grain="day"),
        "kpi_monthly": kpi.format(grain="month"),
        # Deciles by CLV (1 = lowest) of the latest scoring, with each decile's share of the total.
        "clv_distribution":
            "SELECT as_of_date, clv_decile, count(*) AS customers, min(clv) AS min_clv, max(clv) AS max_clv, "
            "avg(clv) AS avg_clv, sum(clv) AS total_clv, "
            "sum(clv) / sum(sum(clv)) OVER (PARTITION BY as_of_date) AS clv_share "
            "FROM (SELECT as_of_date, clv, ntile(10) OVER (ORDER BY clv, customer_id) AS clv_decile "
            f"FROM {v} WHERE as_of_date = {latest(CUSTOMER_VALUE)}) GROUP BY as_of_date, clv_decile",
    }


VIEW_SOURCES = (CUSTOMER_PROFILE, CUSTOMER_VALUE, CUSTOMER_SEGMENTS, SEGMENT_MEMBERSHIP, LIFECYCLE_HISTORY, KPI)


def _silver_tables() -> tuple[Table, ...]:
    from schemas.silver import PII_VAULT, TABLES

    return tuple(t for t in TABLES if t is not PII_VAULT)


def silver_views(relation: Relation) -> dict[str, str]:
    """The silver_reader role's `silver` database: every silver table but the PII vault, as it is."""
    return {t.name.split(".")[1]: f"SELECT * FROM {relation(t)}" for t in _silver_tables()}


def role_views(role: str, warehouse: Path) -> dict[str, dict[str, str]]:
    """Database -> view name -> SELECT, of what `role` is served: gold (and silver) of `warehouse`, by path.
    Fails naming the tables missing from `warehouse`."""
    tables = VIEW_SOURCES + (_silver_tables() if role == "silver_reader" else ())
    missing = [t.name for t in tables if not (table_path(warehouse, t) / "_delta_log").is_dir()]
    if missing:
        raise LookupError(f"the served views need {missing} in {warehouse}: run the pipeline (make run) first")
    relation = by_path(warehouse)
    views = {BI_DATABASE: bi_views(relation)}
    if role == "silver_reader":
        views[SILVER_DATABASE] = silver_views(relation)
    return views


def create_views(spark: SparkSession, views: dict[str, dict[str, str]]) -> list[str]:
    """Create the databases of `views` afresh (no view of an older version stays); returns the views' names."""
    for database, queries in views.items():
        spark.sql(f"DROP DATABASE IF EXISTS {database} CASCADE")
        spark.sql(f"CREATE DATABASE {database}")
        for name, query in queries.items():
            spark.sql(f"CREATE VIEW {database}.{name} AS {query}")
    return [f"{database}.{name}" for database, queries in views.items() for name in queries]


def table_path(warehouse: Path, table: Table) -> Path:
    """Where `table` lives in a warehouse: Spark's managed location, <warehouse>/<database>.db/<table>."""
    database, name = table.name.split(".")
    return warehouse / f"{database}.db" / name


def thrift_settings(settings: Settings, role: str, host: str, port: int) -> Settings:
    """The server's settings: a metastore and a (viewless) warehouse of its own for `role` under
    `paths.serving`; its address in the Spark conf (the server reads its HiveConf from it); the read-only
    parser; and what the server needs beyond a batch session: the Delta jars and ours on the driver's
    class path (it runs statements under a class loader that does not see `spark.jars`), and no answers
    from Delta statistics (`max(as_of_date)` from the log builds java.sql dates, which fail in the
    server's sessions, where Spark uses java.time)."""
    from jobs.platform.runtime import DELTA_EXTENSION

    jars = [*require_jars(settings.delta.maven_coordinates, settings.paths.jars),
            require_serving_jar(settings.root, settings.paths.jars)]
    home = settings.paths.serving / role
    own = settings.with_paths(metastore=home / "metastore", warehouse=home / "warehouse")
    return own.with_spark_conf({"spark.hadoop.hive.server2.thrift.bind.host": host,
                                "spark.hadoop.hive.server2.thrift.port": str(port),
                                "spark.sql.extensions": f"{DELTA_EXTENSION},cdp.serving.ReadOnlyExtension",
                                "spark.driver.extraClassPath": os.pathsep.join(str(j) for j in jars),
                                "spark.databricks.delta.optimizeMetadataQuery.enabled": "false"})


def serve(settings: Settings, role: str = "analyst", port: int | None = None) -> None:
    """Serve `role`'s views over HiveServer2 (`port`, default from conf) until SIGTERM or SIGINT."""
    from jobs.platform.runtime import spark_session

    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {ROLES}")
    # Missing users, secrets or tables fail here, before Spark starts.
    properties = server_properties(settings, role)
    views = role_views(role, settings.paths.warehouse)
    default_port = settings.serving.port if role == "analyst" else settings.serving.silver_reader_port
    host, port = settings.serving.host, port or default_port
    spark = spark_session(thrift_settings(settings, role, host, port), databases=())
    try:
        jvm = spark._jvm
        for key, value in properties.items():
            jvm.java.lang.System.setProperty(key, value)
        served = create_views(spark, views)
        jvm.cdp.serving.ReadOnlyExtension.enforce()
        spark.sparkContext._jsc.sc().addSparkListener(jvm.cdp.serving.AuditListener())
        server = jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2.startWithSparkSession(
            spark._jsparkSession, True)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        # The listener thread binds the port a moment after this line; clients retry until it does.
        print(f"serving {', '.join(served)} to the {role} role on jdbc:hive2://{host}:{port}/{BI_DATABASE}",
              flush=True)
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
