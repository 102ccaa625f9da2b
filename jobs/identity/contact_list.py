"""`cdp resolve`: resolve a contact list in the standard contact schema into customer ids.

The list goes through the same standardisers and the same matcher as the pipeline's CRM
contacts (Splink's Fellegi-Sunter model, trained on the list itself when it is large enough;
deterministic links on e-mail, phone and loyalty id unless several persons share one), but not
through the persistent identity graph: an ad-hoc list gets ids derived from its own records, the
same on every run over the same list.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.cleanse import standardise
from jobs.identity import graph, matching
from jobs.platform import pii
from jobs.platform.settings import IdentityConfig
from schemas.raw import CONTACT_LIST
from schemas.silver import MATCH_RECORD

log = logging.getLogger(__name__)


class ContactListError(ValueError):
    """The list cannot be resolved as given; the message says what to fix."""


def read_contact_list(spark: SparkSession, path: Path) -> DataFrame:
    """Every standard column as a string (missing ones null); CSV needs a header row."""
    suffix = path.suffix.lower() if path.is_file() else ""
    if suffix == ".csv":
        raw = spark.read.option("header", True).option("inferSchema", False).csv(str(path))
    elif suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
        raw = spark.read.parquet(str(path))
    else:
        raise ContactListError(f"{path}: expected a .csv file with a header, or Parquet")
    present = {c.lower(): c for c in raw.columns}
    missing = [c for c in CONTACT_LIST.required if c not in present]
    if missing:
        raise ContactListError(f"{path}: required column(s) {missing} missing; found {raw.columns}")
    return raw.select(*[(F.col(present[c.name]).cast("string") if c.name in present
                         else F.lit(None).cast("string")).alias(c.name) for c in CONTACT_LIST.columns])


def check_contact_list(contacts: DataFrame) -> dict[str, int]:
    """Fail on rows that cannot be identified; count values the standardisers will drop."""
    blank = F.col("source").isNull() | (F.trim("source") == "") | F.col("source_record_id").isNull() \
        | (F.trim("source_record_id") == "")
    counts = contacts.agg(
        F.count("*").alias("rows"),
        F.count(F.when(blank, 1)).alias("unidentified"),
        F.countDistinct(F.trim("source"), F.trim("source_record_id")).alias("distinct_ids"),
        F.count(F.when((F.trim("dob") != "") & birth_date_text("dob").isNull(), 1)).alias("invalid_dob"),
    ).first().asDict()
    if counts["unidentified"]:
        raise ContactListError(f"{counts['unidentified']} row(s) lack source or source_record_id")
    if counts["distinct_ids"] != counts["rows"]:
        raise ContactListError(f"{counts['rows'] - counts['distinct_ids']} row(s) repeat a (source, "
                               "source_record_id) already in the list; ids must be unique")
    return counts


def record_node() -> Column:
    return F.concat(F.lit("record:"), F.trim("source"), F.lit(":"), F.trim("source_record_id"))


def birth_date_text(col: str) -> Column:
    """'YYYY-MM-DD' from a date written with eight digits in that order (separators free), kept even
    when it is no calendar date: a typo'd day still agrees on year and month. Null otherwise."""
    digits = F.regexp_replace(F.trim(F.col(col)), r"[^0-9]", "")
    return F.when(F.length(digits) == 8, F.concat_ws("-", F.substring(digits, 1, 4), F.substring(digits, 5, 2),
                                                      F.substring(digits, 7, 2)))


def match_records(contacts: DataFrame, default_region: str, hmac_key: bytes) -> DataFrame:
    """The list in the match form; the record id is 'record:<source>:<source_record_id>'."""
    street = F.concat_ws(" ", F.col("street"), F.col("address_line2"))
    gender = F.upper(F.substring(F.trim("gender"), 1, 1))
    email = standardise.email("email")
    phone = standardise.phone_e164("phone", default_region)
    records = contacts.select(
        record_node().alias("record_id"),
        standardise.person_name("first_name").alias("given_name"),
        standardise.person_name("last_name").alias("family_name"),
        birth_date_text("dob").alias("birth_date"),
        F.when(gender.isin("M", "F", "X"), gender).alias("gender"),
        pii.keyed_hash(email, hmac_key).alias("email_key"),
        pii.keyed_hash(phone, hmac_key).alias("phone_key"),
        F.when(F.trim(street) != "", standardise.address_tokens(street)).alias("address_tokens"),
        F.upper(F.regexp_replace("postcode", r"\s+", "")).alias("postcode"),
        F.upper(F.trim("city")).alias("locality"),
        F.upper(F.trim("region")).alias("region"),
        F.upper(F.trim("loyalty_id")).alias("loyalty_number"),
    )
    return records.select(*MATCH_RECORD.column_names)


def resolve_records(records: DataFrame, conf: IdentityConfig) -> DataFrame:
    """(record_id, customer_id) for match-form records: deterministic keys plus probabilistic links."""
    linkage = matching.link_records(records, conf)
    edges = graph.contact_point_edges(records, linkage.links, conf.max_persons_per_contact_point).edges
    nodes = graph.graph_nodes(records.select(F.col("record_id").alias("node")), edges)
    clusters = graph.cluster(nodes, edges, linkage.links, conf.guards.max_cluster_size)
    return clusters.components.join(records.select(F.col("record_id").alias("node")), "node").select(
        F.col("node").alias("record_id"), graph.fresh_id(F.col("component")).alias("customer_id"))


def write_mapping(mapping: DataFrame, out: Path, file_format: str) -> None:
    """Write (source, source_record_id, customer_id) into `out`, refusing to clobber other files."""
    if out.exists() and any(out.iterdir()) and not (out / "_SUCCESS").exists():
        raise ContactListError(f"{out} exists and is not an earlier output of cdp resolve; not overwriting it")
    writer = mapping.coalesce(1).write.mode("overwrite")
    if file_format == "csv":
        writer.option("header", True).csv(str(out))
    else:
        writer.parquet(str(out))


def resolve_contact_list(spark: SparkSession, path: Path, out: Path, file_format: str, default_region: str,
                         hmac_key: bytes, conf: IdentityConfig) -> dict[str, int]:
    """Read, check, standardise and resolve a contact list; write the mapping; return counts."""
    contacts = read_contact_list(spark, path).localCheckpoint()
    counts = check_contact_list(contacts)
    records = match_records(contacts, default_region, hmac_key).localCheckpoint()
    resolved = resolve_records(records, conf)
    ids = contacts.select(F.trim("source").alias("source"), F.trim("source_record_id").alias("source_record_id"),
                          record_node().alias("record_id"))
    mapping = ids.join(resolved, "record_id").select("source", "source_record_id", "customer_id") \
        .orderBy("source", "source_record_id").localCheckpoint()
    write_mapping(mapping, out, file_format)
    counts["customers"] = mapping.select("customer_id").distinct().count()
    counts["records"] = mapping.count()
    return counts
