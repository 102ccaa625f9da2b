"""The identity commands of `cdp`: resolve a list, score against truth, train a model, explain a customer."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from jobs.platform.config import Settings


def cmd_identity_quality(settings: Settings, args: argparse.Namespace) -> None:
    from pyspark.sql import functions as F

    from jobs.identity.graph import record_customers
    from jobs.identity.quality import pairwise_scores
    from jobs.platform.runtime import spark_session
    from jobs.platform.stages import IDENTITY_SOURCES
    from schemas.gold import IDENTITY_GRAPH

    spark = spark_session(settings)
    truth = spark.read.option("header", True).csv(str(settings.paths.truth / "records")).select(
        F.concat_ws(":", "source", "record_id").alias("record"), "person_id")
    tables = {source: spark.table(table.name) for source, table in IDENTITY_SOURCES.items()}
    resolved = record_customers(spark.table(IDENTITY_GRAPH.name), tables).select(
        F.concat_ws(":", "source", "record_id").alias("record"), "customer_id").localCheckpoint()
    print(f"pairwise resolution quality against {settings.paths.truth} (records in silver with a customer)")
    print(pairwise_scores(resolved, truth).line("all records"))
    for source in tables:
        prefix = F.col("record").startswith(f"{source}:")
        print(pairwise_scores(resolved.where(prefix), truth.where(prefix)).line(source))


def cmd_resolve(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.identity.contact_list import resolve_contact_list
    from jobs.platform.pii import pii_keys
    from jobs.platform.runtime import spark_session

    counts = resolve_contact_list(
        spark_session(settings), Path(args.input), Path(args.out), args.format,
        settings.cleanse.default_phone_region, pii_keys(settings).hmac_key, settings.identity)
    print(f"resolved {counts['records']} records into {counts['customers']} customers: {args.out} ({args.format}); "
          f"{counts['invalid_dob']} unreadable birth dates ignored")


def cmd_generate_contacts(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.tools.generate.contact_list import generate_contact_list

    counts = generate_contact_list(Path(args.out), args.people, seed=args.seed)
    print(f"wrote {counts['records']} records of {counts['people']} people ({counts['households']} in households) "
          f"to {args.out}/list.csv, truth in {args.out}/truth.csv")


def cmd_identity_train(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.identity import matching
    from jobs.identity.contact_list import match_records, read_contact_list
    from jobs.platform.pii import pii_keys
    from jobs.platform.runtime import spark_session

    spark = spark_session(settings)
    records = match_records(read_contact_list(spark, Path(args.input)), settings.cleanse.default_phone_region,
                            pii_keys(settings).hmac_key)
    frame = matching.splink_input(records)
    model = matching.train(matching.training_sample(frame, frame.count(), settings.identity.training_sample_records),
                           settings.identity)
    Path(args.out).write_text(json.dumps(model, indent=1) + "\n")
    print(f"match model trained on {args.input} written to {args.out} "
          f"(probability two random records match {model['probability_two_random_records_match']:.3g})")


def cmd_explain_customer(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.identity.explain import explain_customer, render
    from jobs.platform.runtime import spark_session
    from schemas.gold import IDENTITY_GRAPH, IDENTITY_LINKS
    from schemas.silver import CONTACTS

    spark = spark_session(settings)
    explanation = explain_customer(args.customer_id, spark.table(IDENTITY_GRAPH.name),
                                   spark.table(IDENTITY_LINKS.name), spark.table(CONTACTS.name))
    print(render(args.customer_id, explanation))


def add_commands(sub: Any) -> None:
    """The identity subcommands on `cdp`'s subparsers."""
    sub.add_parser("identity-quality", help="pairwise precision/recall/F1 of the published resolution against the "
                   "generator's ground truth").set_defaults(func=cmd_identity_quality)

    res = sub.add_parser("resolve", help="resolve a contact list (standard contact schema, CSV or Parquet) into "
                         "customer ids")
    res.add_argument("--input", required=True, help="a .csv file with a header, or Parquet (file or folder)")
    res.add_argument("--out", required=True, help="folder to write (source, source_record_id, customer_id) into")
    res.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    res.set_defaults(func=cmd_resolve)

    gen = sub.add_parser("generate-contacts", help="write a typo-heavy contact list with ground truth (names at "
                         "realistic frequencies, households, several defects per duplicate)")
    gen.add_argument("--people", type=int, required=True)
    gen.add_argument("--out", required=True, help="folder for list.csv and truth.csv")
    gen.add_argument("--seed", type=int, default=7)
    gen.set_defaults(func=cmd_generate_contacts)

    train = sub.add_parser("identity-train", help="train the match model on a contact list (as for the shipped "
                           "jobs/identity/default_model.json) and write it as JSON")
    train.add_argument("--input", required=True, help="a .csv file with a header, or Parquet")
    train.add_argument("--out", required=True, help="the model's JSON file")
    train.set_defaults(func=cmd_identity_train)

    explain = sub.add_parser("explain-customer", help="a customer's records, identifiers and probabilistic links "
                             "with the match weight of each comparison")
    explain.add_argument("customer_id")
    explain.set_defaults(func=cmd_explain_customer)
