"""The one place a SparkSession is built: Delta Lake, the metastore and the profile's settings.

Entry points call `spark_session(settings)` once and hand the session to the code they
call; transformations never build or look up a session themselves.
"""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from jobs.platform.config import Settings
from jobs.platform.jars import require_jars

DATABASES = ("bronze", "silver", "gold", "ops")
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"


def spark_session(settings: Settings, databases: tuple[str, ...] = DATABASES) -> SparkSession:
    """Build (or return the running) SparkSession for these settings, with Delta configured and `databases`
    created in the metastore."""
    jars = require_jars(settings.delta.maven_coordinates, settings.paths.jars)
    metastore = settings.paths.metastore
    metastore.mkdir(parents=True, exist_ok=True)
    settings.paths.warehouse.mkdir(parents=True, exist_ok=True)
    # Executors must run the same interpreter (and so see the same packages) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    builder = SparkSession.builder.appName(settings.spark.app_name)
    # Under spark-submit the master is the submitter's (the Airflow connection's) to choose.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(settings.spark_master)
    builder = (
        builder
        .config("spark.jars", ",".join(str(j) for j in jars))
        .config("spark.sql.extensions", DELTA_EXTENSION)
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.warehouse.dir", str(settings.paths.warehouse))
        # Embedded Derby metastore inside the project, so tables are addressable by name.
        .config(
            "spark.hadoop.javax.jdo.option.ConnectionURL",
            f"jdbc:derby:;databaseName={metastore / 'metastore_db'};create=true",
        )
        .enableHiveSupport()
    )
    for key, value in settings.spark_conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.spark.log_level)
    for database in databases:
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")
    return spark
