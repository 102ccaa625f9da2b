from pathlib import Path

import pytest

from jobs.config import ConfigError, load_settings


def test_profile_is_merged_over_base_and_env_overrides_single_values(tmp_path: Path) -> None:
    env = {"CDP_HOME": str(tmp_path), "CDP__SPARK__MASTER": "local[3]", "CDP__GENERATOR__SEED": "7",
           "CDP__SPARK__CONF__spark.driver.memory": "9g"}
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "base.yaml").write_text(
        "paths: {landing: l, truth: t, warehouse: w, metastore: m, jars: j, gx: g, airflow_home: a, alerts: al,\n"
        "        exports: e, bench: b}\n"
        "spark: {master: 'local[*]', conf: {spark.sql.shuffle.partitions: '8', spark.driver.memory: 1g}}\n"
        "generator: {seed: 42, customers: 10}\n")
    (conf / "small.yaml").write_text("spark: {conf: {spark.sql.shuffle.partitions: '2'}}\ngenerator: {customers: 5}\n")

    settings = load_settings("small", environ=env)

    assert settings.profile == "small"
    assert settings.spark_master == "local[3]"
    assert settings.spark_conf == {"spark.sql.shuffle.partitions": "2", "spark.driver.memory": "9g"}
    assert settings.section("generator") == {"seed": 7, "customers": 5}
    assert settings.paths.landing == tmp_path / "l"


def test_profile_comes_from_environment_and_unknown_profile_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_settings(environ={"CDP_PROFILE": "nope"})


def test_shipped_profiles_load() -> None:
    for profile in ("local", "cluster", "standalone", "test"):
        settings = load_settings(profile, environ={})
        assert settings.spark_master
        assert settings.raw["delta"]["maven_coordinates"].startswith("io.delta:delta-spark_")


def test_tables_doc_is_current() -> None:
    from jobs.config import PROJECT_ROOT
    from jobs.docs import render_tables_doc

    assert (PROJECT_ROOT / "docs" / "tables.md").read_text() == render_tables_doc(), "run: cdp docs"
