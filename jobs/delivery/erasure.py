"""Erasure (the right to be forgotten): remove a person from every layer, then vacuum, with an audit.

A request names the person by customer id, e-mail or phone. The e-mail or phone is standardised and
keyed-hashed as cleanse does, and looked up in the identity graph. Then:

- the person's records are found through the graph (`ROUTES`: a contact by its id, an
  order by its account, a ticket by its e-mail or account, ...), and a referral on either side;
- their rows are deleted from bronze (by each source's record key, every version), silver (and the
  order lines of their orders and store purchases, and their rows of the PII vault), every gold table
  (by customer id; both sides of the id history), the identity graph, and `ops.quarantine` (rejected
  lines that hold one of their record ids or raw contact points, decrypted from the vault first);
- every table touched is purged of deletion vectors and vacuumed with no retention, so the files that
  held the rows are gone from disk (time travel to before the erasure goes with them);
- `ops.erasures` records the request: its kind, a keyed hash of the identifier as given (never the
  value), the customer id, rows deleted per table, and when the vacuum finished. Marketing exports
  leave out every customer id recorded there.

Not covered, and said so in the README: raw landing files (the source systems' copies, kept under
their own retention) and exports already delivered to a destination.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial, reduce

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.cleanse import standardise
from jobs.identity.graph import ROUTES, attach_customer
from jobs.platform import pii
from jobs.platform.config import Settings
from jobs.platform.stages import IDENTITY_SOURCES
from jobs.platform.tables import concurrently, ensure_table, replace_slice, sql_literal, table_exists
from schemas import Table, gold, silver
from schemas.bronze import TABLES as BRONZE
from schemas.ops import ERASURES, QUARANTINE
from schemas.raw import SOURCES

log = logging.getLogger(__name__)


class ErasureError(LookupError):
    """The request names nobody the platform knows, or names nobody at all."""


@dataclass(frozen=True)
class ErasureRequest:
    customer_id: str | None = None
    email: str | None = None
    phone: str | None = None

    @property
    def kind(self) -> str:
        given = [k for k in ("customer_id", "email", "phone") if getattr(self, k)]
        if len(given) != 1:
            raise ErasureError("an erasure request names exactly one of customer id, e-mail or phone")
        return given[0]


def requested_node(spark: SparkSession, request: ErasureRequest, hmac_key: bytes, phone_region: str) -> Column | None:
    """The identity-graph node of an e-mail or phone request (standardised and keyed as cleanse does)."""
    if request.kind == "customer_id":
        return None
    raw = spark.createDataFrame([(getattr(request, request.kind),)], "value string")
    value = standardise.email("value") if request.kind == "email" else standardise.phone_e164("value", phone_region)
    standardised = raw.select(value.alias("value")).first()["value"]
    if standardised is None:
        raise ErasureError(f"the {request.kind} of the request is not a valid {request.kind}")
    key = spark.range(1).select(pii.keyed_hash(F.lit(standardised), hmac_key).alias("k")).first()["k"]
    return F.lit(f"{request.kind}:{key}")


def resolve_customer(spark: SparkSession, graph: DataFrame, request: ErasureRequest, hmac_key: bytes,
                     phone_region: str) -> str:
    node = requested_node(spark, request, hmac_key, phone_region)
    match = graph.where(F.col("customer_id") == request.customer_id) if node is None else graph.where(
        F.col("node") == node)
    found = match.select("customer_id").distinct().collect()
    if not found:
        raise ErasureError(f"no customer with that {request.kind} in {gold.IDENTITY_GRAPH.name}")
    return found[0]["customer_id"]


def person_records(graph: DataFrame, tables: dict[str, DataFrame], customer_id: str) -> DataFrame:
    """(source, record_id) of every silver record of the customer, referrals on either side included."""
    own = graph.where(F.col("customer_id") == customer_id)
    routes = {**{source: source for source in tables}, "referred": "referrals"}
    return reduce(DataFrame.unionByName, [
        attach_customer(tables[table], route, own).where(F.col("customer_id").isNotNull())
        .select(F.lit(table).alias("source"), F.col(ROUTES[route][0]).alias("record_id"))
        for route, table in routes.items()
    ]).distinct()


def _delete_matching(table: Table, keys: DataFrame, condition: str) -> int:
    """Delete the rows of `table` matching `keys` on `condition` (aliases t, s); return rows deleted."""
    from delta.tables import DeltaTable

    spark = keys.sparkSession
    if not table_exists(spark, table.name):
        return 0
    # Most tables hold nothing of one person: a scan finds that out, a MERGE would also commit and rewrite.
    matched = spark.table(table.name).alias("t").join(keys.alias("s"), F.expr(condition), "left_semi")
    if matched.isEmpty():
        return 0
    DeltaTable.forName(spark, table.name).alias("t").merge(keys.alias("s"), condition).whenMatchedDelete().execute()
    metrics = spark.sql(f"DESCRIBE HISTORY {table.name} LIMIT 1").first()["operationMetrics"] or {}
    return int(metrics.get("numTargetRowsDeleted", 0))


def _vacuum(spark: SparkSession, table: Table) -> None:
    # Deletion vectors only mark rows deleted: purge rewrites those files, then the vacuum removes the old ones.
    properties = spark.sql(f"DESCRIBE DETAIL {table.name}").first()["properties"] or {}
    if properties.get("delta.enableDeletionVectors") == "true":
        spark.sql(f"REORG TABLE {table.name} APPLY (PURGE)")
    spark.sql(f"VACUUM {table.name} RETAIN 0 HOURS")


def erase(spark: SparkSession, settings: Settings, request: ErasureRequest, requested_by: str) -> dict[str, object]:
    """Carry out one erasure request (see the module docstring); returns the audit record."""

    keys = pii.pii_keys(settings)
    kind = request.kind
    graph = spark.table(gold.IDENTITY_GRAPH.name)
    customer_id = resolve_customer(spark, graph, request, keys.hmac_key,
                                   settings.cleanse.default_phone_region)
    tables = {source: spark.table(table.name) for source, table in IDENTITY_SOURCES.items()}
    records = person_records(graph, tables, customer_id).localCheckpoint()
    vault = spark.table(silver.PII_VAULT.name).join(records, ["source", "record_id"])
    raw_values = [r["value"] for r in vault.select(F.explode(F.array(
        pii.decrypt(F.col("email_enc"), F.concat_ws("|", "source", "record_id", F.lit("email")), keys.encryption_key),
        pii.decrypt(F.col("phone_enc"), F.concat_ws("|", "source", "record_id", F.lit("phone")), keys.encryption_key),
    )).alias("value")).where(F.col("value").isNotNull()).distinct().collect()]

    # Every table's deletion is a commit of its own: they run side by side, as do the vacuums.
    deletions: dict[Table, tuple[DataFrame, str]] = {}
    for source, table in IDENTITY_SOURCES.items():
        ids = records.where(F.col("source") == source).select(F.col("record_id").alias("id"))
        deletions[BRONZE[source]] = (ids, f"t.{SOURCES[source].record_id} = s.id")
        deletions[table] = (ids, f"t.{ROUTES[source][0]} = s.id")
    transactions = records.where(F.col("source").isin("orders", "pos")).select("source", F.col("record_id").alias("id"))
    deletions[silver.ORDER_LINES] = (transactions, "t.source = s.source AND t.transaction_id = s.id")
    deletions[silver.PII_VAULT] = (records, "t.source = s.source AND t.record_id = s.record_id")
    person = spark.createDataFrame([(customer_id,)], "customer_id string")
    for table in gold.TABLES:
        if table == gold.CUSTOMER_ID_HISTORY:
            deletions[table] = (person, "s.customer_id IN (t.old_customer_id, t.new_customer_id)")
        elif "customer_id" in table.column_names:
            deletions[table] = (person, "t.customer_id = s.customer_id")
        # aggregates (KPIs, rules, value matrix, cluster profiles) hold no person
    # Rejected lines are raw text: any that holds one of the person's record ids or contact points.
    needles = spark.createDataFrame([(v.lower(),) for v in {*raw_values, *[r["record_id"] for r in
                                     records.select("record_id").collect()]}], "needle string")
    deletions[QUARANTINE] = (needles, "instr(lower(t.raw_payload), s.needle) > 0")
    counts = concurrently(partial(_delete_matching, table, keys, condition)
                          for table, (keys, condition) in deletions.items())
    deleted = {table.name: n for table, n in zip(deletions, counts, strict=True)}

    touched = [t for t in (*BRONZE.values(), *silver.TABLES, *gold.TABLES, QUARANTINE) if deleted.get(t.name)]
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        concurrently(partial(_vacuum, spark, table) for table in touched)
    finally:
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "true")
    identifier = customer_id if kind == "customer_id" else getattr(request, kind)
    audit = {
        "erasure_id": str(uuid.uuid4()), "requested_at": datetime.now(UTC), "requested_by": requested_by,
        "request_kind": kind,
        "subject_key": spark.range(1).select(pii.keyed_hash(F.lit(identifier), keys.hmac_key)).first()[0],
        "customer_id": customer_id, "rows_deleted": {k: v for k, v in deleted.items() if v},
        "tables_vacuumed": [t.name for t in touched], "vacuumed_at": datetime.now(UTC),
    }
    ensure_table(spark, ERASURES)
    replace_slice(spark.createDataFrame([tuple(audit[c] for c in ERASURES.column_names)], ERASURES.struct), ERASURES,
                  f"erasure_id = {sql_literal(audit['erasure_id'])}")
    log.info("erased customer %s: %s", customer_id, audit["rows_deleted"])
    return audit


def erased_customers(spark: SparkSession) -> DataFrame:
    """(customer_id) of every erasure carried out, from the published ops.erasures (none before the first)."""
    if not table_exists(spark, ERASURES.name):
        return spark.createDataFrame([], "customer_id string")
    return erased_ids(spark.table(ERASURES.name))


def erased_ids(erasures: DataFrame) -> DataFrame:
    """(customer_id) of every erasure in `erasures` (ops.erasures rows): exports leave them out."""
    return erasures.select("customer_id").distinct()
