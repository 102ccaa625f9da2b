"""`cdp bench` (make bench): the pipeline and its baselines at scale, measured on this machine.

For every size of generated population (bench.pipeline_customers): generate the data (kept
and reused while the seed and size match), run the whole daily pipeline in a child process
as `cdp run` does, sample the resident memory of that process tree, and read seconds and
rows per stage from ops.pipeline_runs; the Spark event log says which executions took the
time. Then resolve the population's CRM contacts with our matcher and with Splink on the
same records. For every size of simulated transactions (bench.transaction_customers): CLV
against lifetimes and RFM against pandas. Everything lands in <paths.bench>/results.json;
`jobs.tools.bench.report` turns it into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

from jobs.platform.config import Settings
from jobs.platform.stages import DAILY
from jobs.tools.bench import baselines, eventlog, identity
from jobs.tools.bench.memory import MemorySampler

GIB = 1024**3
# Folders of one size's run; the generated data (landing, truth) is kept between runs.
RUN_FOLDERS = ("warehouse", "metastore", "gx", "airflow_home", "alerts", "exports", "eventlog")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    import pyspark

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / GIB, 1),
            "os": platform.platform(), "python": platform.python_version(), "java": java[0] if java else "?",
            "spark": pyspark.__version__}


def size_folder(settings: Settings, customers: int) -> Path:
    return settings.paths.bench / f"customers-{customers}"


def child_env(settings: Settings, folder: Path) -> dict[str, str]:
    """Environment of the child `cdp` processes of one size: its own paths, the bench's Spark
    properties, and an uncompressed, unrolled event log."""
    env = dict(os.environ, CDP_PROFILE=settings.profile)
    for name in ("landing", "truth", *RUN_FOLDERS[:-1]):
        env[f"CDP__PATHS__{name.upper()}"] = str(folder / name)
    spark_conf = {**settings.bench.spark_conf, "spark.eventLog.enabled": "true",
                  "spark.eventLog.dir": (folder / "eventlog").as_uri(), "spark.eventLog.compress": "false",
                  "spark.eventLog.rolling.enabled": "false"}
    env.update({f"CDP__SPARK__CONF__{k}": v for k, v in spark_conf.items()})
    return env


def _cdp(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("a") as out:
        return subprocess.Popen([str(Path(sys.executable).with_name("cdp")), *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def ensure_generated(settings: Settings, folder: Path, customers: int, env: dict[str, str]) -> dict[str, Any]:
    """Generate `customers` people into the size's folder unless the same seed and size are there."""
    params = folder / "truth" / "params.json"
    seed = settings.generator.seed
    if params.exists():
        summary = json.loads(params.read_text())
        if summary["customers"] == customers and summary["seed"] == seed:
            return {"seconds": None, "counts": summary["counts"]}
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    process = _cdp("generate", "--customers", str(customers), env=env, log=folder / "generate.log")
    if process.wait():
        raise RuntimeError(f"cdp generate failed: see {folder / 'generate.log'}")
    summary = json.loads(params.read_text())
    return {"seconds": round(time.monotonic() - started, 1), "counts": summary["counts"]}


def _stage_runs(warehouse: Path) -> pd.DataFrame:
    from jobs.delivery.serving import read_table
    from schemas.ops import PIPELINE_RUNS

    runs = read_table(warehouse, PIPELINE_RUNS)
    latest = runs.sort_values("started_at").iloc[-1]["run_id"]
    return runs[runs["run_id"] == latest].sort_values("started_at")


def _stop_tree(process: subprocess.Popen) -> None:
    tree = psutil.Process(process.pid)
    for child in [*tree.children(recursive=True), tree]:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait()


def run_pipeline(folder: Path, env: dict[str, str], as_of: date, max_minutes: float | None = None) -> dict[str, Any]:
    """The whole daily pipeline from an empty warehouse, in a child process; seconds, rows and peak memory
    per stage, and the longest Spark executions of each. A run still going after `max_minutes` is stopped
    and reported with the stages it finished and the one it was in."""
    for name in RUN_FOLDERS:
        shutil.rmtree(folder / name, ignore_errors=True)
    (folder / "eventlog").mkdir(parents=True)
    log = folder / "run.log"
    log.unlink(missing_ok=True)
    started = time.monotonic()
    process = _cdp("run", "--date", as_of.isoformat(), env=env, log=log)
    stopped = False
    with MemorySampler([process.pid]) as memory:
        try:
            code = process.wait(timeout=max_minutes * 60 if max_minutes else None)
        except subprocess.TimeoutExpired:
            _stop_tree(process)
            code, stopped = 0, True
    seconds = time.monotonic() - started
    if code:
        raise RuntimeError(f"cdp run failed (exit {code}): see {log}")
    runs = _stage_runs(folder / "warehouse")
    runs = runs[runs["status"] == "success"]
    event_log = eventlog.event_log_file(folder / "eventlog")
    executions = eventlog.executions(event_log) if event_log else []
    stages = []
    for run in runs.itertuples():
        begin = run.started_at.tz_localize(UTC).timestamp() if run.started_at.tzinfo is None \
            else run.started_at.timestamp()
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
    return {"seconds": round(seconds, 1), "stage_seconds": round(float(runs["seconds"].sum()), 1),
            "gate_seconds": round(float(runs["gate_seconds"].sum()), 1),
            "peak_total_gib": round(overall["total"] / GIB, 2), "peak_driver_gib": round(overall["driver"] / GIB, 2),
            "peak_executors_gib": round(overall["executors"] / GIB, 2), "stages": stages,
            "stopped_after_minutes": max_minutes if stopped else None,
            "missing_stages": [s for s in DAILY if s not in set(runs["stage"])]}


def bench_settings(settings: Settings) -> Settings:
    """The benchmark process's own settings: the bench's Spark properties, and a scratch metastore and
    warehouse so it never locks or writes the project's."""
    scratch = settings.paths.bench / "scratch"
    return settings.with_spark_conf(settings.bench.spark_conf).with_paths(metastore=scratch / "metastore",
                                                                           warehouse=scratch / "warehouse")


def transaction_baselines(spark: Any, settings: Settings, customers: int) -> dict[str, Any]:
    """CLV against lifetimes and RFM against pandas on `customers` simulated BTYD customers."""
    from jobs.value import btyd, clv

    conf = settings.bench.simulation
    bg, gg = btyd.BetaGeo(**conf.btyd.model_dump()), btyd.GammaGamma(**conf.spend.model_dump())
    as_of = settings.generator.end_date
    folder = settings.paths.bench / f"transactions-{customers}"
    path = folder / "transactions.parquet"
    marker = folder / "simulated.json"
    spec = {"customers": customers, **conf.model_dump(mode="json"), "as_of": as_of.isoformat()}
    if not (marker.exists() and json.loads(marker.read_text()) == spec):
        started = time.monotonic()
        rows = baselines.simulate_transactions(path, customers, bg, gg, as_of, conf.history_days, conf.seed)
        marker.write_text(json.dumps(spec))
        (folder / "rows.json").write_text(json.dumps({"rows": rows, "seconds": time.monotonic() - started}))
    rows = json.loads((folder / "rows.json").read_text())["rows"]
    value = replace(clv.ValueSettings.from_conf(settings.clv), unit="day")

    # lifetimes first: its pandas frames then have the memory the driver JVM has not taken yet.
    reference = baselines.clv_lifetimes(path, as_of, value)
    ours = baselines.clv_spark(spark, path, as_of, value, folder / "clv")
    rfm_seconds, rfm_scores = baselines.rfm_spark(spark, path, as_of, settings.segments.quantile_error)
    rfm_pandas_seconds, rfm_reference = baselines.rfm_pandas(path, as_of)
    truth = baselines.true_parameters(bg, gg)
    return {
        "customers": customers, "transactions": rows,
        "clv": {"ours": asdict(ours), "lifetimes": asdict(reference),
                "speedup": round(reference.seconds / ours.seconds, 2),
                "difference_from_lifetimes": baselines.relative_differences(ours.parameters, reference.parameters),
                "difference_from_truth": baselines.relative_differences(ours.parameters, truth), "truth": truth},
        "rfm": {"ours_seconds": round(rfm_seconds, 1), "pandas_seconds": round(rfm_pandas_seconds, 1),
                "speedup": round(rfm_pandas_seconds / rfm_seconds, 2),
                "agreement": baselines.score_agreement(rfm_scores.toPandas(), rfm_reference)},
    }


def run_benchmark(settings: Settings, pipeline_sizes: list[int], transaction_sizes: list[int],
                  skip_identity: bool = False, max_minutes: float | None = None,
                  identity_lists: tuple[int, ...] = (),
                  identity_kinds: tuple[str, ...] = tuple(identity.RUNS)) -> dict[str, Any]:
    """Run everything, printing figures as they come; returns (and saves) the results."""
    from jobs.platform.runtime import spark_session

    as_of = settings.generator.end_date
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
                               "profile": settings.profile, "as_of": as_of.isoformat(),
                               "spark_conf": dict(settings.bench.spark_conf), "pipeline": [],
                               "transactions": [], "identity_lists": [], "identity_day_two": []}
    out = settings.paths.bench / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    # Sizes measured by an earlier run on this machine and profile and not rerun now are kept, so the
    # benchmark can be run size by size; a rerun of a size replaces it.
    earlier = json.loads(out.read_text()) if out.exists() else {}
    if earlier.get("machine") == results["machine"] and earlier.get("profile") == settings.profile:
        results["started"] = min(earlier["started"], results["started"])
        results["pipeline"] = [e for e in earlier["pipeline"] if e["customers"] not in pipeline_sizes]
        results["transactions"] = [e for e in earlier["transactions"] if e["customers"] not in transaction_sizes]
        for key in ("identity_lists", "identity_day_two"):
            results[key] = [e for e in earlier.get(key, [])
                            if e["people"] not in identity_lists or e.get("kind", "day-2") not in identity_kinds]

    def save() -> None:
        for key in ("pipeline", "transactions"):
            results[key].sort(key=lambda e: e["customers"])
        results["identity_lists"].sort(key=lambda e: (e["kind"], e["people"]))
        results["identity_day_two"].sort(key=lambda e: e["people"])
        out.write_text(json.dumps(results, indent=2, default=str) + "\n")

    for customers in pipeline_sizes:
        folder = size_folder(settings, customers)
        env = child_env(settings, folder)
        entry: dict[str, Any] = {"customers": customers, "generate": ensure_generated(settings, folder, customers, env)}
        records = {source: c["records"] for source, c in entry["generate"]["counts"].items()}
        print(f"bench: {customers} customers, generated records {records} "
              f"({entry['generate']['seconds'] or 'reused'} s)", flush=True)
        entry["run"] = run_pipeline(folder, env, as_of, max_minutes)
        for stage in entry["run"]["stages"]:
            print(f"bench: {customers} {stage['stage']:<9} {stage['seconds']:>8.1f} s  {stage['rows_in']:>11} rows in "
                  f"({stage['rows_in_per_second'] or 0:>9}/s)  peak driver {stage['peak_driver_gib']} GiB, "
                  f"executors {stage['peak_executors_gib']} GiB", flush=True)
        print(f"bench: {customers} whole pipeline {entry['run']['seconds']} s, "
              f"peak {entry['run']['peak_total_gib']} GiB", flush=True)
        results["pipeline"].append(entry)
        save()
    spark = spark_session(bench_settings(settings)) \
        if (pipeline_sizes and not skip_identity) or transaction_sizes or identity_lists else None
    if not skip_identity:
        for entry in [e for e in results["pipeline"] if e["customers"] in pipeline_sizes]:
            entry["identity"] = identity.pipeline_contacts(spark, settings, size_folder(settings, entry["customers"]))
            print(f"bench: {entry['customers']} identity {json.dumps(entry['identity'])}", flush=True)
            save()
    for people in identity_lists:
        for kind in identity_kinds:
            entry = identity.RUNS[kind](spark, settings, people)
            print(f"bench: {kind} contacts of {people} people, identity {json.dumps(entry)}", flush=True)
            results["identity_day_two" if kind == "day-2" else "identity_lists"].append(entry)
            save()
    for customers in transaction_sizes:
        entry = transaction_baselines(spark, settings, customers)
        print(f"bench: {customers} simulated customers {json.dumps(entry, default=str)}", flush=True)
        results["transactions"].append(entry)
        save()
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    save()
    return results
