"""docs/BENCHMARKS.md from the results of `cdp bench`: figures, ratios between sizes, targets met or missed."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from jobs.platform.settings import BenchTargets

GIB = "GiB"
# Everything after this line of the report is written by hand and kept when the figures are regenerated.
ANALYSIS_MARKER = "<!-- analysis: kept by cdp bench -->"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]


def _verdict(met: bool, how: str) -> str:
    return f"**met** ({how})" if met else f"**missed** ({how})"


def _run_summary(run: dict[str, Any], gate_share: float) -> str:
    return (f"**{run['seconds']} s**, peak resident memory **{run['peak_total_gib']} {GIB}** "
            f"(driver {run['peak_driver_gib']}, executors {run['peak_executors_gib']})."
            + (f" Quality gates: {run['gate_seconds']} s, **{run['gate_seconds'] / run['stage_seconds']:.0%}** "
               f"of the stages' time (target at most {gate_share:.0%})."
               if run.get("gate_seconds") is not None and run.get("stage_seconds") else "")
            + (f" **Stopped after {run['stopped_after_minutes']:g} min** in stage {run['missing_stages'][0]}; "
               f"not run: {', '.join(run['missing_stages'])}." if run.get("stopped_after_minutes") else ""))


def _stage_table(run: dict[str, Any]) -> list[str]:
    return _table(["stage", "seconds", "gate seconds", "rows in", "rows in/s", "rows out", "peak driver GiB",
                   "peak executors GiB", "longest Spark executions"],
                  [[s["stage"], s["seconds"], s.get("gate_seconds", ""), f"{s['rows_in']:,}",
                    f"{s['rows_in_per_second'] or 0:,}",
                    f"{s['rows_out']:,}", s["peak_driver_gib"], s["peak_executors_gib"],
                    "<br>".join(s["longest"])] for s in run["stages"]])


def day_two_cost(entry: dict[str, Any]) -> str | None:
    """Day two's time and raw rows against the first day's: cost should grow with the new rows, not history."""
    day_two, raw = entry.get("day_two", {}), entry.get("raw_rows", {})
    if "seconds" not in day_two or not raw.get("first_day") or raw.get("day_two") is None:
        return None
    time_share = day_two["seconds"] / entry["run"]["seconds"]
    row_share = raw["day_two"] / raw["first_day"]
    return (f"{time_share:.0%} of the first day's time ({day_two['seconds']} s against {entry['run']['seconds']} s) "
            f"for {row_share:.1%} of its raw rows ({raw['day_two']:,} against {raw['first_day']:,})"
            + (f": its share of the time is {time_share / row_share:.0f}x its share of the rows"
               if raw["day_two"] else ""))


def pipeline_section(entries: list[dict[str, Any]], gate_share: float) -> list[str]:
    out = ["## Daily pipeline, first day and day two", "",
           "Two `cdp run`s at each size, each in a child process whose resident memory is sampled every 0.5 s: "
           "the first day from an empty warehouse, as of the day before the as-of date (history and the daily "
           "batches but the last), then day two on the same warehouse, as of the as-of date (only the last daily "
           "batch is new). Driver: the driver JVM (which also runs the tasks in local mode) and the Python driver; "
           "executors: executor JVMs and Python workers.", ""]
    for entry in entries:
        run, counts = entry["run"], entry["generate"]["counts"]
        raw = sum(c.get("records", 0) for c in counts.values())
        per_source = ", ".join(f"{source} {c.get('records', 0):,}" for source, c in counts.items())
        out += [f"### {entry['customers']:,} customers", "",
                f"Generated records: {raw:,} ({per_source})"
                + (f"; generation took {entry['generate']['seconds']} s." if entry['generate']['seconds'] else "."),
                "", "First day: " + _run_summary(run, gate_share), "", *_stage_table(run), ""]
        day_two = entry.get("day_two")
        if day_two is None:
            continue
        if "skipped" in day_two:
            out += [f"Day two: not run ({day_two['skipped']}).", ""]
            continue
        cost = day_two_cost(entry)
        out += ["Day two: " + _run_summary(day_two, gate_share) + (f" Against the first day: {cost}." if cost else ""),
                "", *_stage_table(day_two), ""]
    if len(entries) > 1:
        out += ["### How cost grows with data", "",
                "Time of each stage of the first day at each size over its time at the previous size, next to the "
                "ratio of customers.",
                ""]
        header = ["stage"] + [f"{b['customers']:,} / {a['customers']:,} (data x{b['customers'] / a['customers']:g})"
                              for a, b in pairwise(entries)]
        stages = [s["stage"] for s in entries[-1]["run"]["stages"]]
        rows = []
        for stage in [*stages, "whole run"]:
            row = [stage]
            for a, b in pairwise(entries):
                ta = a["run"]["seconds"] if stage == "whole run" else \
                    next((s["seconds"] for s in a["run"]["stages"] if s["stage"] == stage), None)
                tb = b["run"]["seconds"] if stage == "whole run" else \
                    next((s["seconds"] for s in b["run"]["stages"] if s["stage"] == stage), None)
                row.append(f"x{tb / ta:.1f}" if ta and tb else "")
            rows.append(row)
        out += [*_table(header, rows), ""]
    return out


def demo_section(demo: dict[str, Any] | None, gate_share: float) -> list[str]:
    if not demo:
        return []
    run, airflow = demo["run"], demo["airflow"]
    by_time = sorted(airflow["stages"], key=lambda s: -s["seconds"])
    slowest = ", ".join(f"{s['stage']} {s['seconds']} s" for s in by_time)
    return ["## Demo", "",
            f"The demo as a newcomer runs it, {demo['customers']:,} people (`bench.demo_customers`), in folders of "
            f"its own: `cdp generate --customers {demo['customers']}` ({demo['generate']['seconds']} s), then "
            f"`cdp run --date {demo['as_of']}` in process (one child process, measured as the pipeline's runs "
            "are), then from an empty warehouse, metastore and Airflow home on the same landing `cdp airflow-run "
            f"--date {demo['as_of']}` (the path `make run` takes: a spark-submit per task), timed as a whole.", "",
            "`cdp run`: " + _run_summary(run, gate_share), "", *_stage_table(run), "",
            f"`cdp airflow-run`: **{airflow['seconds']} s** wall"
            + (f", stopped after {airflow['stopped_after_minutes']:g} min" if airflow.get("stopped_after_minutes")
               else "")
            + (f"; its stages, slowest first (as ops.pipeline_runs times them, without the tasks' start-up): "
               f"{slowest}."
               if slowest else "."), ""]


def identity_section(entries: list[dict[str, Any]]) -> list[str]:
    rows = []
    for entry in entries:
        identity = entry.get("identity")
        if not identity or identity.get("skipped"):
            continue
        ours, splink = identity["ours"], identity["splink"]
        rows.append([f"{entry['customers']:,}", f"{identity['records']:,}", f"{identity['persons']:,}",
                     ours["seconds"], splink["seconds"], f"{ours['seconds'] / splink['seconds']:.2f}",
                     f"{ours['precision']:.4f} / {ours['recall']:.4f} / **{ours['f1']:.4f}**",
                     f"{splink['precision']:.4f} / {splink['recall']:.4f} / **{splink['f1']:.4f}**"])
    if not rows:
        return []
    return ["## Identity resolution against Splink", "",
            "The population's standardised CRM contact records (silver.contacts in the match form), resolved by "
            "our matcher (`jobs.identity.contact_list.resolve_records`: deterministic keys and Fellegi-Sunter "
            "with EM, on Spark) and by Splink 5 on DuckDB configured alike (the same comparisons but gender and "
            "loyalty number, whose m probabilities underflow in Splink's EM; the same blocking keys; u by random "
            "sampling, m by EM blocked on given name and birth date, then e-mail; links at the same threshold; "
            "connected components). Pairwise precision, recall "
            "and F1 against the generator's ground truth.", "",
            *_table(["customers", "contact records", "persons", "ours s", "Splink s", "time ours / Splink",
                     "ours P / R / F1", "Splink P / R / F1"], rows), ""]


def identity_lists_section(entries: list[dict[str, Any]]) -> list[str]:
    if not entries:
        return []
    rows = [[e["kind"], f"{e['people']:,}", f"{e['records']:,}", f"{e['candidate_pairs']:,}", e["ours"]["seconds"],
             e["splink"]["seconds"], f"{e['ours']['seconds'] / e['splink']['seconds']:.2f}",
             f"{e['ours']['pairs_per_second']:,}", f"{e['splink']['pairs_per_second']:,}",
             f"{e['ours']['precision']:.4f} / {e['ours']['recall']:.4f} / **{e['ours']['f1']:.4f}**",
             f"{e['splink']['precision']:.4f} / {e['splink']['recall']:.4f} / **{e['splink']['f1']:.4f}**"]
            for e in entries]
    return ["## Identity resolution on contact lists", "",
            "Lists read and standardised as `cdp resolve` does: `generator`, the CRM contacts the "
            "pipeline's generator writes (latest version of each contact); `typo-heavy`, lists from `cdp "
            "generate-contacts` (names at skewed frequencies, households sharing surname, address and often phone "
            "or e-mail, one to four defects per duplicate); `febrl3` and `febrl4`, FEBRL's public data sets (5,000 "
            "records of 2,000 people; 10,000 of 5,000 in two files), not made by us: misspelt, swapped and missing "
            "names, corrupted birth dates, postcodes and addresses, no e-mail or phone. "
            "Ours: `jobs.identity.contact_list.resolve_records` "
            "(Splink's model trained on a sample in DuckDB, scored on Spark, person evidence, shared contact "
            "points, components). Splink: version 5 on DuckDB as "
            "its documentation sets up a person dedupe, on the same blocking rules. Pairs: the candidate pairs of "
            "the blocking rules (an upper bound: rules overlap).", "",
            *_table(["records from", "people", "records", "pairs", "ours s", "Splink s", "time ours / Splink",
                     "ours pairs/s", "Splink pairs/s", "ours P / R / F1", "Splink P / R / F1"], rows), ""]


def identity_day_two_section(entries: list[dict[str, Any]]) -> list[str]:
    if not entries:
        return []
    rows = [[f"{e['people']:,}", f"{e['records']:,}", f"{e['new_records']:,}", e["first_day_seconds"],
             e["incremental_seconds"], e["full_seconds"], "yes" if e["same_customers_as_full"] else "**no**",
             f"{e['ids_kept']:.3%}", f"{e['precision']:.4f} / {e['recall']:.4f} / **{e['f1']:.4f}**"]
            for e in entries]
    return ["## Identity resolution, day two", "",
            "The generator's contacts, 0.5% of them (by a hash of the record id) arriving a day late. Day one is "
            "resolved from nothing (`jobs.identity.resolution.resolution`, the resolve stage's transform, with "
            "no other sources); day two incrementally with day one's model (only the new records scored "
            "against the rest, only the customers they touch clustered again) and, on the same model, in full. "
            "Ids kept: the share of day one's nodes with the same customer id on day two.", "",
            *_table(["people", "contact records", "new on day two", "day one s", "day two s (incremental)",
                     "day two s (full)", "same customers as full", "ids kept", "day two P / R / F1"], rows), ""]


def transactions_section(entries: list[dict[str, Any]]) -> list[str]:
    if not entries:
        return []
    rows, params, rfm = [], [], []
    for entry in entries:
        clv = entry["clv"]
        rows.append([f"{entry['customers']:,}", f"{entry['transactions']:,}", round(clv["ours"]["seconds"], 1),
                     round(clv["lifetimes"]["seconds"], 1), f"x{clv['speedup']}",
                     f"{max(clv['difference_from_lifetimes'].values()):.2%}",
                     f"{max(clv['difference_from_truth'].values()):.2%}"])
        for name, truth in clv["truth"].items():
            params.append([f"{entry['customers']:,}", name, truth, f"{clv['ours']['parameters'][name]:.4f}",
                           f"{clv['lifetimes']['parameters'][name]:.4f}",
                           f"{clv['difference_from_lifetimes'][name]:.3%}"])
        r = entry["rfm"]
        rfm.append([f"{entry['customers']:,}", r["ours_seconds"], r["pandas_seconds"], f"x{r['speedup']}",
                    f"{r['agreement']:.2%}"])
    return ["## CLV against lifetimes, RFM against pandas", "",
            "Transactions simulated from known BG/NBD and Gamma-Gamma parameters (day units, `bench.simulation`), "
            "one Parquet file per size. Ours: the steps of `cdp clv` (`jobs.value.clv`: daily transactions, "
            "summary, both fits, CLV of every customer written as Parquet) on Spark. lifetimes 0.11: "
            "`summary_data_from_transaction_data`, `BetaGeoFitter`, `GammaGammaFitter`, "
            "`customer_lifetime_value` over the same horizon. Both start from reading the file.", "",
            *_table(["customers", "transactions", "ours s", "lifetimes s", "speed-up", "max parameter difference "
                     "from lifetimes", "max difference from truth"], rows), "",
            *_table(["customers", "parameter", "true", "ours", "lifetimes", "difference"], params), "",
            *[f"Our steps at {e['customers']:,}: "
              + ", ".join(f"{k} {v} s" for k, v in e["clv"]["ours"]["phases"].items()) + "." for e in entries
              if e["clv"]["ours"].get("phases")], "",
            "RFM: ours is `segments.purchase_summary` + `segments.rfm_scores` (approximate quintiles, relative "
            "error `segments.quantile_error`); pandas is the same computation with exact quantiles. Agreement: "
            "customers given the same three scores.", "",
            *_table(["customers", "ours s", "pandas s", "speed-up", "same scores"], rfm), ""]


def _against(run: dict[str, Any], limit: float) -> str:
    """A run's verdict against a time limit: by how much, and its three slowest stages."""
    slowest = sorted(run["stages"], key=lambda s: -s["seconds"])[:3]
    where = "; ".join(f"{s['stage']} {s['seconds']} s ({s['seconds'] / run['seconds']:.0%})" for s in slowest)
    # Minutes for the limits people think of in minutes (the 20-minute pipeline), seconds below.
    took = f"{run['seconds'] / 60:.1f} min" if limit >= 600 else f"{run['seconds']} s"
    if run.get("stopped_after_minutes"):
        return _verdict(False, f"not finished after {took}, over {run['seconds'] / limit:.2f}x the target: stopped "
                               f"in stage {(run['missing_stages'] or ['?'])[0]}; the finished stages' time went to "
                               f"{where or 'none'}")
    return _verdict(run["seconds"] <= limit, f"{took}, {run['seconds'] / limit:.2f}x the target; the time goes "
                                             f"to {where}")


def targets_section(results: dict[str, Any], targets: BenchTargets) -> list[str]:
    lines = ["## Targets", ""]
    size = targets.pipeline_customers
    entry = next((e for e in results["pipeline"] if e["customers"] == size), None)
    if entry:
        run = entry["run"]
        limit = targets.pipeline_seconds
        lines.append(f"- {size:,} customers through the daily pipeline in under {limit / 60:g} min: "
                     + _against(run, limit))
        mem = targets.peak_memory_gib
        lines.append(f"- peak memory under {mem:g} GiB: " + _verdict(
            run["peak_total_gib"] <= mem, f"{run['peak_total_gib']} GiB"))
        if "gate_seconds" in run:
            share = run["gate_seconds"] / run["stage_seconds"]
            lines.append(f"- quality gates at most {targets.gate_share:.0%} of the stages' time: " + _verdict(
                share <= targets.gate_share, f"{share:.0%}, {run['gate_seconds']} s"))
        if entry.get("identity", {}).get("skipped"):
            lines.append(f"- identity against Splink at {size:,} customers: not run ({entry['identity']['skipped']})")
        elif entry.get("identity"):
            ours, splink = entry["identity"]["ours"], entry["identity"]["splink"]
            ratio, limit_ratio = ours["seconds"] / splink["seconds"], targets.time_ratio(size)
            lines.append("- identity F1 at least Splink's: " + _verdict(
                ours["f1"] >= splink["f1"], f"{ours['f1']:.4f} against {splink['f1']:.4f}"))
            lines.append(f"- identity time at most {limit_ratio:g}x Splink's: " + _verdict(
                ratio <= limit_ratio, f"{ratio:.2f}x"))
    else:
        lines.append(f"- {size:,} customers through the daily pipeline: not run in this benchmark")
    day_two = (entry or {}).get("day_two")
    what = f"- day two of {size:,} customers (only the last daily batch new) in at most {targets.day_two_seconds:g} s"
    if not day_two:
        lines.append(f"{what}: not run in this benchmark")
    elif "skipped" in day_two:
        lines.append(f"{what}: not run ({day_two['skipped']})")
    else:
        lines.append(f"{what}: " + _against(day_two, targets.day_two_seconds))
        cost = day_two_cost(entry)
        if cost:
            lines.append(f"- day two of {size:,} customers against the first day (cost should grow with the new "
                         f"rows, not with history): {cost}")
    demo = results.get("demo")
    if demo:
        lines.append(f"- `cdp run` of the {demo['customers']:,}-person demo in process in at most "
                     f"{targets.demo_seconds:g} s: " + _against(demo["run"], targets.demo_seconds))
        lines.append(f"- `cdp airflow-run` of the {demo['customers']:,}-person demo (the path of `make run`) in at "
                     f"most {targets.demo_airflow_seconds:g} s: " + _against(demo["airflow"],
                                                                              targets.demo_airflow_seconds))
    else:
        lines.append(f"- `cdp run` of the demo in process in at most {targets.demo_seconds:g} s: "
                     "not run in this benchmark")
        lines.append(f"- `cdp airflow-run` of the demo in at most {targets.demo_airflow_seconds:g} s: "
                     "not run in this benchmark")
    for entry in results.get("identity_lists", []):
        ours, splink = entry["ours"], entry["splink"]
        floor = targets.typo_heavy_f1 if entry["kind"] == "typo-heavy" else 0.0
        lines.append(f"- {entry['kind']} contacts of {entry['people']:,} people, precision at least "
                     f"{targets.identity_precision:g}: " + _verdict(ours["precision"] >= targets.identity_precision,
                                                                    f"{ours['precision']:.4f}"))
        lines.append(f"- {entry['kind']} contacts of {entry['people']:,} people, F1 at least "
                     + (f"{floor:g} and " if floor else "") + "Splink's: "
                     + _verdict(ours["f1"] >= max(floor, splink["f1"]),
                                f"{ours['f1']:.4f} against Splink's {splink['f1']:.4f}"))
        lines.append(f"- {entry['kind']} contacts of {entry['people']:,} people, time at most "
                     f"{targets.time_ratio(entry['people']):g}x Splink's: " + _verdict(
                         ours["seconds"] <= targets.time_ratio(entry["people"]) * splink["seconds"],
                         f"{ours['seconds'] / splink['seconds']:.2f}x ({ours['seconds']} s against "
                         f"{splink['seconds']} s)"))
    for entry in results.get("identity_day_two", []):
        lines.append(f"- day two of {entry['people']:,} people's contacts ({entry['new_records']:,} new records) "
                     f"resolved in at most {targets.identity_day_two_seconds:g} s: " + _verdict(
                         entry["incremental_seconds"] <= targets.identity_day_two_seconds,
                         f"{entry['incremental_seconds']} s (a full recompute: {entry['full_seconds']} s)"))
        lines.append(f"- day two of {entry['people']:,} people: the customers of a full recompute, and at least "
                     f"{targets.identity_ids_kept:.1%} of ids kept: " + _verdict(
                         entry["same_customers_as_full"] and entry["ids_kept"] >= targets.identity_ids_kept,
                         f"{'the same customers' if entry['same_customers_as_full'] else 'other customers'}, "
                         f"{entry['ids_kept']:.3%} of ids kept"))
    for customers, speedup in sorted(targets.clv_speedup.items()):
        entry = next((e for e in results["transactions"] if e["customers"] == customers), None)
        if entry is None:
            lines.append(f"- CLV at {customers:,} customers: not run in this benchmark")
            continue
        clv = entry["clv"]
        worst = max(clv["difference_from_lifetimes"].items(), key=lambda kv: kv[1])
        lines.append(f"- CLV at {customers:,} customers at least {speedup:g}x faster than lifetimes: " + _verdict(
            clv["speedup"] >= speedup, f"x{clv['speedup']}"))
        tolerance = targets.parameter_tolerance
        lines.append(f"- CLV parameters at {customers:,} customers within {tolerance:.1%} of lifetimes': " + _verdict(
            worst[1] <= tolerance, f"largest difference {worst[1]:.3%}, {worst[0]}"))
    for customers, speedup in sorted(targets.rfm_speedup.items()):
        entry = next((e for e in results["transactions"] if e["customers"] == customers), None)
        lines.append(f"- RFM at {customers:,} customers at least {speedup:g}x pandas' speed: " + (
            "not run in this benchmark" if entry is None else
            _verdict(entry["rfm"]["speedup"] >= speedup, f"x{entry['rfm']['speedup']}")))
    return [*lines, ""]


def render(results: dict[str, Any], targets: BenchTargets, command: str, notes: str = "") -> str:
    m = results["machine"]
    head = ["# Benchmarks", "",
            f"Produced by `{command}` (started {results['started']}, finished {results.get('finished', '?')}), "
            f"profile `{results['profile']}`, as-of date {results['as_of']}. Regenerate with the same command; "
            "the raw figures are in `data/bench/results.json`.", "",
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['os']}; Python {m['python']}, "
            f"{m['java']}, Spark {m['spark']}. Spark properties of the measured runs: "
            + ", ".join(f"`{k}={v}`" for k, v in results["spark_conf"].items()) + ".", ""]
    body = (targets_section(results, targets) + demo_section(results.get("demo"), targets.gate_share)
            + pipeline_section(results["pipeline"], targets.gate_share)
            + identity_section(results["pipeline"]) + identity_lists_section(results.get("identity_lists", []))
            + identity_day_two_section(results.get("identity_day_two", []))
            + transactions_section(results["transactions"]))
    return "\n".join(head + ([notes, ""] if notes else []) + body)
