"""`cdp`: the command line of the platform. `cdp --help` lists the subcommands."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

from jobs.delivery.serving_commands import add_commands as add_serving_commands
from jobs.identity.commands import add_commands as add_identity_commands
from jobs.platform.config import Settings, load_settings
from jobs.platform.stages import STAGES
from jobs.tools.commands import add_commands as add_tool_commands

DAG_ID = "cdp_daily"
DAG_IDS = (DAG_ID, "cdp_refit")


def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment for the embedded Airflow: SQLite metadata DB under the project, our dags/."""
    home = settings.paths.airflow_home
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.root / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "CDP_PROFILE": settings.profile,
        "CDP_HOME": str(settings.root),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(settings.root), os.environ.get("PYTHONPATH")])),
        # spark-submit of this environment, for the Spark connection's default spark_binary.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    })
    # The Spark connection follows the profile's master unless the deployment defines its own.
    env.setdefault("AIRFLOW_CONN_CDP_SPARK", json.dumps({"conn_type": "spark", "host": settings.spark_master}))
    return env


def _airflow(settings: Settings, *args: str) -> None:
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), *args], env=airflow_env(settings), check=True)


def cmd_setup_jars(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.platform.jars import build_serving_jar, fetch_jars

    jars = fetch_jars(settings.delta.maven_coordinates, settings.paths.jars)
    print(f"Delta Lake jars ready in {settings.paths.jars} ({len(jars)} jars)")
    print(f"serving endpoint classes ready in {build_serving_jar(settings.root, settings.paths.jars)}")


def cmd_generate(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.tools.generate import generate

    summary = generate(settings.generator, settings.paths.landing, settings.paths.truth,
                       customers=args.customers, seed=args.seed, workers=args.workers)
    records = {s: c["records"] for s, c in summary["counts"].items()}
    print(f"generated {summary['customers']} people (seed {summary['seed']}) into {settings.paths.landing}")
    print(json.dumps(records, indent=2))
    print(f"ground truth: {settings.paths.truth}")


def cmd_run(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.platform.context import RunContext
    from jobs.platform.runlog import run_logged
    from jobs.platform.stages import DAILY

    ctx = RunContext.create(settings, args.date)
    for stage in DAILY if args.stage == "all" else [args.stage]:
        print(f"{stage}: {run_logged(ctx, stage)}")


def cmd_airflow_run(settings: Settings, args: argparse.Namespace) -> None:
    _airflow(settings, "db", "migrate")
    _airflow(settings, "dags", "test", args.dag, args.date.isoformat())


def cmd_backfill(settings: Settings, args: argparse.Namespace) -> None:
    # Airflow 3 backfills (`airflow backfill create`) are run by the scheduler, which the embedded
    # setup does not start; runs of one date after another are what the scheduler does with
    # max_active_runs=1, and each run is keyed by its logical date only.
    if args.end < args.start:
        raise SystemExit(f"backfill: --end {args.end} is before --start {args.start}")
    _airflow(settings, "db", "migrate")
    day = args.start
    while day <= args.end:
        print(f"backfill: {args.dag} for {day}", flush=True)
        _airflow(settings, "dags", "test", args.dag, day.isoformat())
        day += timedelta(days=1)


def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.platform.rebuild import rebuild_stage

    report = rebuild_stage(settings, args.stage, args.date, Path(args.out).resolve())
    print(json.dumps(report, indent=2))
    differing = [t for t, r in report.items() if r["only_published"] or r["only_rebuilt"]]
    if differing:
        raise SystemExit(f"rebuild of {args.stage} for {args.date} differs from what was published: {differing}")
    print(f"rebuild of {args.stage} for {args.date} equals what was published ({len(report)} tables); "
          f"rebuilt tables and files in {args.out}")


def cmd_release(settings: Settings, args: argparse.Namespace) -> None:
    from datetime import UTC, datetime

    from jobs.platform.runtime import spark_session
    from jobs.platform.tables import replace_slice, sql_literal
    from schemas.ops import BATCH_RELEASES
    from schemas.raw import SOURCES

    if args.source not in SOURCES:
        sys.exit(f"cdp release: unknown source {args.source!r}; sources are {', '.join(SOURCES)}")
    spark = spark_session(settings)
    row = (args.source, args.batch, args.released_by, args.reason, datetime.now(UTC))
    replace_slice(spark.createDataFrame([row], BATCH_RELEASES.struct), BATCH_RELEASES,
                  f"source = {sql_literal(args.source)} AND batch_id = {sql_literal(args.batch)}")
    print(f"released {args.source}/{args.batch}: its ingest gate is recorded but no longer stops it; "
          "rerun the date to load it")


def cmd_tables(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.platform.runtime import DATABASES, spark_session
    from jobs.platform.tables import table_names

    spark = spark_session(settings)
    print(f"{'table':36} {'rows':>10}  location")
    for database in DATABASES:
        for name in table_names(spark, database):
            location = spark.sql(f"DESCRIBE DETAIL {name}").first()["location"]
            print(f"{name:36} {spark.table(name).count():>10}  {location}")


def cmd_erase_request(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.delivery.erasure import ErasureError, request_erasure
    from jobs.platform.runtime import spark_session

    # A contact point is read from stdin or a file, never from the command line (shell history, process list).
    kind = "email" if args.email else "phone" if args.phone else "customer_id"
    if kind == "customer_id":
        value = args.customer_id
    else:
        value = (sys.stdin.read() if args.from_file == "-" else Path(args.from_file).read_text()).strip()
    try:
        erasure_id = request_erasure(spark_session(settings), settings, kind, value, args.requested_by)
    except ErasureError as exc:
        sys.exit(f"cdp erase-request: {exc}")
    print(erasure_id)


def cmd_erase(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.delivery.erasure import ErasureError, erase
    from jobs.platform.runtime import spark_session

    try:
        audit = erase(spark_session(settings), settings, args.request_id)
    except ErasureError as exc:
        sys.exit(f"cdp erase: {exc}")
    print(json.dumps(audit, indent=2, default=str))


def cmd_summary(settings: Settings, args: argparse.Namespace) -> None:
    from pyspark.sql import functions as F

    from jobs.platform.runtime import spark_session
    from schemas.ops import DQ_RESULTS, PIPELINE_RUNS

    cmd_tables(settings, args)
    spark = spark_session(settings)
    runs = spark.table(PIPELINE_RUNS.name).where(F.col("logical_date") == F.lit(args.date))
    latest = runs.orderBy(F.col("finished_at").desc()).select("run_id").limit(1).collect()
    if not latest:
        print(f"\nno pipeline run for {args.date} in {PIPELINE_RUNS.name}")
        return
    run_id = latest[0]["run_id"]
    print(f"\nrun {run_id} ({args.date}):")
    print(f"  {'stage':10} {'status':9} {'rows in':>10} {'rows out':>10} {'seconds':>8}")
    for r in runs.where(F.col("run_id") == run_id).orderBy("started_at").collect():
        print(f"  {r.stage:10} {r.status:9} {r.rows_in or 0:>10} {r.rows_out or 0:>10} {r.seconds:>8.1f}")
    print("data quality (expectations passed / failed critical / failed warning):")
    dq = spark.table(DQ_RESULTS.name).where(F.col("run_id") == run_id).groupBy("stage").agg(
        F.count(F.when(F.col("success"), 1)).alias("passed"),
        F.count(F.when(~F.col("success") & (F.col("severity") == "critical"), 1)).alias("critical"),
        F.count(F.when(~F.col("success") & (F.col("severity") == "warning"), 1)).alias("warning"))
    for r in dq.orderBy("stage").collect():
        print(f"  {r.stage:10} {r.passed:>5} / {r.critical} / {r.warning}")
    print(f"Data Docs: {settings.paths.gx / 'data_docs'}/<stage>/index.html")
    report = settings.paths.warehouse.parent / "reports" / "run" / args.date.isoformat() / "index.html"
    if report.is_file():
        print(f"run report: {report}")


def cmd_clv(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.platform.runtime import spark_session
    from jobs.value import clv

    spark = spark_session(settings)
    value = dataclasses.replace(clv.ValueSettings.from_conf(settings.clv), unit=args.time_unit)
    transactions = clv.read_transactions(spark, args.transactions, args.customer_column, args.date_column,
                                         args.amount_column)
    model = clv.fit_and_score_file(spark, transactions, args.calibration_end, args.holdout_end, value, args.out)
    print(json.dumps(model, indent=2))
    print(f"wrote {args.out}/model.json and per-customer results in {args.out}/customers/"
          + (f", holdout table and plot in {args.out}/holdout.csv|png" if args.holdout_end else ""))


def cmd_docs(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.tools.docs import write_tables_doc

    print(f"wrote {write_tables_doc(settings.root / 'docs' / 'tables.md')}")


def cmd_export(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.delivery.erasure import erased_customers
    from jobs.delivery.export import ExportError, export_segment
    from jobs.platform.runtime import spark_session

    spark = spark_session(settings)
    try:
        summary = export_segment(spark, settings, args.segment_type, args.segment, args.date,
                                 args.destination or settings.export.default_destination,
                                 args.format, Path(args.out), erased_customers(spark))
    except ExportError as exc:
        sys.exit(f"cdp export: {exc}")
    print(json.dumps(summary, indent=2, default=str))


def cmd_audience(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.delivery.commands import AudienceCommandError, list_audiences, preview_audience
    from jobs.delivery.conditions import ConditionError

    try:
        if args.action == "list":
            print(list_audiences(settings))
        else:
            from jobs.platform.runtime import spark_session

            print(preview_audience(spark_session(settings), settings, args.name, args.date))
    except (AudienceCommandError, ConditionError) as exc:
        sys.exit(f"cdp audience: {exc}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdp", description="Batch customer data platform")
    parser.add_argument("--profile", help="configuration profile (conf/<profile>.yaml); default $CDP_PROFILE or local")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("setup-jars", help="resolve Delta Lake jars from Maven Central into the jar cache (once), "
                   "compile the serving endpoint's classes") \
        .set_defaults(func=cmd_setup_jars)

    gen = sub.add_parser("generate", help="write a seeded multi-channel sample dataset with ground truth")
    gen.add_argument("--customers", type=int, help="number of people (default from conf)")
    gen.add_argument("--seed", type=int, help="random seed (default from conf)")
    gen.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)), help="parallel processes")
    gen.set_defaults(func=cmd_generate)

    run = sub.add_parser("run", help="run pipeline stages directly (no Airflow) for a logical date")
    run.add_argument("--stage", default="all", choices=["all", *STAGES],
                     help="one stage (default: all of the daily DAG, in order)")
    run.add_argument("--date", type=date.fromisoformat, required=True, help="logical (as-of) date, YYYY-MM-DD")
    run.set_defaults(func=cmd_run)

    af = sub.add_parser("airflow-run", help=f"run the {DAG_ID} DAG with the embedded Airflow for a logical date")
    af.add_argument("--date", type=date.fromisoformat, required=True, help="logical date, YYYY-MM-DD")
    af.add_argument("--dag", default=DAG_ID, choices=DAG_IDS)
    af.set_defaults(func=cmd_airflow_run)

    fill = sub.add_parser("backfill", help="run a DAG in the embedded Airflow for every date of a range, in order")
    fill.add_argument("--start", type=date.fromisoformat, required=True, help="first logical date, YYYY-MM-DD")
    fill.add_argument("--end", type=date.fromisoformat, required=True, help="last logical date (inclusive)")
    fill.add_argument("--dag", default=DAG_ID, choices=DAG_IDS)
    fill.set_defaults(func=cmd_backfill)

    rb = sub.add_parser("rebuild", help="rebuild a stage's gold tables as published for a past date (Delta time "
                        "travel of its inputs) in a scratch warehouse, and compare")
    rb.add_argument("--stage", required=True, choices=list(STAGES))
    rb.add_argument("--date", type=date.fromisoformat, required=True, help="logical date, YYYY-MM-DD")
    rb.add_argument("--out", required=True, help="scratch folder for the rebuilt warehouse")
    rb.set_defaults(func=cmd_rebuild)

    rel = sub.add_parser("release", help="let a landing batch that fails its ingest gate load anyway (its "
                         "failures stay recorded in ops.dq_results)")
    rel.add_argument("--source", required=True, help="a raw source, e.g. orders")
    rel.add_argument("--batch", required=True, help="the batch folder (its date), YYYY-MM-DD")
    rel.add_argument("--reason", required=True, help="why it may load, recorded in ops.batch_releases")
    rel.add_argument("--released-by", default=os.environ.get("USER", "cdp"))
    rel.set_defaults(func=cmd_release)

    add_identity_commands(sub)

    value = sub.add_parser("clv", help="fit BG/NBD + Gamma-Gamma on a transactions file and score its customers")
    value.add_argument("--transactions", required=True, help="CSV (with header) or Parquet")
    value.add_argument("--calibration-end", type=date.fromisoformat, required=True, help="YYYY-MM-DD, inclusive")
    value.add_argument("--holdout-end", type=date.fromisoformat, help="validate on transactions up to this date")
    value.add_argument("--time-unit", choices=["day", "week"], default="week")
    value.add_argument("--out", required=True, help="folder for model.json, customers/, holdout.csv and .png")
    value.add_argument("--customer-column", default="customer_id")
    value.add_argument("--date-column", help="default: order_ts, else order_date")
    value.add_argument("--amount-column", default="amount")
    value.set_defaults(func=cmd_clv)

    req = sub.add_parser("erase-request", help="record an erasure request (right to be forgotten); prints its id. "
                         "An e-mail or phone is read from stdin or --from FILE, never given on the command line")
    who = req.add_mutually_exclusive_group(required=True)
    who.add_argument("--customer-id")
    who.add_argument("--email", action="store_true", help="the person's e-mail, read from stdin or --from")
    who.add_argument("--phone", action="store_true", help="the person's phone, read from stdin or --from")
    req.add_argument("--from", dest="from_file", default="-", help="file holding the e-mail or phone (default: stdin)")
    req.add_argument("--requested-by", default=os.environ.get("USER", "cdp"), help="recorded in ops.erasures")
    req.set_defaults(func=cmd_erase_request)

    er = sub.add_parser("erase", help="carry out (or resume) an erasure request: remove the person from every layer "
                        "and file, keep them out, vacuum, and audit in ops.erasures")
    er.add_argument("--request-id", required=True, help="printed by cdp erase-request")
    er.set_defaults(func=cmd_erase)

    add_serving_commands(sub)

    exp = sub.add_parser("export", help="export a segment's consenting members for a marketing destination, "
                         "with a manifest and the customers added and removed since the previous export")
    exp.add_argument("--segment", required=True, help="segment name, e.g. Champions")
    exp.add_argument("--segment-type", default="rfm_segment", help="gold.segment_membership segment_type")
    exp.add_argument("--destination", help="a destination of conf export.destinations (default: "
                     "export.default_destination)")
    exp.add_argument("--format", choices=["csv", "parquet"], default="csv")
    exp.add_argument("--out", required=True, help="folder holding this destination's exports")
    exp.add_argument("--date", type=date.fromisoformat, help="membership as of YYYY-MM-DD (default: latest)")
    exp.set_defaults(func=cmd_export)

    aud = sub.add_parser("audience", help="the audiences of conf/audiences.yaml: list them with their last sync, "
                         "or preview one (size, overlaps, segments, a masked sample) without exporting")
    aud_sub = aud.add_subparsers(dest="action", required=True)
    aud_sub.add_parser("list", help="every audience with its destination, schedule and last sync")
    prev = aud_sub.add_parser("preview", help="an audience's size, overlap with the others, size per segment and "
                              "a masked sample")
    prev.add_argument("name")
    prev.add_argument("--date", type=date.fromisoformat, help="as of YYYY-MM-DD (default: the latest scored)")
    aud.set_defaults(func=cmd_audience)

    sub.add_parser("tables", help="list the Delta tables with row counts and locations").set_defaults(func=cmd_tables)
    summ = sub.add_parser("summary", help="the tables, then a date's latest run: stages, rows, DQ results, reports")
    summ.add_argument("--date", type=date.fromisoformat, required=True, help="logical date, YYYY-MM-DD")
    summ.set_defaults(func=cmd_summary)
    add_tool_commands(sub)
    sub.add_parser("docs", help="write docs/tables.md from schemas/").set_defaults(func=cmd_docs)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    args.func(load_settings(args.profile), args)


if __name__ == "__main__":
    main()
