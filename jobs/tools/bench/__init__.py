"""`cdp bench` (make bench): the pipeline and its baselines at scale, measured on this machine.

The demo (bench.demo_customers, 2,000 people) as a newcomer runs it: `cdp generate`, `cdp run` in
process, then `cdp airflow-run` from an empty warehouse. For every size of generated population
(bench.pipeline_customers): generate the data (kept and reused while the seed and size match), run
the daily pipeline's first day (history and the daily batches but the last) from an empty warehouse
and then its day two (the last batch) on the same warehouse, each in a child process as `cdp run`
does; sample the resident memory of that process tree, and read seconds and rows per stage of that
run from ops.pipeline_runs; the Spark event log says which executions took the time
(`jobs.tools.bench.pipeline`). Then resolve the population's CRM contacts with our matcher and with
Splink on the same records. For every size of simulated transactions (bench.transaction_customers):
CLV against lifetimes and RFM against pandas. Everything lands in <paths.bench>/results.json;
`jobs.tools.bench.report` turns it into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from jobs.platform.config import Settings
from jobs.tools.bench import baselines, identity
from jobs.tools.bench.pipeline import GIB, child_env, day_two, ensure_generated, first_day, run_demo, size_folder


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    import pyspark

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / GIB, 1),
            "os": platform.platform(), "python": platform.python_version(), "java": java[0] if java else "?",
            "spark": pyspark.__version__}


def _print_run(label: str, run: dict[str, Any]) -> None:
    for stage in run["stages"]:
        print(f"bench: {label} {stage['stage']:<9} {stage['seconds']:>8.1f} s  {stage['rows_in']:>11} rows in "
              f"({stage['rows_in_per_second'] or 0:>9}/s)  peak driver {stage['peak_driver_gib']} GiB, "
              f"executors {stage['peak_executors_gib']} GiB", flush=True)
    print(f"bench: {label} whole run {run['seconds']} s, peak {run['peak_total_gib']} GiB"
          + (f", stopped after {run['stopped_after_minutes']:g} min" if run["stopped_after_minutes"] else ""),
          flush=True)


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
                  identity_kinds: tuple[str, ...] = tuple(identity.RUNS),
                  demo_customers: int | None = None) -> dict[str, Any]:
    """Run everything, printing figures as they come; returns (and saves) the results. The demo runs
    when `demo_customers` is given."""
    from jobs.platform.runtime import spark_session

    as_of = settings.generator.end_date
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
                               "profile": settings.profile, "as_of": as_of.isoformat(),
                               "spark_conf": dict(settings.bench.spark_conf), "pipeline": [],
                               "transactions": [], "identity_lists": [], "identity_day_two": [], "demo": None}
    out = settings.paths.bench / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    # Sizes measured by an earlier run on this machine and profile and not rerun now are kept, so the
    # benchmark can be run size by size; a rerun of a size replaces it.
    earlier = json.loads(out.read_text()) if out.exists() else {}

    def rerun(entry: dict[str, Any]) -> bool:
        """Whether this run measures an earlier identity entry again (a fixed-size list at any size)."""
        kind = entry.get("kind", "day-2")
        return bool(identity_lists) and kind in identity_kinds and (
            entry["people"] in identity_lists or kind in identity.FIXED_SIZE)
    if earlier.get("machine") == results["machine"] and earlier.get("profile") == settings.profile:
        results["started"] = min(earlier["started"], results["started"])
        results["demo"] = earlier.get("demo")
        results["pipeline"] = [e for e in earlier["pipeline"] if e["customers"] not in pipeline_sizes]
        results["transactions"] = [e for e in earlier["transactions"] if e["customers"] not in transaction_sizes]
        for key in ("identity_lists", "identity_day_two"):
            results[key] = [e for e in earlier.get(key, []) if not rerun(e)]

    def save() -> None:
        for key in ("pipeline", "transactions"):
            results[key].sort(key=lambda e: e["customers"])
        results["identity_lists"].sort(key=lambda e: (e["kind"], e["people"]))
        results["identity_day_two"].sort(key=lambda e: e["people"])
        out.write_text(json.dumps(results, indent=2, default=str) + "\n")

    if demo_customers:
        results["demo"] = run_demo(settings, demo_customers, as_of, max_minutes)
        demo = results["demo"]
        print(f"bench: demo of {demo_customers} people, generated in {demo['generate']['seconds']} s", flush=True)
        _print_run(f"demo {demo_customers} cdp run", demo["run"])
        print(f"bench: demo {demo_customers} cdp airflow-run {demo['airflow']['seconds']} s", flush=True)
        save()
    for customers in pipeline_sizes:
        folder = size_folder(settings, customers)
        env = child_env(settings, folder)
        entry: dict[str, Any] = {"customers": customers, "generate": ensure_generated(settings, folder, customers, env)}
        records = {source: c["records"] for source, c in entry["generate"]["counts"].items()}
        print(f"bench: {customers} customers, generated records {records} "
              f"({entry['generate']['seconds'] or 'reused'} s)", flush=True)
        entry["run"] = first_day(folder, env, as_of, max_minutes)
        _print_run(f"{customers} first day", entry["run"])
        stopped = entry["run"]["stopped_after_minutes"]
        # Saved before day two, so a day two stopped from outside keeps the first day's figures.
        entry["day_two"] = {"skipped": f"the first day was stopped after {max_minutes:g} min" if stopped
                            else "stopped from outside before it finished"}
        results["pipeline"].append(entry)
        save()
        if stopped:
            print(f"bench: {customers} day two not run: {entry['day_two']['skipped']}", flush=True)
            continue
        entry.update(day_two(folder, env, as_of, entry["run"], max_minutes))
        _print_run(f"{customers} day two", entry["day_two"])
        save()
    spark = spark_session(bench_settings(settings)) \
        if (pipeline_sizes and not skip_identity) or transaction_sizes or identity_lists else None
    if not skip_identity:
        for entry in [e for e in results["pipeline"] if e["customers"] in pipeline_sizes]:
            entry["identity"] = identity.pipeline_contacts(spark, settings, size_folder(settings, entry["customers"]))
            print(f"bench: {entry['customers']} identity {json.dumps(entry['identity'])}", flush=True)
            save()
    sized_runs = [(people, kind) for people in identity_lists for kind in identity_kinds
                  if kind not in identity.FIXED_SIZE]
    fixed_runs = [(0, kind) for kind in identity_kinds if kind in identity.FIXED_SIZE and identity_lists]
    for people, kind in sized_runs + fixed_runs:
        entry = identity.RUNS[kind](spark, settings, people)
        print(f"bench: {kind} contacts of {entry['people']} people, identity {json.dumps(entry)}", flush=True)
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
