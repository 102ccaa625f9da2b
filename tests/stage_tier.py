"""The stage tier's shared warehouse: the sample, and each stage run as the daily DAG runs it.

It is built once for `tests/test_stages_bronze_silver.py` and `tests/test_stages.py`, which run in that
order on one worker (the `landed` fixture and the scheduling in tests/conftest.py: the sample ingested up
to the last day, then cleansed as of an earlier one); the rest of the suite runs on the other worker."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.platform.config import Settings
from jobs.platform.context import RunContext
from jobs.platform.runlog import run_logged
from jobs.platform.stages import IDENTITY_SOURCES
from jobs.tools.generate import generate
from jobs.value.registry import model_in_force
from schemas.ops import CLV_MODELS

AS_OF, EARLIER = date(2026, 11, 20), date(2026, 11, 18)
PEOPLE = 300


def build_landed(settings: Settings) -> dict:
    """The sample for PEOPLE, ingested as of AS_OF and cleansed as of EARLIER (the resolution fixture
    cleanses the later days itself)."""
    summary = generate(settings.generator, settings.paths.landing, settings.paths.truth,
                       customers=PEOPLE)
    results = run(settings, AS_OF, "run-channels", "ingest")
    counts = run(settings, EARLIER, "run-resolve-earlier", "cleanse")
    return {"summary": summary, "results": results, "silver": counts}


def run(settings: Settings, as_of: date, run_id: str, stage: str) -> object:
    """One stage as the DAG runs it (date guard, registry declaration, run log), with settings whose
    ground truth folder does not exist: a stage that read the generator's truth would fail."""
    return run_logged(RunContext.create(blind(settings), as_of, run_id), stage)


def blind(settings: Settings) -> Settings:
    return dataclasses.replace(settings, paths=dataclasses.replace(settings.paths,
                                                                   truth=settings.paths.truth / "not-for-stages"))


def silver_by_source(spark: SparkSession) -> dict:
    return {source: spark.table(table.name) for source, table in IDENTITY_SOURCES.items()}


def clv_model_in_force(spark: SparkSession, as_of: date) -> dict | None:
    return model_in_force(spark.table(CLV_MODELS.name), as_of)


def truth_records(settings: Settings) -> list[dict]:
    return [row for p in sorted((settings.paths.truth / "records").glob("*.csv")) for row in csv.DictReader(p.open())]


def table_state(spark: SparkSession, name: str) -> tuple[int, list[str]]:
    """A published table's latest Delta version and data files: equal means byte for byte the same."""
    return (spark.sql(f"DESCRIBE HISTORY {name}").agg(F.max("version")).first()[0],
            sorted(spark.table(name).inputFiles()))


def strict(settings: Settings, tmp_path: Path, table: str) -> Settings:
    """These settings with a copy of the suites where `table` must have at most one row (critical)."""
    suites = tmp_path / "expectations"
    shutil.copytree(settings.root / "expectations", suites)
    suite = json.loads((suites / f"{table}.json").read_text())
    suite["expectations"].append({"type": "expect_table_row_count_to_be_between", "kwargs": {"max_value": 1}})
    (suites / f"{table}.json").write_text(json.dumps(suite))
    return dataclasses.replace(blind(settings), root=tmp_path)


def release_batch(spark: SparkSession, settings: Settings, source: str, batch: str) -> bool:
    """`cdp release`, in this process (a subprocess could not open the metastore this session holds)."""
    import argparse

    from jobs.cli import cmd_release

    cmd_release(settings, argparse.Namespace(source=source, batch=batch, reason="test: all rows are bad",
                                                    released_by="test"))
    return spark.table("ops.batch_releases").where(F.col("batch_id") == batch).count() == 1


def assert_a_failing_gate_publishes_nothing(spark: SparkSession, settings: Settings, tmp_path: Path, stage: str,
                                            table: str, published: list[str]) -> None:
    """Run `stage` with a suite `table` cannot pass: the gate fails, the run log says so, and every table in
    `published` keeps its version and files."""
    from jobs.platform.quality import QualityGateFailed

    before = {name: table_state(spark, name) for name in published}
    with pytest.raises(QualityGateFailed, match=rf"{table}: expect_table_row_count_to_be_between"):
        run_logged(RunContext.create(strict(settings, tmp_path, table), AS_OF, f"run-strict-{stage}"), stage)
    assert {name: table_state(spark, name) for name in published} == before
    failed = spark.table("ops.pipeline_runs").where(F.col("run_id") == f"run-strict-{stage}").first()
    assert failed.status == "failed" and table in failed.message


def plant_a_better_model_in_force(spark: SparkSession, settings: Settings, day: date) -> str:
    """Append to ops.clv_models a promoted model, in force the day before `day`, that predicts the holdout
    window of a refit on `day` better than that refit will: the refit's candidate is the maximum-likelihood
    fit, which does not minimise the holdout error, so its alpha rescaled to minimise that error predicts
    better (checked here, in numpy). Returns its version."""
    import numpy as np
    from scipy import optimize

    from jobs.platform.stages import stage
    from jobs.value import btyd, clv
    from jobs.value.stage import daily_transactions

    conf = settings.clv
    daily = daily_transactions(RunContext.create(settings, day, "probe").for_stage(stage("refit")))
    calibration_end = day - timedelta(days=conf.holdout_days)
    units = conf.holdout_days / clv.time_unit_days(conf.time_unit)
    calibration = clv.customer_summary(daily, calibration_end, conf.time_unit)
    summary = calibration.toPandas()
    actual = summary[["customer_id"]].merge(clv.holdout_purchases(daily, calibration_end, day).toPandas(),
                                            how="left").fillna(0)["holdout_frequency"].to_numpy(dtype=float)
    x, t_x, T = (summary[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T"))
    candidate = clv.fit_models(clv.fit_points(calibration)).purchases

    def mae(log_scale: float) -> float:
        scaled = btyd.BetaGeo(candidate.r, candidate.alpha * np.exp(log_scale), candidate.a, candidate.b)
        return float(np.mean(np.abs(scaled.expected_purchases(units, x, t_x, T) - actual)))

    best = optimize.minimize_scalar(mae, bounds=(-1.0, 1.0), method="bounded")
    assert best.fun < mae(0.0) * (1 - 1e-4), "no better model to plant"
    latest = spark.table(CLV_MODELS.name).where("promoted").orderBy(F.col("as_of_date").desc()).first().asDict()
    planted = {**latest, "model_version": "clv-planted-in-force", "as_of_date": day - timedelta(days=1),
               "time_unit": conf.time_unit, "r": candidate.r, "alpha": float(candidate.alpha * np.exp(best.x)),
               "a": candidate.a, "b": candidate.b, "promoted": True, "decision": "planted by a test"}
    spark.createDataFrame([tuple(planted[c] for c in CLV_MODELS.column_names)], CLV_MODELS.struct) \
        .write.format("delta").mode("append").saveAsTable(CLV_MODELS.name)
    return planted["model_version"]
