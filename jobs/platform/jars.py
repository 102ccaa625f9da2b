"""Delta Lake jar cache: resolved from Maven Central once, at setup, then used offline.

`fetch_jars` resolves the Delta coordinates with their runtime dependencies, first with
the machine's Maven (`mvn dependency:copy-dependencies`), else with Spark's own Ivy
resolution, and keeps only the jars Spark does not ship already (Spark's own versions
of Jackson, Parquet, Hadoop and logging must win). A manifest records what was resolved,
so a session can tell a complete cache from a stale or partial one.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

MANIFEST = "manifest.json"
FIX_COMMAND = "make setup  (or: cdp setup-jars)"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>cdp</groupId><artifactId>cdp-delta-jars</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId><version>{version}</version></dependency>
  </dependencies>
</project>
"""


class JarCacheError(RuntimeError):
    """The Delta jar cache is missing, incomplete, or could not be filled."""


def _artifact_name(jar: Path) -> str:
    """'jackson-core-2.13.5.jar' -> 'jackson-core' (strip the version and any classifier)."""
    return re.sub(r"-\d[\w.]*(-[\w.]+)?$", "", jar.stem)


def spark_bundled_artifacts() -> set[str]:
    import pyspark

    return {_artifact_name(j) for j in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}


def _resolve_with_maven(coordinates: str, out_dir: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarCacheError("mvn is not installed")
    group, artifact, version = coordinates.split(":")
    with tempfile.TemporaryDirectory() as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(_POM.format(group=group, artifact=artifact, version=version))
        cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={out_dir}", "-DincludeScope=runtime"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise JarCacheError(f"mvn could not resolve {coordinates}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def _resolve_with_ivy(coordinates: str, out_dir: Path) -> None:
    from pyspark.sql import SparkSession

    ivy_dir = out_dir.parent / "ivy"
    spark = (
        SparkSession.builder.master("local[1]")
        .config("spark.jars.packages", coordinates)
        .config("spark.jars.ivy", str(ivy_dir))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.stop()
    # Ivy names jars '<org>_<artifact>-<version>.jar'; keep Maven's '<artifact>-<version>.jar'.
    for jar in (ivy_dir / "jars").glob("*.jar"):
        shutil.copy2(jar, out_dir / jar.name.split("_", 1)[-1])


def fetch_jars(coordinates: str, jar_dir: Path) -> list[Path]:
    """Fill `jar_dir` with the jars Delta needs beyond Spark's own; returns them."""
    if read_manifest(jar_dir) == coordinates and cached_jars(jar_dir):
        return cached_jars(jar_dir)
    staging = jar_dir.parent / (jar_dir.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    errors = []
    for resolver in (_resolve_with_maven, _resolve_with_ivy):
        try:
            resolver(coordinates, staging)
            break
        except Exception as exc:  # each resolver's failure is reported if both fail
            errors.append(f"{resolver.__name__}: {exc}")
            for jar in staging.glob("*.jar"):
                jar.unlink()
    else:
        raise JarCacheError(f"could not resolve {coordinates} from Maven Central:\n" + "\n".join(errors))

    bundled = spark_bundled_artifacts()
    for jar in staging.glob("*.jar"):
        if _artifact_name(jar) in bundled:
            jar.unlink()
    (staging / MANIFEST).write_text(json.dumps({"coordinates": coordinates}))
    shutil.rmtree(jar_dir, ignore_errors=True)
    staging.rename(jar_dir)  # publish the cache whole, never half-filled
    return cached_jars(jar_dir)


def read_manifest(jar_dir: Path) -> str | None:
    try:
        return json.loads((jar_dir / MANIFEST).read_text())["coordinates"]
    except (OSError, ValueError, KeyError):
        return None


def cached_jars(jar_dir: Path) -> list[Path]:
    return sorted(jar_dir.glob("*.jar"))


def similarity_jar() -> Path:
    """Splink's Scala string similarity functions (jaro_winkler, damerau_levenshtein...) for Spark 4,
    shipped inside the splink wheel: on the class path of every session so the matcher runs them
    in the JVM, not as Python UDFs."""
    import importlib.util

    spec = importlib.util.find_spec("splink")
    if spec is None or spec.origin is None:
        raise JarCacheError("splink is not installed; run: make setup")
    return Path(spec.origin).parent / "internals" / "files" / "spark_jars" / "scala-udf-similarity-0.2.1_spark4.x.jar"


def require_jars(coordinates: str, jar_dir: Path) -> list[Path]:
    """The cached Delta jars for `coordinates` plus Splink's similarity jar, or one clear error naming
    the command that fixes it."""
    found = read_manifest(jar_dir)
    jars = cached_jars(jar_dir)
    if found != coordinates or not any(j.name.startswith("delta-spark") for j in jars):
        state = "missing" if found is None else f"resolved for {found}"
        raise JarCacheError(
            f"Delta Lake jar cache at {jar_dir} is {state}, but {coordinates} is configured. "
            f"Run: {FIX_COMMAND}"
        )
    return [*jars, similarity_jar()]
