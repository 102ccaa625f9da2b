"""Stage entry points: read config and inputs, call the pure transforms, write, gate.

Each stage is keyed by the run's logical date (`as_of`) and is safe to rerun. Airflow tasks
and the `cdp run` command call these and nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import quality
from jobs.cleanse import cleanse_contacts, cleanse_orders
from jobs.config import Settings
from jobs.ingest import BatchResult, ingest_source
from jobs.profile import build_customer_profile
from jobs.runtime import spark_session
from jobs.tables import overwrite
from schemas import gold, silver
from schemas.bronze import TABLES as BRONZE
from schemas.ops import INGEST_ACCOUNTING
from schemas.raw import SOURCES

log = logging.getLogger(__name__)

# The walking skeleton carries these sources end to end; the rest land with the ingest issue.
PIPELINE_SOURCES = ("contacts", "orders")
STAGES = ("ingest", "cleanse", "profile")


@dataclass(frozen=True)
class RunContext:
    settings: Settings
    as_of: date
    run_id: str
    started_at: datetime

    @classmethod
    def create(cls, settings: Settings, as_of: date, run_id: str | None = None) -> RunContext:
        now = datetime.now(UTC).replace(microsecond=0)
        return cls(settings, as_of, run_id or f"manual__{as_of.isoformat()}__{now:%Y%m%dT%H%M%S}", now)

    @property
    def spark(self) -> SparkSession:
        return spark_session(self.settings)

    def gate(self, stage: str, frames: dict[str, DataFrame]) -> list[quality.Outcome]:
        return quality.gate(self.spark, stage, frames, self.settings.root / "expectations", self.run_id,
                            self.started_at)


def accounting_frame(accounting: DataFrame) -> DataFrame:
    """Accounting per source over the run's batches, with the quarantine share the ingest gate bounds.

    Per source rather than per file: a tiny daily file with one bad row must not stop the run.
    """
    sums = [F.sum(c).alias(c) for c in ("rows_read", "rows_loaded", "rows_quarantined", "rows_deduplicated")]
    return accounting.groupBy("source").agg(F.count("*").alias("files"), *sums).withColumn(
        "quarantine_share", F.col("rows_quarantined") / F.greatest("rows_read", F.lit(1)))


def run_ingest(ctx: RunContext) -> list[BatchResult]:
    """Land every pending batch up to the logical date in bronze, then gate what was landed."""
    spark = ctx.spark
    results: list[BatchResult] = []
    for name in PIPELINE_SOURCES:
        results += ingest_source(spark, str(ctx.settings.paths.landing), SOURCES[name], ctx.as_of.isoformat(),
                                 ctx.run_id, ctx.started_at)
    if not results:
        log.info("ingest: no new batches up to %s", ctx.as_of)
        return results
    batches = F.concat_ws("/", "source", "batch_id").isin([f"{r.source}/{r.batch_id}" for r in results])
    frames = {INGEST_ACCOUNTING.name: accounting_frame(spark.table(INGEST_ACCOUNTING.name).where(batches))}
    for name in sorted({r.source for r in results}):
        ids = [r.batch_id for r in results if r.source == name]
        frames[BRONZE[name].name] = spark.table(BRONZE[name].name).where(F.col("_batch_id").isin(ids))
    ctx.gate("ingest", frames)
    return results


def bronze_as_of(spark: SparkSession, source: str, as_of: date) -> DataFrame:
    return spark.table(BRONZE[source].name).where(F.col("_batch_id") <= F.lit(as_of.isoformat()))


def run_cleanse(ctx: RunContext) -> dict[str, int]:
    """Rebuild silver from bronze as of the logical date, then gate it."""
    spark, conf = ctx.spark, ctx.settings.section("cleanse")
    patterns = list(conf["test_account_email_patterns"])
    outputs = {
        silver.CONTACTS: cleanse_contacts(bronze_as_of(spark, "contacts", ctx.as_of), conf["default_phone_region"],
                                          patterns),
        silver.ORDERS: cleanse_orders(bronze_as_of(spark, "orders", ctx.as_of), patterns),
    }
    for table, df in outputs.items():
        overwrite(df, table)
    ctx.gate("cleanse", {t.name: spark.table(t.name) for t in outputs})
    return {t.name: spark.table(t.name).count() for t in outputs}


def run_profile(ctx: RunContext) -> dict[str, int]:
    """Rebuild the customer profile from silver, then gate it."""
    spark = ctx.spark
    profile = build_customer_profile(spark.table(silver.CONTACTS.name), spark.table(silver.ORDERS.name), ctx.as_of)
    overwrite(profile, gold.CUSTOMER_PROFILE)
    ctx.gate("profile", {gold.CUSTOMER_PROFILE.name: spark.table(gold.CUSTOMER_PROFILE.name)})
    return {gold.CUSTOMER_PROFILE.name: spark.table(gold.CUSTOMER_PROFILE.name).count()}


STAGE_FUNCTIONS = {"ingest": run_ingest, "cleanse": run_cleanse, "profile": run_profile}


def run_stage(stage: str, settings: Settings, as_of: date, run_id: str | None = None) -> object:
    if stage not in STAGE_FUNCTIONS:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    return STAGE_FUNCTIONS[stage](RunContext.create(settings, as_of, run_id))
