"""Typed configuration, read once at the edge.

`conf/base.yaml` is merged with `conf/<profile>.yaml`; then environment variables of the
form ``CDP__SECTION__KEY=value`` override single values. The profile comes from the
``--profile`` flag or ``CDP_PROFILE`` (default ``local``). Jobs receive a `Settings`
object; they never read the environment themselves.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "CDP__"
DEFAULT_PROFILE = "local"


class ConfigError(ValueError):
    """A configuration file or override is missing or malformed."""


@dataclass(frozen=True)
class Paths:
    landing: Path
    truth: Path
    warehouse: Path
    metastore: Path
    jars: Path
    gx: Path
    airflow_home: Path
    alerts: Path
    exports: Path
    bench: Path


@dataclass(frozen=True)
class Settings:
    profile: str
    root: Path
    paths: Paths
    raw: Mapping[str, Any] = field(repr=False)

    def section(self, name: str) -> dict[str, Any]:
        """A copy of one top-level section (e.g. ``generator``), for code that owns it."""
        return copy.deepcopy(self.raw.get(name, {}))

    @property
    def spark_master(self) -> str:
        return str(self.raw["spark"]["master"])

    @property
    def spark_conf(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.raw["spark"].get("conf", {}).items()}


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
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return data


def _apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Apply CDP__A__B=value overrides. Values are parsed as YAML scalars (numbers, bools).

    Spark properties contain dots, so under ``spark.conf`` the rest of the name is one key:
    CDP__SPARK__CONF__spark.driver.memory=8g.
    """
    result = copy.deepcopy(data)
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
        node[keys[-1]] = yaml.safe_load(value) if value else value
    return result


def load_settings(
    profile: str | None = None,
    environ: Mapping[str, str] | None = None,
    conf_dir: Path | None = None,
) -> Settings:
    """Load settings for a profile (argument, else $CDP_PROFILE, else 'local')."""
    environ = os.environ if environ is None else environ
    profile = profile or environ.get("CDP_PROFILE") or DEFAULT_PROFILE
    root = Path(environ.get("CDP_HOME", PROJECT_ROOT)).resolve()
    conf_dir = conf_dir or root / "conf"
    data = _deep_merge(_read_yaml(conf_dir / "base.yaml"), _read_yaml(conf_dir / f"{profile}.yaml"))
    data = _apply_env_overrides(data, environ)

    def resolve(p: str) -> Path:
        path = Path(p)
        return path if path.is_absolute() else root / path

    try:
        paths = Paths(**{k: resolve(v) for k, v in data["paths"].items()})
    except TypeError as exc:
        raise ConfigError(f"paths section does not match {list(Paths.__dataclass_fields__)}: {exc}") from exc
    return Settings(profile=profile, root=root, paths=paths, raw=data)
