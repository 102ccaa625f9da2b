"""`cdp`: the command line of the platform. `cdp --help` lists the subcommands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

from jobs.config import Settings, load_settings

DAG_ID = "cdp_daily"


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
    })
    return env


def _airflow(settings: Settings, *args: str) -> None:
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), *args], env=airflow_env(settings), check=True)


def cmd_setup_jars(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.jars import fetch_jars

    jars = fetch_jars(settings.raw["delta"]["maven_coordinates"], settings.paths.jars)
    print(f"Delta Lake jars ready in {settings.paths.jars} ({len(jars)} jars)")


def cmd_generate(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.generate import generate

    summary = generate(settings.section("generator"), settings.paths.landing, settings.paths.truth,
                       customers=args.customers, seed=args.seed, workers=args.workers)
    records = {s: c["records"] for s, c in summary["counts"].items()}
    print(f"generated {summary['customers']} people (seed {summary['seed']}) into {settings.paths.landing}")
    print(json.dumps(records, indent=2))
    print(f"ground truth: {settings.paths.truth}")


def cmd_run(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.pipeline import STAGE_FUNCTIONS, STAGES, RunContext

    ctx = RunContext.create(settings, args.date)
    for stage in STAGES if args.stage == "all" else [args.stage]:
        print(f"{stage}: {STAGE_FUNCTIONS[stage](ctx)}")


def cmd_airflow_run(settings: Settings, args: argparse.Namespace) -> None:
    _airflow(settings, "db", "migrate")
    _airflow(settings, "dags", "test", DAG_ID, args.date.isoformat())


def cmd_tables(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.runtime import DATABASES, spark_session

    spark = spark_session(settings)
    print(f"{'table':36} {'rows':>10}  location")
    for database in DATABASES:
        for table in spark.catalog.listTables(database):
            name = f"{database}.{table.name}"
            location = spark.sql(f"DESCRIBE DETAIL {name}").first()["location"]
            print(f"{name:36} {spark.table(name).count():>10}  {location}")


def cmd_identity_quality(settings: Settings, args: argparse.Namespace) -> None:
    from pyspark.sql import functions as F

    from jobs.identity import record_customers
    from jobs.pipeline import silver_by_source
    from jobs.resolution_quality import pairwise_scores
    from jobs.runtime import spark_session
    from schemas.gold import IDENTITY_GRAPH

    spark = spark_session(settings)
    truth = spark.read.option("header", True).csv(str(settings.paths.truth / "records")).select(
        F.concat_ws(":", "source", "record_id").alias("record"), "person_id")
    tables = silver_by_source(spark)
    resolved = record_customers(spark.table(IDENTITY_GRAPH.name), tables).select(
        F.concat_ws(":", "source", "record_id").alias("record"), "customer_id").localCheckpoint()
    print(f"pairwise resolution quality against {settings.paths.truth} (records in silver with a customer)")
    print(pairwise_scores(resolved, truth).line("all records"))
    for source in tables:
        prefix = F.col("record").startswith(f"{source}:")
        print(pairwise_scores(resolved.where(prefix), truth.where(prefix)).line(source))


def cmd_resolve(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.contact_list import resolve_contact_list
    from jobs.pipeline import pii_keys
    from jobs.runtime import spark_session

    counts = resolve_contact_list(
        spark_session(settings), Path(args.input), Path(args.out), args.format,
        settings.section("cleanse")["default_phone_region"], pii_keys(settings).hmac_key,
        settings.section("identity"))
    print(f"resolved {counts['records']} records into {counts['customers']} customers: {args.out} ({args.format}); "
          f"{counts['invalid_dob']} unreadable birth dates ignored")


def cmd_clv(settings: Settings, args: argparse.Namespace) -> None:
    from jobs import clv
    from jobs.runtime import spark_session

    spark = spark_session(settings)
    value = clv.ValueSettings.from_conf({**settings.section("clv"), "time_unit": args.time_unit})
    transactions = clv.read_transactions(spark, args.transactions, args.customer_column, args.date_column,
                                         args.amount_column)
    model = clv.fit_and_score_file(spark, transactions, args.calibration_end, args.holdout_end, value, args.out)
    print(json.dumps(model, indent=2))
    print(f"wrote {args.out}/model.json and per-customer results in {args.out}/customers/"
          + (f", holdout table and plot in {args.out}/holdout.csv|png" if args.holdout_end else ""))


def cmd_docs(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.docs import write_tables_doc

    print(f"wrote {write_tables_doc(settings.root / 'docs' / 'tables.md')}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdp", description="Batch customer data platform")
    parser.add_argument("--profile", help="configuration profile (conf/<profile>.yaml); default $CDP_PROFILE or local")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("setup-jars", help="resolve Delta Lake jars from Maven Central into the jar cache (once)") \
        .set_defaults(func=cmd_setup_jars)

    gen = sub.add_parser("generate", help="write a seeded multi-channel sample dataset with ground truth")
    gen.add_argument("--customers", type=int, help="number of people (default from conf)")
    gen.add_argument("--seed", type=int, help="random seed (default from conf)")
    gen.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)), help="parallel processes")
    gen.set_defaults(func=cmd_generate)

    run = sub.add_parser("run", help="run pipeline stages directly (no Airflow) for a logical date")
    # Spelled out (not imported from jobs.pipeline) so that `cdp --help` does not start Spark imports.
    run.add_argument("--stage", default="all",
                     choices=["all", "ingest", "cleanse", "resolve", "profile", "value", "segments"])
    run.add_argument("--date", type=date.fromisoformat, required=True, help="logical (as-of) date, YYYY-MM-DD")
    run.set_defaults(func=cmd_run)

    af = sub.add_parser("airflow-run", help=f"run the {DAG_ID} DAG with the embedded Airflow for a logical date")
    af.add_argument("--date", type=date.fromisoformat, required=True, help="logical date, YYYY-MM-DD")
    af.set_defaults(func=cmd_airflow_run)

    sub.add_parser("identity-quality", help="pairwise precision/recall/F1 of the published resolution against the "
                   "generator's ground truth").set_defaults(func=cmd_identity_quality)

    res = sub.add_parser("resolve", help="resolve a contact list (standard contact schema, CSV or Parquet) into "
                         "customer ids")
    res.add_argument("--input", required=True, help="a .csv file with a header, or Parquet (file or folder)")
    res.add_argument("--out", required=True, help="folder to write (source, source_record_id, customer_id) into")
    res.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    res.set_defaults(func=cmd_resolve)

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

    sub.add_parser("tables", help="list the Delta tables with row counts and locations").set_defaults(func=cmd_tables)
    sub.add_parser("docs", help="write docs/tables.md from schemas/").set_defaults(func=cmd_docs)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    args.func(load_settings(args.profile), args)


if __name__ == "__main__":
    main()
