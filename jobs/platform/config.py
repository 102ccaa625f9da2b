"""Configuration, read and validated once at the edge.

`conf/base.yaml` is merged with `conf/<profile>.yaml`; then environment variables of the
form ``CDP__SECTION__KEY=value`` override single values. The profile comes from the
``--profile`` flag or ``CDP_PROFILE`` (default ``local``). The merged data is validated
against the models of `jobs.platform.settings`: a wrong type or an unknown key is a
`ConfigError` naming the dotted key. Jobs receive a `Settings` object; they never read
the environment themselves.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass
from pydantic_core import ErrorDetails

from jobs.platform.settings import (
    AlertsConfig,
    BenchConfig,
    CleanseConfig,
    ClusterConfig,
    ClvConfig,
    DeltaConfig,
    ExportConfig,
    GeneratorConfig,
    IdentityConfig,
    IngestConfig,
    InsightsConfig,
    LifecycleConfig,
    Paths,
    PiiConfig,
    QualityConfig,
    SegmentsConfig,
    ServingConfig,
    SparkConfig,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENV_PREFIX = "CDP__"
DEFAULT_PROFILE = "local"
DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"


class ConfigError(ValueError):
    """A configuration file or override is missing or malformed."""


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Settings:
    """A profile's whole configuration. A (pydantic) dataclass: `dataclasses.replace` validates again."""

    profile: str
    root: Path                  # project root (CDP_HOME): relative paths and pii.local_key_dir resolved against it
    paths: Paths                # resolved
    delta: DeltaConfig
    spark: SparkConfig
    generator: GeneratorConfig
    ingest: IngestConfig
    cleanse: CleanseConfig
    identity: IdentityConfig
    clv: ClvConfig
    segments: SegmentsConfig
    lifecycle: LifecycleConfig
    insights: InsightsConfig
    alerts: AlertsConfig
    pii: PiiConfig
    quality: QualityConfig
    serving: ServingConfig
    export: ExportConfig
    cluster: ClusterConfig
    bench: BenchConfig

    @property
    def spark_master(self) -> str:
        return self.spark.master

    @property
    def spark_conf(self) -> dict[str, str]:
        """The profile's Spark properties; the driver JVM's options start with the embedded metastore's
        Derby home, then the profile's own."""
        own = self.spark.conf.get(DRIVER_JAVA_OPTIONS, "")
        return {**self.spark.conf, DRIVER_JAVA_OPTIONS: f"-Dderby.system.home={self.paths.metastore} {own}".strip()}

    def with_paths(self, **changes: Path) -> Settings:
        """The same settings with some paths replaced (taken as given: not resolved against root)."""
        return dataclasses.replace(self, paths=dataclasses.replace(self.paths, **changes))

    def with_spark_conf(self, conf: Mapping[str, str]) -> Settings:
        """The same settings with these Spark properties set on top of the profile's."""
        spark = SparkConfig.model_validate({**self.spark.model_dump(), "conf": {**self.spark.conf, **conf}})
        return dataclasses.replace(self, spark=spark)


# The top-level keys of a configuration file: every field of Settings but the two the loader supplies.
SECTIONS = tuple(f.name for f in dataclasses.fields(Settings) if f.name not in ("profile", "root"))

Key = tuple[str, ...]
_SETTINGS = TypeAdapter(Settings)



def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"configuration file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return data


def _apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[Key, str]]:
    """Apply CDP__A__B=value overrides; returns the data and which variable set which key.

    Values are parsed as YAML scalars (numbers, bools). Spark properties contain dots, so under
    ``spark.conf`` the rest of the name is one key: CDP__SPARK__CONF__spark.driver.memory=8g.
    """
    result, sources = copy.deepcopy(data), {}
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].split("__")
        if parts[:2] == ["SPARK", "CONF"]:
            keys = ["spark", "conf", "__".join(parts[2:])]
        else:
            keys = [p.lower() for p in parts]
        node = result
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: '{key}' is a value, not a section")
        try:
            node[keys[-1]] = yaml.safe_load(value) if value else value
        except yaml.YAMLError as exc:
            raise ConfigError(f"{name}: not a YAML value: {exc}") from exc
        sources[tuple(keys)] = name
    return result, sources


def _dotted(loc: tuple[int | str, ...]) -> str:
    """('segments', 'rfm_segments', 3, 'r') -> 'segments.rfm_segments[3].r'."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "[key]":          # pydantic's marker for an invalid mapping key
            text += " (the key)"
        else:
            text += f".{part}" if text else part
    return text


def _describe(error: ErrorDetails, sources: Mapping[Key, str]) -> str:
    loc = tuple(p for p in error["loc"] if isinstance(p, str) and p != "[key]")
    # Dataclass fields report unknown keys as unexpected arguments: one wording for both.
    unknown = error["type"] in ("extra_forbidden", "unexpected_keyword_argument")
    message = "extra inputs are not permitted" if unknown else error["msg"]
    value = error.get("input")
    if not unknown and error["type"] != "missing" and isinstance(value, str | int | float | bool):
        message += f", got {value!r}"[:120]
    names = [n for keys, n in sources.items() if keys[: len(loc)] == loc or loc[: len(keys)] == keys]
    if names:
        message += f" (environment: {', '.join(names)})"
    return f"{_dotted(error['loc'])}: {message}"


def _validate(data: dict[str, Any], profile: str, root: Path, sources: Mapping[Key, str], where: str) -> Settings:
    reserved = sorted({"profile", "root"} & data.keys())
    if reserved:
        raise ConfigError(f"profile {profile!r} ({where}): {', '.join(reserved)}: not a configuration section; "
                          f"sections are {', '.join(SECTIONS)}")
    try:
        settings = _SETTINGS.validate_python({**data, "profile": profile, "root": root})
    except ValidationError as exc:
        problems = "\n  ".join(_describe(e, sources) for e in exc.errors())
        raise ConfigError(f"invalid configuration for profile {profile!r} ({where}):\n  {problems}") from None
    key_dir = settings.pii.local_key_dir
    pii = settings.pii.model_copy(update={"local_key_dir": root / key_dir}) if key_dir else settings.pii
    return dataclasses.replace(settings, paths=settings.paths.under(root), pii=pii)


def load_settings(
    profile: str | None = None,
    environ: Mapping[str, str] | None = None,
    conf_dir: Path | None = None,
) -> Settings:
    """Load and validate settings for a profile (argument, else $CDP_PROFILE, else 'local')."""
    environ = os.environ if environ is None else environ
    profile = profile or environ.get("CDP_PROFILE") or DEFAULT_PROFILE
    root = Path(environ.get("CDP_HOME", PROJECT_ROOT)).resolve()
    conf_dir = conf_dir or root / "conf"
    data = _deep_merge(_read_yaml(conf_dir / "base.yaml"), _read_yaml(conf_dir / f"{profile}.yaml"))
    data, sources = _apply_env_overrides(data, environ)
    data, audiences_file = _with_audiences(data, root)
    where = f"{conf_dir}/base.yaml + {profile}.yaml" + (f" + {len(sources)} {ENV_PREFIX}* variables" if sources else "")
    where += f" + {audiences_file}" if audiences_file else ""
    return _validate(data, profile, root, sources, where)


def _with_audiences(data: dict[str, Any], root: Path) -> tuple[dict[str, Any], Path | None]:
    """The data with the audiences of `export.audiences_file` (relative to `root`) appended to
    `export.audiences`, validated with the rest; and the file read, if any."""
    export = data.get("export")
    if not isinstance(export, dict) or not export.get("audiences_file"):
        return data, None
    path = root / str(export["audiences_file"])
    audiences = _read_yaml(path).get("audiences") or []
    if not isinstance(audiences, list):
        raise ConfigError(f"{path}: `audiences` must be a list")
    return {**data, "export": {**export, "audiences": [*export.get("audiences", []), *audiences]}}, path
