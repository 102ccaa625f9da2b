"""Delta Lake jar cache: resolved from Maven Central once, at setup, then used offline.

`fetch_jars` resolves the Delta coordinates with their runtime dependencies, first with
the machine's Maven (`mvn dependency:copy-dependencies`), else with Spark's own Ivy
resolution, and keeps only the jars Spark does not ship already (Spark's own versions
of Jackson, Parquet, Hadoop and logging must win). A manifest records what was resolved,
so a session can tell a complete cache from a stale or partial one.

The serving endpoint's own Java classes (serving/java) are compiled into the cache too
(`build_serving_jar`), against the jars PySpark ships: no download, only a JDK.
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


SERVING_JAR = "serving/cdp-serving.jar"


def serving_sources(root: Path) -> list[Path]:
    return sorted((root / "serving" / "java").rglob("*.java"))


def build_serving_jar(root: Path, jar_dir: Path) -> Path:
    """Compile the serving endpoint's Java classes (serving/java: password authentication, the read-only
    parser, the audit listener) against PySpark's own jars into <jar_dir>/serving; returns the jar.
    Rebuilt only when a source is newer than the jar."""
    jar = jar_dir / SERVING_JAR
    sources = serving_sources(root)
    if jar.is_file() and all(s.stat().st_mtime <= jar.stat().st_mtime for s in sources):
        return jar
    javac, jar_tool = shutil.which("javac"), shutil.which("jar")
    if javac is None or jar_tool is None:
        raise JarCacheError("javac and jar are required to build the serving jar "
                            "(apt-get install openjdk-17-jdk-headless)")
    import pyspark

    class_path = str(Path(pyspark.__file__).parent / "jars" / "*")
    with tempfile.TemporaryDirectory() as tmp:
        compiled = subprocess.run([javac, "--release", "17", "-cp", class_path, "-d", tmp, *map(str, sources)],
                                  capture_output=True, text=True)
        if compiled.returncode != 0:
            raise JarCacheError(f"javac failed on serving/java:\n{compiled.stdout}{compiled.stderr}")
        jar.parent.mkdir(parents=True, exist_ok=True)
        staged = jar.with_suffix(".staging")
        subprocess.run([jar_tool, "cf", str(staged), "-C", tmp, "."], check=True)
        staged.rename(jar)
    return jar


def require_serving_jar(root: Path, jar_dir: Path) -> Path:
    """The compiled serving jar, or one clear error naming the command that builds it."""
    jar = jar_dir / SERVING_JAR
    if not jar.is_file():
        raise JarCacheError(f"the serving jar {jar} is missing. Run: {FIX_COMMAND}")
    if any(s.stat().st_mtime > jar.stat().st_mtime for s in serving_sources(root)):
        raise JarCacheError(f"the serving jar {jar} is older than serving/java. Run: {FIX_COMMAND}")
    return jar
