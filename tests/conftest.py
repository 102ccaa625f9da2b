"""One SparkSession for the whole test session, on the `test` profile with its own warehouse."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from jobs.platform.config import Settings, load_settings
from jobs.platform.runtime import DATABASES, spark_session
from jobs.platform.tables import table_names


def isolated_environment(base: Path) -> dict[str, str]:
    """Environment of an isolated `test` profile under `base` (landing, warehouse, metastore...)."""
    env = {"CDP_PROFILE": "test"}
    for key in ("landing", "truth", "warehouse", "metastore", "gx", "airflow_home", "alerts", "exports", "bench"):
        env[f"CDP__PATHS__{key.upper()}"] = str(base / key)
    return env


# The stage tier's modules share one warehouse (tests/stage_tier.py), in pipeline order: bronze and silver
# are checked before the later stages move silver on to the last day and erase a person.
STAGE_TIER = ("tests/test_stages_bronze_silver.py", "tests/test_stages.py")
# The other worker takes the longest modules first (each over 45 s on two busy cores), so that the
# modules left when the tier ends are short ones and both workers finish near the same time.
LONGEST_FIRST = ("tests/test_bad_input.py", "tests/test_dags.py", "tests/test_ingest.py", "tests/test_matching.py",
                 "tests/test_identity.py", "tests/test_export.py", "tests/test_report.py", "tests/test_serving.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The pyramid's base: a test is `unit` unless its module says `stage` or `e2e`.
    for item in items:
        if not any(item.get_closest_marker(m) for m in ("stage", "e2e")):
            item.add_marker(pytest.mark.unit)
    order = {module: i for i, module in enumerate((*STAGE_TIER, *LONGEST_FIRST))}
    items.sort(key=lambda item: order.get(item.nodeid.split("::")[0], len(order)))   # stable: the rest keep their order


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`--dist loadfile`, except that the stage tier's modules are one unit of work: one worker builds their
    warehouse once and runs them in order (the unit is about half the suite, so it is sent first)."""
    from xdist.scheduler import LoadFileScheduling

    class StageTierTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return "stage-tier" if scope in STAGE_TIER else scope

    if config.getvalue("dist") != "loadfile":
        return None
    config.option.loadscopereorder = False      # keep the collection's order: the tier first
    return StageTierTogether(config, log)



@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    env = isolated_environment(tmp_path_factory.mktemp("cdp"))
    os.environ.update(env)  # the stages and the DAG tasks read settings from the environment
    return load_settings()


@pytest.fixture(scope="session")
def spark(settings: Settings) -> Iterator[SparkSession]:
    session = spark_session(settings)
    yield session
    session.stop()


@pytest.fixture
def empty_warehouse(spark: SparkSession) -> SparkSession:
    """Drop every table first, for tests that need to start from nothing."""
    drop_every_table(spark)
    return spark


def drop_every_table(spark: SparkSession) -> None:
    for database in DATABASES:
        for name in table_names(spark, database):
            spark.sql(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture(scope="session")
def landed(settings: Settings, spark: SparkSession) -> dict:
    """The stage tier's warehouse up to silver (tests/stage_tier.py), built once for both of its modules."""
    from tests.stage_tier import build_landed

    drop_every_table(spark)
    return build_landed(settings)
