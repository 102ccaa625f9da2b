"""The DAGs: they import cleanly and fast, follow house policy, and one day of the daily DAG runs end to end
in a real Airflow that fails at its ingest gate, publishing nothing (the days that pass through every
task, the backfill, the refit and erasure DAGs: tests/test_slow.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.cli import airflow_env
from jobs.platform.config import PROJECT_ROOT, load_settings
from jobs.platform.stages import DAILY, STAGES
from schemas.raw import SOURCES
from tests.conftest import isolated_environment

DAGS = sorted((PROJECT_ROOT / "dags").glob("*.py"))
EXPECTED_WIRING = {"cdp_daily": {"ingest": ["cleanse"], "cleanse": ["resolve"], "resolve": ["profile"],
                                 "profile": ["value"], "value": ["segments"], "segments": ["insights"],
                                 "insights": ["export"], "export": ["report"],
                                 "report": []},
                   "cdp_refit": {"refit": []}, "cdp_erasure": {"erase": []}}
AS_OF = "2026-11-20"
PEOPLE = 40

DAGBAG_PROBE = """
import json, time
from airflow.dag_processing.dagbag import DagBag
bag = DagBag()
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": {d.dag_id: {"tasks": {t.task_id: sorted(t.downstream_task_ids) for t in d.tasks},
                        "owners": sorted({t.owner for t in d.tasks}), "retries": sorted({t.retries for t in d.tasks}),
                        "tags": sorted(d.tags), "catchup": d.catchup,
                        "policy": sorted({(t.retry_exponential_backoff > 0, t.execution_timeout is not None,
                                           t.on_failure_callback is not None) for t in d.tasks}),
                        "outlets": {t.task_id: sorted(a.name for a in t.outlets) for t in d.tasks},
                        "schedule_assets": sorted(a.name for a in d.timetable.asset_condition.iter_assets().values())
                        if getattr(d.timetable, "asset_condition", None) else []} for d in bag.dags.values()},
}))
"""


def _isolated_env(base: Path) -> dict[str, str]:
    """An embedded Airflow plus CDP paths of its own (its own Derby metastore, away from the test session's)."""
    env = {**os.environ, **isolated_environment(base)}
    return airflow_env(load_settings(environ=env)) | {k: v for k, v in env.items() if k.startswith("CDP")}


def _cdp(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = _isolated_env(tmp_path_factory.mktemp("airflow"))
    subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], env=env, check=True,
                   capture_output=True)
    return env


def test_dags_import_without_errors_and_follow_policy(airflow_home: dict[str, str]) -> None:
    out = subprocess.run([sys.executable, "-c", DAGBAG_PROBE], env=airflow_home, capture_output=True, text=True,
                         check=True)
    bag = json.loads(out.stdout.strip().splitlines()[-1])

    assert bag["errors"] == {}
    assert {d: v["tasks"] for d, v in bag["dags"].items()} == EXPECTED_WIRING
    for dag in bag["dags"].values():
        assert dag["owners"] == ["cdp"] and min(dag["retries"]) >= 1 and dag["tags"] and dag["catchup"] is False
        assert dag["policy"] == [[True, True, True]]      # back-off, a timeout and the alert callback on every task
    # Every daily stage publishes the assets of the tables it writes, which downstream DAGs schedule on.
    outlets = bag["dags"]["cdp_daily"]["outlets"]
    assert "gold.segment_membership" in outlets["segments"] and "gold.kpi" in outlets["insights"]
    assert bag["dags"]["cdp_refit"]["outlets"]["refit"] == ["ops.clv_holdout", "ops.clv_models"]


@pytest.mark.parametrize("dag_file", DAGS, ids=[p.name for p in DAGS])
def test_dag_file_imports_in_under_a_second(dag_file: Path, airflow_home: dict[str, str]) -> None:
    probe = ("import time, runpy, airflow.sdk; t = time.perf_counter(); "
             f"runpy.run_path({str(dag_file)!r}); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", probe], env=airflow_home, capture_output=True, text=True, check=True)
    assert float(out.stdout.strip().splitlines()[-1]) < 1.0


def _table(spark: SparkSession, env: dict[str, str], name: str) -> DataFrame:
    """Read by path: every Airflow or CLI run of these tests has its own warehouse and metastore."""
    database, table_name = name.split(".")
    return spark.read.format("delta").load(str(Path(env["CDP__PATHS__WAREHOUSE"]) / f"{database}.db" / table_name))


def _published(spark: SparkSession, env: dict[str, str], day: str, people: int) -> None:
    """Every stage of `day` succeeded and published what it should, in the warehouse of `env`."""
    def table(name: str) -> DataFrame:
        return _table(spark, env, name)

    profile = table("gold.customer_profile")
    accounting = table("ops.ingest_accounting").groupBy("source").sum(
        "rows_read", "rows_loaded", "rows_quarantined", "rows_deduplicated").collect()
    assert {r.source for r in accounting} == set(SOURCES)
    for r in accounting:
        assert r["sum(rows_read)"] == r["sum(rows_loaded)"] + r["sum(rows_quarantined)"] + r["sum(rows_deduplicated)"]
        assert r["sum(rows_loaded)"] > 0
    assert 0.6 * people < profile.count() < 1.2 * people
    assert profile.where("order_count > 0").count() > 0.3 * people
    assert profile.select("customer_id").distinct().count() == profile.count()
    assert table("gold.identity_graph").select("customer_id").distinct().count() == profile.count()
    on_day = F.col("as_of_date") == F.lit(day).cast("date")
    for name in ("gold.customer_value", "gold.customer_segments", "gold.kpi", "gold.customer_sentiment"):
        assert table(name).where(on_day).count() > 0, (name, day)
    assert table("gold.customer_segments").where(on_day).count() == profile.count()
    assert table("ops.resolution_checks").where("breach IS NOT NULL").count() == 0
    assert table("ops.dq_results").where("NOT success AND severity = 'critical'").count() == 0
    # The run log: every stage succeeded, with rows in and out.
    runs = table("ops.pipeline_runs").where(F.col("logical_date") == F.lit(day).cast("date")).collect()
    assert sorted(r.stage for r in runs) == sorted(DAILY)
    assert all(r.status == "success" and r.rows_in > 0 and r.seconds > 0 for r in runs)
    assert all(r.rows_out > 0 for r in runs if STAGES[r.stage].writes)     # export and report write files
    report = Path(env["CDP__PATHS__WAREHOUSE"]).parent / "reports" / "run" / day / "index.html"
    assert 'id="chart-lifecycle-funnel"' in report.read_text()
    # The audiences due were synced and audited (ops.audience_syncs holds each destination's latest sync only).
    assert table("ops.audience_exports").where(on_day).count() > 0


@pytest.mark.e2e
def test_a_bad_batch_fails_its_gate_in_airflow_records_an_alert_and_publishes_nothing(
    airflow_home: dict[str, str], spark: SparkSession
) -> None:
    # A real DAG run on a small sample whose last orders batch is corrupt: the ingest task fails its gate at
    # once, nothing is published (not even the good contacts batch of the same run) and nothing downstream
    # runs. Only two sources are landed: ingest's cost is per source, and one good source beside the bad
    # one is what the check needs. The days that pass, through every task in Airflow, are `make
    # test-slow`'s backfill (tests/test_slow.py), which also runs this after a good day.
    env = airflow_home
    _cdp(env, "generate", "--customers", str(PEOPLE), "--workers", "1")
    landing = Path(env["CDP__PATHS__LANDING"])
    for source in set(SOURCES) - {"orders", "contacts"}:
        shutil.rmtree(landing / source, ignore_errors=True)
    corrupt_batch(env, AS_OF)
    failed = _cdp(env, "airflow-run", "--date", AS_OF, check=False)
    assert_failed_at_ingest(spark, env, failed, AS_OF)
    # Nothing reached bronze, silver or gold: a table there is either not created or empty.
    layers = ("bronze.db", "silver.db", "gold.db")
    tables = [log.parent for log in Path(env["CDP__PATHS__WAREHOUSE"]).glob("*.db/*/_delta_log")
              if log.parent.parent.name in layers]
    assert {t.name: spark.read.format("delta").load(str(t)).count() for t in tables} == {t.name: 0 for t in tables}


def corrupt_batch(env: dict[str, str], day: str) -> None:
    """Twenty lines that are not JSON in the orders batch of `day`."""
    landing = Path(env["CDP__PATHS__LANDING"]) / "orders" / day
    landing.mkdir(parents=True, exist_ok=True)
    (landing / "part-corrupt.jsonl").write_text("\n".join(['{"order_id": "x1", "broken'] * 20) + "\n")


def assert_failed_at_ingest(spark: SparkSession, env: dict[str, str], failed: subprocess.CompletedProcess,
                            day: str) -> None:
    """The run of `day` failed at the ingest gate: final (no retry), one failed ingest in the run log, one
    alert, nothing after it."""
    assert failed.returncode != 0
    assert "quarantine_share" in failed.stdout + failed.stderr
    runs = _table(spark, env, "ops.pipeline_runs").where(F.col("logical_date") == F.lit(day).cast("date"))
    assert [(r.stage, r.status) for r in runs.collect()] == [("ingest", "failed")]
    assert "quarantine_share" in runs.first().message
    alerts = [json.loads(line) for line in (Path(env["CDP__PATHS__ALERTS"]) / "alerts.jsonl").read_text().splitlines()]
    assert [(a["dag_id"], a["task_id"], a["logical_date"]) for a in alerts] == [("cdp_daily", "ingest", day)]
    assert "quarantine_share" in alerts[0]["error"]
