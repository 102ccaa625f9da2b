"""Measured runs of `cdp` in child processes: the daily pipeline's first day and day two at one size, and the demo.

Each measured run is one `cdp run` whose process tree's resident memory is sampled, whose stages'
seconds and rows come from ops.pipeline_runs (of that run only: a warehouse holds the runs of
earlier days too) and whose longest Spark executions come from the event log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

from jobs.platform.config import Settings
from jobs.platform.stages import DAILY
from jobs.tools.bench import eventlog
from jobs.tools.bench.memory import MemorySampler

GIB = 1024**3
# Folders of one size's run; the generated data (landing, truth) is kept between runs.
RUN_FOLDERS = ("warehouse", "metastore", "gx", "airflow_home", "alerts", "exports", "eventlog")


def size_folder(settings: Settings, customers: int) -> Path:
    return settings.paths.bench / f"customers-{customers}"


def demo_folder(settings: Settings, customers: int) -> Path:
    return settings.paths.bench / f"demo-{customers}"


def child_env(settings: Settings, folder: Path, bench_conf: bool = True) -> dict[str, str]:
    """Environment of the child `cdp` processes of one size: its own paths, the bench's Spark
    properties (unless not `bench_conf`: the profile's own, as the demo runs), and an uncompressed,
    unrolled event log."""
    env = dict(os.environ, CDP_PROFILE=settings.profile)
    for name in ("landing", "truth", *RUN_FOLDERS[:-1]):
        env[f"CDP__PATHS__{name.upper()}"] = str(folder / name)
    spark_conf = {**(settings.bench.spark_conf if bench_conf else {}), "spark.eventLog.enabled": "true",
                  "spark.eventLog.dir": (folder / "eventlog").as_uri(), "spark.eventLog.compress": "false",
                  "spark.eventLog.rolling.enabled": "false"}
    env.update({f"CDP__SPARK__CONF__{k}": v for k, v in spark_conf.items()})
    return env


def _cdp(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("a") as out:
        return subprocess.Popen([str(Path(sys.executable).with_name("cdp")), *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _stop_tree(process: subprocess.Popen) -> None:
    tree = psutil.Process(process.pid)
    for child in [*tree.children(recursive=True), tree]:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait()


def _wait(process: subprocess.Popen, what: str, log: Path, max_minutes: float | None) -> bool:
    """Wait for a child `cdp`; True if it was stopped after `max_minutes`. A failure is an error."""
    try:
        code = process.wait(timeout=max_minutes * 60 if max_minutes else None)
    except subprocess.TimeoutExpired:
        _stop_tree(process)
        return True
    if code:
        raise RuntimeError(f"cdp {what} failed (exit {code}): see {log}")
    return False


def _generate(folder: Path, customers: int, env: dict[str, str]) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "generate.log"
    started = time.monotonic()
    _wait(_cdp("generate", "--customers", str(customers), env=env, log=log), "generate", log, None)
    summary = json.loads((folder / "truth" / "params.json").read_text())
    return {"seconds": round(time.monotonic() - started, 1), "counts": summary["counts"]}


def ensure_generated(settings: Settings, folder: Path, customers: int, env: dict[str, str]) -> dict[str, Any]:
    """Generate `customers` people into the size's folder unless the same seed and size are there."""
    params = folder / "truth" / "params.json"
    if params.exists():
        summary = json.loads(params.read_text())
        if summary["customers"] == customers and summary["seed"] == settings.generator.seed:
            return {"seconds": None, "counts": summary["counts"]}
    return _generate(folder, customers, env)


def clear_run_folders(folder: Path) -> None:
    """An empty warehouse, metastore, Airflow home...: the landing (and truth) stay."""
    for name in RUN_FOLDERS:
        shutil.rmtree(folder / name, ignore_errors=True)
    # Spark refuses to start when its event log folder is missing.
    (folder / "eventlog").mkdir(parents=True)


def _utc(timestamps: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(timestamps)
    return stamps.dt.tz_localize(UTC) if stamps.dt.tz is None else stamps.dt.tz_convert(UTC)


def own_run(runs: pd.DataFrame, as_of: date, since: datetime) -> pd.DataFrame:
    """The stage rows (ops.pipeline_runs) of the run measured: the latest run of `as_of` started at or after
    `since`. The first day's run is still in the warehouse when day two is read."""
    mine = runs[(pd.to_datetime(runs["logical_date"]).dt.date == as_of) & (_utc(runs["started_at"]) >= since)]
    if mine.empty:
        return mine
    latest = mine.sort_values("started_at").iloc[-1]["run_id"]
    return mine[mine["run_id"] == latest].sort_values("started_at")


def _stage_runs(warehouse: Path, as_of: date, since: datetime) -> pd.DataFrame:
    """The successful stages of the run measured (none if it was stopped before the run log was created)."""
    from jobs.delivery.serving import read_table, table_path
    from schemas.ops import PIPELINE_RUNS

    if not (table_path(warehouse, PIPELINE_RUNS) / "_delta_log").exists():
        return pd.DataFrame(columns=PIPELINE_RUNS.column_names)
    runs = own_run(read_table(warehouse, PIPELINE_RUNS), as_of, since)
    return runs[runs["status"] == "success"]


def measure_run(folder: Path, env: dict[str, str], as_of: date, log: Path,
                max_minutes: float | None = None) -> dict[str, Any]:
    """One `cdp run --date as_of` on the folder's warehouse as it is, in a child process: seconds, rows and
    peak memory per stage, and the longest Spark executions of each. A run still going after `max_minutes`
    is stopped and reported with the stages it finished and the one it was in."""
    log.unlink(missing_ok=True)
    since = datetime.now(UTC).replace(microsecond=0)
    started = time.monotonic()
    process = _cdp("run", "--date", as_of.isoformat(), env=env, log=log)
    with MemorySampler([process.pid]) as memory:
        stopped = _wait(process, "run", log, max_minutes)
    seconds = time.monotonic() - started
    runs = _stage_runs(folder / "warehouse", as_of, since)
    # The newest event log is this run's: each `cdp run` is one Spark application.
    event_log = eventlog.event_log_file(folder / "eventlog")
    executions = eventlog.executions(event_log) if event_log else []
    stages = []
    for run, begin in zip(runs.itertuples(), _utc(runs["started_at"]), strict=True):
        begin = begin.timestamp()
        end = begin + run.seconds
        peak = memory.peak(begin, end)
        stages.append({
            "stage": run.stage, "seconds": round(run.seconds, 1), "gate_seconds": round(run.gate_seconds, 1),
            "rows_in": int(run.rows_in or 0),
            "rows_out": int(run.rows_out or 0),
            "rows_in_per_second": round((run.rows_in or 0) / run.seconds) if run.seconds else None,
            "peak_driver_gib": round(peak["driver"] / GIB, 2), "peak_executors_gib": round(peak["executors"] / GIB, 2),
            "longest": [e.line() for e in eventlog.longest(executions, begin, end)],
        })
    overall = memory.peak()
    return {"as_of": as_of.isoformat(), "seconds": round(seconds, 1),
            "stage_seconds": round(float(runs["seconds"].sum()), 1),
            "gate_seconds": round(float(runs["gate_seconds"].sum()), 1),
            "peak_total_gib": round(overall["total"] / GIB, 2), "peak_driver_gib": round(overall["driver"] / GIB, 2),
            "peak_executors_gib": round(overall["executors"] / GIB, 2), "stages": stages,
            "stopped_after_minutes": max_minutes if stopped else None,
            "missing_stages": [s for s in DAILY if s not in set(runs["stage"])]}


def ingest_rows(run: dict[str, Any]) -> int | None:
    """Raw lines the run's ingest read (its rows_in), None if ingest did not finish."""
    return next((s["rows_in"] for s in run["stages"] if s["stage"] == "ingest"), None)


def first_day(folder: Path, env: dict[str, str], as_of: date, max_minutes: float | None = None) -> dict[str, Any]:
    """The first day from an empty warehouse, as of the day before `as_of` (history and the daily batches but
    the last): the entry's `run`."""
    clear_run_folders(folder)
    return measure_run(folder, env, as_of - timedelta(days=1), folder / "run.log", max_minutes)


def day_two(folder: Path, env: dict[str, str], as_of: date, first: dict[str, Any],
            max_minutes: float | None = None) -> dict[str, Any]:
    """Day two on the first day's warehouse, as of `as_of` (only the last batch is new). Returns the entry's
    `day_two` and `raw_rows` (ingest's of each day)."""
    second = measure_run(folder, env, as_of, folder / "run-day-two.log", max_minutes)
    return {"day_two": second, "raw_rows": {"first_day": ingest_rows(first), "day_two": ingest_rows(second)}}


def run_demo(settings: Settings, customers: int, as_of: date, max_minutes: float | None = None) -> dict[str, Any]:
    """The demo as a newcomer runs it, in folders of its own: `cdp generate`, then `cdp run` in process
    (measured as the pipeline's runs are), then from an empty warehouse, metastore and Airflow home on
    the same landing `cdp airflow-run` (the path `make run` takes: a spark-submit per task), timed whole."""
    folder = demo_folder(settings, customers)
    env = child_env(settings, folder, bench_conf=False)     # as `make run` runs it
    clear_run_folders(folder)
    generate = _generate(folder, customers, env)
    run = measure_run(folder, env, as_of, folder / "run.log", max_minutes)
    clear_run_folders(folder)
    since = datetime.now(UTC).replace(microsecond=0)
    log = folder / "airflow-run.log"
    log.unlink(missing_ok=True)
    started = time.monotonic()
    stopped = _wait(_cdp("airflow-run", "--date", as_of.isoformat(), env=env, log=log), "airflow-run", log,
                    max_minutes)
    seconds = time.monotonic() - started
    # Where the Airflow run's time went, as far as the stages know it (not the tasks' spark-submit start-up).
    runs = _stage_runs(folder / "warehouse", as_of, since)
    airflow = {"seconds": round(seconds, 1),
               "stages": [{"stage": r.stage, "seconds": round(r.seconds, 1)} for r in runs.itertuples()],
               "stopped_after_minutes": max_minutes if stopped else None,
               "missing_stages": [s for s in DAILY if s not in set(runs["stage"])]}
    return {"customers": customers, "as_of": as_of.isoformat(), "generate": generate, "run": run, "airflow": airflow}
