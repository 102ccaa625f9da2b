"""The pipeline on a real Spark standalone cluster (a master and two workers started here from the
PySpark distribution), chosen by the configuration profile alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.delivery.serving import read_table
from jobs.platform.config import load_settings
from jobs.tools.cluster import Standalone
from schemas.ops import INGEST_ACCOUNTING, PIPELINE_RUNS
from tests.conftest import isolated_environment

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

AS_OF = "2026-11-20"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    # Ports of their own, so a cluster someone runs on the defaults is left alone.
    standalone = Standalone(tmp_path_factory.mktemp("standalone"), port=7177, ui_port=8180, workers=2,
                            worker_cores=1, worker_memory="1500m")
    standalone.start()
    yield standalone
    standalone.stop()


def test_the_stages_run_on_the_cluster_by_changing_the_profile(cluster: Standalone, tmp_path: Path) -> None:
    env = {**os.environ, **isolated_environment(tmp_path), "CDP_PROFILE": "standalone",
           # The profile's master is the default port's; this cluster listens on its own.
           "CDP__SPARK__MASTER": cluster.master_url, "CDP__SPARK__CONF__spark.executor.memory": "1g",
           "CDP__SPARK__CONF__spark.driver.memory": "1g"}
    cdp = str(Path(sys.executable).with_name("cdp"))
    subprocess.run([cdp, "generate", "--customers", "150", "--workers", "1"], env=env, check=True)
    for stage in ("ingest", "cleanse"):
        subprocess.run([cdp, "run", "--date", AS_OF, "--stage", stage], env=env, check=True)

    settings = load_settings(environ=env)
    assert settings.spark_master == cluster.master_url
    runs = read_table(settings.paths.warehouse, PIPELINE_RUNS)
    assert sorted(runs["stage"]) == ["cleanse", "ingest"]
    assert set(runs["status"]) == {"success"}
    accounting = read_table(settings.paths.warehouse, INGEST_ACCOUNTING)
    assert accounting["rows_read"].sum() > 0
    assert (accounting["rows_read"] == accounting["rows_loaded"] + accounting["rows_quarantined"]
            + accounting["rows_deduplicated"]).all()

    # Each stage was an application of the cluster, and its tasks ran on both workers' executors.
    status = cluster.status()
    apps = [a for a in status["completedapps"] if a["name"] == "cdp"]
    assert len(apps) == 2
    assert all(a["cores"] == 2 for a in apps)
    assert len([w for w in status["workers"] if w["state"] == "ALIVE"]) == 2
