"""The slow end-to-end variants (`make test-slow`): a two-day backfill through Airflow, equal to each day
run in turn with `cdp run`; `cdp rebuild` of every stage from time travel; the refit and erasure DAGs run
for real. Run them whenever a change touches what they cover."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.platform.rebuild import differences
from jobs.platform.stages import STAGES
from schemas import gold
from tests.test_dags import _cdp, _isolated_env, _published, _table, assert_failed_at_ingest, corrupt_batch

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

FIRST_DAY, AS_OF, NEXT_DAY = "2026-11-19", "2026-11-20", "2026-11-21"
PEOPLE = 300


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Sample data for 300 people, then the daily DAG backfilled through Airflow over two days."""
    env = _isolated_env(tmp_path_factory.mktemp("backfill"))
    _cdp(env, "generate", "--customers", str(PEOPLE), "--workers", "1")
    run = _cdp(env, "backfill", "--start", FIRST_DAY, "--end", AS_OF, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return env


def test_the_backfill_publishes_every_stage_for_each_day(backfilled: dict[str, str], spark: SparkSession) -> None:
    for day in (FIRST_DAY, AS_OF):
        _published(spark, backfilled, day, PEOPLE)
    # The first day fitted the CLV model; the second scored with it (refits are the refit DAG's).
    models = _table(spark, backfilled, "ops.clv_models").collect()
    assert [(m.as_of_date.isoformat(), m.promoted) for m in models] == [(FIRST_DAY, True)]
    assert _table(spark, backfilled, "ops.resolution_runs").count() == 2


def test_a_two_day_backfill_equals_running_each_day_in_turn(
    backfilled: dict[str, str], spark: SparkSession, tmp_path: Path
) -> None:
    # The same sample, each day run in turn without Airflow (stages in one process, no spark-submit).
    env = _isolated_env(tmp_path)
    _cdp(env, "generate", "--customers", str(PEOPLE), "--workers", "1")
    for day in (FIRST_DAY, AS_OF):
        run = _cdp(env, "run", "--date", day, check=False)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    compared = {t.name: differences(_table(spark, backfilled, t.name), _table(spark, env, t.name))
                for t in gold.TABLES}
    assert all(c["published"] == c["rebuilt"] and c["only_published"] == c["only_rebuilt"] == 0
               for c in compared.values()), compared
    # Only the id history may be empty (no merge or split in two days of the sample).
    assert [name for name, c in compared.items() if c["published"] == 0] in ([], ["gold.customer_id_history"])


@pytest.mark.parametrize("stage", [s for s in STAGES if s != "refit"])
def test_every_stage_of_yesterday_rebuilds_from_time_travel_as_published(
    backfilled: dict[str, str], tmp_path: Path, stage: str
) -> None:
    # Published since: today's run, which moved every state table on. The scratch warehouse holds only the
    # tables the stage declares, so an undeclared read would fail here.
    rebuild = _cdp(backfilled, "rebuild", "--stage", stage, "--date", FIRST_DAY, "--out", str(tmp_path),
                   check=False)
    assert rebuild.returncode == 0, rebuild.stdout[-3000:] + rebuild.stderr[-3000:]
    report = json.loads(rebuild.stdout[rebuild.stdout.index("{"):rebuild.stdout.rindex("}") + 1])
    assert set(report) == {t.name for t in STAGES[stage].writes if t.database != "ops"}
    assert all(r["published"] == r["rebuilt"] and r["only_published"] == r["only_rebuilt"] == 0
               for r in report.values()), report
    if stage == "report":
        assert (tmp_path / "reports" / "run" / FIRST_DAY / "index.html").is_file()


@pytest.fixture(scope="module")
def refitted(backfilled: dict[str, str]) -> dict[str, str]:
    run = _cdp(backfilled, "airflow-run", "--dag", "cdp_refit", "--date", AS_OF, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return backfilled


def test_the_refit_dag_fits_validates_and_decides(refitted: dict[str, str], spark: SparkSession) -> None:
    models = _table(spark, refitted, "ops.clv_models").where(F.col("as_of_date") == F.lit(AS_OF).cast("date"))
    (model,) = models.collect()
    assert model.decision and model.holdout_mae >= 0
    runs = _table(spark, refitted, "ops.pipeline_runs").where("stage = 'refit'").collect()
    assert [r.status for r in runs] == ["success"]


def test_the_refit_rebuilds_from_time_travel(refitted: dict[str, str], tmp_path: Path) -> None:
    rebuild = _cdp(refitted, "rebuild", "--stage", "refit", "--date", AS_OF, "--out", str(tmp_path), check=False)
    assert rebuild.returncode == 0, rebuild.stdout[-3000:] + rebuild.stderr[-3000:]
    assert "equals what was published" in rebuild.stdout


def test_the_erasure_dag_removes_the_person(refitted: dict[str, str], spark: SparkSession) -> None:
    graph = _table(spark, refitted, "gold.identity_graph")
    customer_id = graph.where("node_type = 'contact'").orderBy("customer_id").first().customer_id
    airflow = str(Path(sys.executable).with_name("airflow"))
    run = subprocess.run([airflow, "dags", "test", "cdp_erasure", AS_OF, "--conf",
                          json.dumps({"customer_id": customer_id})], env=refitted, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert _table(spark, refitted, "gold.identity_graph").where(F.col("customer_id") == customer_id).count() == 0
    assert _table(spark, refitted, "gold.customer_profile").where(F.col("customer_id") == customer_id).count() == 0
    erasures = _table(spark, refitted, "ops.erasures").collect()
    assert [e.customer_id for e in erasures] == [customer_id]


def test_a_bad_batch_after_good_days_fails_its_gate_and_leaves_every_table_as_it_was(
    backfilled: dict[str, str], spark: SparkSession
) -> None:
    # Last in the module: the day after the backfill, refit and erasure, with a corrupt orders batch.
    env = backfilled
    published = {name: sorted(_table(spark, env, name).inputFiles())
                 for name in ("bronze.orders", "ops.ingest_accounting", "gold.customer_profile")}
    corrupt_batch(env, NEXT_DAY)
    failed = _cdp(env, "airflow-run", "--date", NEXT_DAY, check=False)
    assert_failed_at_ingest(spark, env, failed, NEXT_DAY)
    assert {name: sorted(_table(spark, env, name).inputFiles()) for name in published} == published
