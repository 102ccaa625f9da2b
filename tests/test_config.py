import dataclasses
import re
import shutil
from pathlib import Path

import pytest

from jobs.platform.config import PROJECT_ROOT, ConfigError, Settings, load_settings
from jobs.platform.settings import GuardsConfig

# conf/audiences.yaml is the audiences' file (export.audiences_file), not a profile.
SHIPPED_PROFILES = sorted(p.stem for p in (PROJECT_ROOT / "conf").glob("*.yaml") if p.stem not in ("base", "audiences"))


def _conf(tmp_path: Path, profile: str = "") -> Path:
    """A conf folder under tmp_path (which is also CDP_HOME): the shipped base.yaml and audiences, and a profile `p`."""
    conf = tmp_path / "conf"
    conf.mkdir()
    for name in ("base.yaml", "audiences.yaml"):
        shutil.copy(PROJECT_ROOT / "conf" / name, conf / name)
    (conf / "p.yaml").write_text(profile)
    return conf


def _env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    return {"CDP_HOME": str(tmp_path), **overrides}


def test_profile_is_merged_over_base_and_env_overrides_single_values(tmp_path: Path) -> None:
    _conf(tmp_path, "spark: {conf: {spark.sql.shuffle.partitions: '2'}}\ngenerator: {customers: 5}\n"
                    "paths: {landing: /elsewhere/landing}\n")
    env = _env(tmp_path, CDP__SPARK__MASTER="local[3]", CDP__GENERATOR__SEED="7",
               **{"CDP__SPARK__CONF__spark.driver.memory": "9g",
                  "CDP__SPARK__CONF__spark.sql.adaptive.enabled": "true"})

    settings = load_settings("p", environ=env)

    assert settings.profile == "p"
    assert settings.root == tmp_path.resolve()
    assert settings.spark_master == "local[3]"
    assert settings.spark_conf["spark.sql.shuffle.partitions"] == "2"       # the profile's
    assert settings.spark_conf["spark.driver.memory"] == "9g"               # the environment's
    assert settings.spark_conf["spark.sql.adaptive.enabled"] == "true"      # a YAML boolean, back to Spark's text
    assert settings.spark_conf["spark.sql.session.timeZone"] == "UTC"       # base's
    assert (settings.generator.seed, settings.generator.customers) == (7, 5)
    assert settings.generator.history_days == 730                           # untouched keys keep base's value
    assert settings.paths.landing == Path("/elsewhere/landing")
    assert settings.paths.warehouse == tmp_path.resolve() / "data" / "warehouse"


def test_profile_comes_from_environment_and_unknown_profile_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_settings(environ={"CDP_PROFILE": "nope"})


@pytest.mark.parametrize("profile", SHIPPED_PROFILES)
def test_shipped_profiles_load(profile: str) -> None:
    settings = load_settings(profile, environ={})
    assert settings.profile == profile
    assert settings.spark_master
    assert settings.delta.maven_coordinates.startswith("io.delta:delta-spark_")
    assert all(p.is_absolute() for p in dataclasses.asdict(settings.paths).values())


def test_sections_are_typed() -> None:
    settings = load_settings("test", environ={})
    assert isinstance(settings.identity.guards.max_cluster_size, int)
    assert settings.clv.holdout_days == 180
    assert settings.segments.clusters.k_range == (3, 4)                     # shrunk by the test profile
    assert settings.generator.end_date.isoformat() == "2026-11-20"
    assert settings.export.destinations["ad_audience"].fields == ("email", "phone")
    assert settings.insights.baskets.levels["product"].max_rules == 200


def test_replaced_paths_and_spark_conf_are_validated_again() -> None:
    settings = load_settings("test", environ={})
    moved = settings.with_paths(warehouse=Path("/tmp/w")).with_spark_conf({"spark.x": "1"})
    assert (moved.paths.warehouse, moved.paths.landing) == (Path("/tmp/w"), settings.paths.landing)
    assert moved.spark_conf == {**settings.spark_conf, "spark.x": "1"}
    assert dataclasses.replace(settings, paths=dataclasses.replace(settings.paths, truth=Path("/t"))).paths.truth \
        == Path("/t")
    with pytest.raises(ValueError, match=r"clv\.holdout_days\n  Input should be a valid integer"):
        dataclasses.replace(settings, clv={**settings.clv.model_dump(), "holdout_days": "x"})
    assert isinstance(settings, Settings) and isinstance(settings.identity.guards, GuardsConfig)


@pytest.mark.parametrize(("profile", "message"), [
    ("identity: {guards: {max_cluster_size: many}}",
     r"identity\.guards\.max_cluster_size: Input should be a valid integer, got 'many'"),
    ("identity: {guards: {max_cluster_size: '50'}}",                # numbers are strict: no quoted numbers
     r"identity\.guards\.max_cluster_size: Input should be a valid integer"),
    ("clv: {margin: 1.5}", r"clv\.margin: Input should be less than or equal to 1"),
    ("clv: {time_unit: month}", r"clv\.time_unit: Input should be 'day' or 'week'"),
    ("quality: {build_data_docs: 1}", r"quality\.build_data_docs: Input should be a valid boolean"),
    ("segments: {rfm_segments: [{name: All, r: [1, 5], f: [2, 5]}]}",
     r"segments\.rfm_segments: Value error, \(r_score, f_score\) \[\(1, 1\)"),
    ("segments: {rfm_segments: [{name: All, r: [1, 5], f: [1, 9]}]}", r"segments\.rfm_segments\[0\]\.f\[1\]"),
    ("lifecycle: {churned_after_days: 10}", r"lifecycle: Value error, churned thresholds must be stricter"),
    ("lifecycle: {transitions: [{from: [new], to: [churned], when: silence}]}",
     r"lifecycle\.transitions\[0\]\.when: Input should be 'first_purchase'"),
    ("lifecycle: {transitions: [{from: [newbie], to: [growing], when: repeat_purchase}]}",
     r"lifecycle\.transitions\[0\]\.from\[0\]: Input should be 'prospect'"),
    ("lifecycle: {actions: {vip: pamper}}", r"lifecycle\.actions\.vip \(the key\): Input should be 'prospect'"),
    ("clv: {growth: {peer_columns: [age_band, wallet]}}",
     r"clv\.growth\.peer_columns: Value error, not columns of gold\.customer_profile: wallet"),
    ("segments: {intent_bands: {high: 0.2, medium: 0.5}}", r"segments\.intent_bands: Value error, medium must be"),
    ("ingest: {plausible_maximum: {pos.price: 10}}",
     r"ingest\.plausible_maximum: Value error, pos\.price: no plausible maximum of that name"),
    ("ingest: {plausible_maximum: {orders.lines.quantity: 0}}",
     r"ingest\.plausible_maximum: Value error, below the contract's minimum.*orders\.lines\.quantity \(0 < 1\)"),
    ("export: {default_destination: billboard}", r"export: Value error, destination\(s\) \['billboard'\]"),
    ("serving: {authentication: ldap}", r"serving: Value error, authentication: ldap needs the ldap: settings"),
    ("serving: {tls: {enabled: true}}", r"serving\.tls: Value error, tls\.enabled needs tls\.keystore"),
    ("paths: {landing: 5}", r"paths\.landing: Input is not a valid path"),
    ("clv: 7", r"clv: Input should be a valid dictionary"),
])
def test_a_wrong_type_in_a_profile_is_an_error_naming_the_key_and_the_profile(
        tmp_path: Path, profile: str, message: str) -> None:
    _conf(tmp_path, profile + "\n")
    with pytest.raises(ConfigError, match=message) as raised:
        load_settings("p", environ=_env(tmp_path))
    assert "profile 'p'" in str(raised.value)


@pytest.mark.parametrize(("profile", "key"), [
    ("clv: {unknown_key: 1}", "clv.unknown_key"),
    ("identity: {guards: {max_cluster_sizes: 50}}", "identity.guards.max_cluster_sizes"),
    ("segments: {value_matrix: {strategies: {tin: {investment: none, strategy: none}}}}",
     "segments.value_matrix.strategies.tin"),
    ("clvv: {holdout_days: 10}", "clvv"),
    ("profile: x", "profile"),
])
def test_an_unknown_key_is_an_error_naming_it(tmp_path: Path, profile: str, key: str) -> None:
    _conf(tmp_path, profile + "\n")
    with pytest.raises(ConfigError, match=re.escape(key) + ": (extra inputs are not permitted|not a)"):
        load_settings("p", environ=_env(tmp_path))


def test_a_missing_key_is_an_error_naming_it(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    (conf / "base.yaml").write_text((conf / "base.yaml").read_text().replace("  holdout_days: 180", ""))
    with pytest.raises(ConfigError, match=r"clv\.holdout_days: Field required"):
        load_settings("p", environ=_env(tmp_path))


def test_an_env_override_of_the_wrong_type_is_rejected_naming_key_and_variable(tmp_path: Path) -> None:
    _conf(tmp_path)
    env = _env(tmp_path, CDP__IDENTITY__GUARDS__MAX_CLUSTER_SIZE="lots")
    with pytest.raises(ConfigError, match=r"identity\.guards\.max_cluster_size: Input should be a valid integer, "
                                          r"got 'lots' \(environment: CDP__IDENTITY__GUARDS__MAX_CLUSTER_SIZE\)"):
        load_settings("p", environ=env)
    with pytest.raises(ConfigError, match=r"clv\.holdout_dayz: extra inputs are not permitted \(environment: "):
        load_settings("p", environ=_env(tmp_path, CDP__CLV__HOLDOUT_DAYZ="10"))
    # The right type is taken, parsed as YAML.
    assert load_settings("p", environ=_env(tmp_path, CDP__IDENTITY__GUARDS__MAX_CLUSTER_SIZE="7")) \
        .identity.guards.max_cluster_size == 7


def test_malformed_yaml_is_a_config_error(tmp_path: Path) -> None:
    _conf(tmp_path, "clv: {holdout_days: [\n")
    with pytest.raises(ConfigError, match=r"p\.yaml is not valid YAML"):
        load_settings("p", environ=_env(tmp_path))


def test_tables_doc_is_current() -> None:
    from jobs.tools.docs import render_tables_doc

    assert (PROJECT_ROOT / "docs" / "tables.md").read_text() == render_tables_doc(), "run: cdp docs"
