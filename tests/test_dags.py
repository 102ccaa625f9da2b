"""The DAGs: they import cleanly and fast, follow house policy, and run end to end in Airflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession

from jobs.cli import airflow_env
from jobs.config import PROJECT_ROOT, load_settings
from schemas.raw import SOURCES
from tests.conftest import isolated_environment

DAGS = sorted((PROJECT_ROOT / "dags").glob("*.py"))
EXPECTED_WIRING = {"cdp_daily": {"ingest": ["cleanse"], "cleanse": ["resolve"], "resolve": ["profile"],
                                 "profile": ["value"], "value": ["segments"], "segments": []}}
AS_OF = "2026-11-20"

DAGBAG_PROBE = """
import json, time
from airflow.dag_processing.dagbag import DagBag
bag = DagBag()
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": {d.dag_id: {"tasks": {t.task_id: sorted(t.downstream_task_ids) for t in d.tasks},
                        "owners": sorted({t.owner for t in d.tasks}), "retries": sorted({t.retries for t in d.tasks}),
                        "tags": sorted(d.tags), "catchup": d.catchup} for d in bag.dags.values()},
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


@pytest.mark.parametrize("dag_file", DAGS, ids=[p.name for p in DAGS])
def test_dag_file_imports_in_under_a_second(dag_file: Path, airflow_home: dict[str, str]) -> None:
    probe = ("import time, runpy, airflow.sdk; t = time.perf_counter(); "
             f"runpy.run_path({str(dag_file)!r}); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", probe], env=airflow_home, capture_output=True, text=True, check=True)
    assert float(out.stdout.strip().splitlines()[-1]) < 1.0


@pytest.mark.e2e
def test_daily_dag_runs_end_to_end_and_a_bad_batch_stops_it(
    airflow_home: dict[str, str], spark: SparkSession
) -> None:
    env = airflow_home
    _cdp(env, "generate", "--customers", "300", "--workers", "1")
    run = _cdp(env, "airflow-run", "--date", AS_OF, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    warehouse = Path(env["CDP__PATHS__WAREHOUSE"])

    def table(name: str) -> DataFrame:
        """Read by path: the Airflow run has its own metastore."""
        database, table_name = name.split(".")
        return spark.read.format("delta").load(str(warehouse / f"{database}.db" / table_name))

    profile = table("gold.customer_profile")
    accounting = table("ops.ingest_accounting").groupBy("source").sum(
        "rows_read", "rows_loaded", "rows_quarantined", "rows_deduplicated").collect()
    assert {r.source for r in accounting} == set(SOURCES)
    for r in accounting:
        assert r["sum(rows_read)"] == r["sum(rows_loaded)"] + r["sum(rows_quarantined)"] + r["sum(rows_deduplicated)"]
        assert r["sum(rows_loaded)"] > 0
    people = 300
    assert 0.6 * people < profile.count() < 1.2 * people
    assert profile.where("order_count > 0").count() > 0.4 * people
    assert profile.select("customer_id").distinct().count() == profile.count()
    assert table("gold.identity_graph").select("customer_id").distinct().count() == profile.count()
    assert table("ops.resolution_runs").count() == 1
    assert 0 < table("gold.customer_value").count() <= profile.count()
    assert table("ops.clv_models").where("promoted").count() == 1
    assert table("gold.customer_segments").count() == profile.count()
    assert table("gold.lifecycle_history").where("valid_to IS NULL").count() == 2 * profile.count()
    assert table("ops.resolution_checks").where("breach IS NOT NULL").count() == 0
    assert table("ops.dq_results").where("NOT success AND severity = 'critical'").count() == 0
    published = sorted(profile.inputFiles())

    # A corrupted batch the next day: the ingest gate fails, nothing downstream runs or is published.
    landing = Path(env["CDP__PATHS__LANDING"]) / "orders" / "2026-11-21"
    landing.mkdir(parents=True)
    (landing / "part-corrupt.jsonl").write_text("\n".join(['{"order_id": "x1", "broken'] * 20) + "\n")
    failed = _cdp(env, "airflow-run", "--date", "2026-11-21", check=False)
    assert failed.returncode != 0
    assert "quarantine_share" in failed.stdout + failed.stderr
    assert sorted(table("gold.customer_profile").inputFiles()) == published
