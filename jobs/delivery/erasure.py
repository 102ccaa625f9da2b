"""Erasure (the right to be forgotten): remove a person from every layer and keep them out, with an audit.

A request (`request_erasure`; `cdp erase-request`, which reads an e-mail or phone from stdin or a file, never
from a command line) is a row of `ops.erasures` that names the person only by a suppression key
(`pii.suppression_key` of the identity-graph node, after standardising as cleanse does). `erase` carries it
out in `STEPS`, recording each step in that row, so a crash at any step and a retry complete it; a step only
reads what the steps before it leave:

1. identify: the person's identifiers, from the identity graph (every node of their customer) and from silver
   (every identifier of a record carrying the one requested), go to the suppression list `ops.erased_subjects`.
   From then on cleanse rejects any record carrying one (ERASED_PERSON), and the person's records are found
   through them (`suppression.with_erased`), with or without the graph.
2. landing: the landing files' lines that were their bronze rows (every copy: by content hash) or their
   quarantined lines are removed from the files, so a re-read batch does not load them again.
3. exports: their rows are removed from every export under `paths.exports` (manifests updated); the exports
   that held a row are listed in `exports_to_recall`: copies already delivered are the operator's to recall.
4. quarantine: rejected lines (decrypted here) holding one of their record ids or contact points.
5. bronze: their rows (every version), by content hash.
6. ops: gate samples (`ops.dq_results.unexpected_sample`) naming them are cleared.
7. gold: every table holding a customer id (both sides of the id history), the graph aside.
8. silver: their records, the order lines of their orders and store purchases, their PII-vault rows (contacts
   and the e-mail directory).
9. graph: their nodes of `gold.identity_graph`.
10. vacuum: every table touched is purged of deletion vectors and vacuumed with no retention, so the files
    that held the rows are gone (time travel to before the erasure with them).

Delta's transaction log keeps no statistics of personal columns or keyed hashes (`schemas.Table.stats_columns`),
and no predicate of these deletes holds a value: each is a MERGE against a frame of keys.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property, partial, reduce
from pathlib import Path
from urllib.parse import unquote, urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.cleanse import standardise
from jobs.cleanse.suppression import node, with_erased
from jobs.delivery.erasure_files import drop_lines, purge_exports
from jobs.ingest.batches import list_landed_files, read_lines, unsealed_bronze, unsealed_quarantine
from jobs.platform import pii
from jobs.platform.config import Settings
from jobs.platform.stages import IDENTITY_SOURCES
from jobs.platform.tables import (
    concurrently,
    ensure_table,
    last_commit_metrics,
    replace_slice,
    sql_literal,
    table_exists,
    table_properties,
)
from schemas import Table, gold, silver
from schemas.bronze import TABLES as BRONZE
from schemas.bronze import sealed_columns
from schemas.ops import DQ_RESULTS, ERASED_SUBJECTS, ERASURES, QUARANTINE
from schemas.raw import SOURCES
from schemas.silver import IDENTIFIERS

log = logging.getLogger(__name__)

STEPS = ("identify", "landing", "exports", "quarantine", "bronze", "ops", "gold", "silver", "graph", "vacuum")
KINDS = ("customer_id", "email", "phone")
# A needle matches as a whole word: "c12" is not found in "c123", nor an address inside a longer one.
WORD = "[^a-z0-9._%+-]"


class ErasureError(LookupError):
    """The request is unknown, invalid, or names nobody the platform knows."""


def request_erasure(spark: SparkSession, settings: Settings, kind: str, value: str, requested_by: str) -> str:
    """Record an erasure request for `value` (a customer id, e-mail or phone) and return its id. Only the
    suppression key of the identity-graph node it names is stored, never the value."""
    if kind not in KINDS:
        raise ErasureError(f"an erasure request names a person by one of {', '.join(KINDS)}")
    value = value.strip()
    if not value:
        raise ErasureError(f"the request's {kind} is empty")
    keys = pii.pii_keys(settings)
    given = spark.createDataFrame([(value,)], "value string")
    if kind == "customer_id":
        named = F.concat(F.lit("customer:"), F.col("value"))
    else:
        standardised = standardise.email("value") if kind == "email" else \
            standardise.phone_e164("value", settings.cleanse.default_phone_region)
        named = node(kind, pii.keyed_hash(standardised, keys.hmac_key))
    subject_key = given.select(pii.suppression_key(named, keys.hmac_key).alias("k")).first()["k"]
    if subject_key is None:
        raise ErasureError(f"the request's {kind} is not a valid {kind}")
    now = datetime.now(UTC)
    request = {"erasure_id": str(uuid.uuid4()), "requested_at": now, "requested_by": requested_by,
               "request_kind": kind, "subject_key": subject_key, "status": "requested", "steps_done": [],
               "customer_id": value if kind == "customer_id" else None, "rows_deleted": {}, "files_rewritten": [],
               "exports_to_recall": [], "tables_vacuumed": [], "vacuumed_at": None, "updated_at": now}
    _save(spark, request)
    return request["erasure_id"]


def _save(spark: SparkSession, request: dict) -> None:
    ensure_table(spark, ERASURES)
    row = spark.createDataFrame([tuple(request[c] for c in ERASURES.column_names)], ERASURES.struct)
    replace_slice(row, ERASURES, f"erasure_id = {sql_literal(request['erasure_id'])}")


def load_request(spark: SparkSession, erasure_id: str) -> dict:
    found = spark.table(ERASURES.name).where(F.col("erasure_id") == erasure_id).collect() \
        if table_exists(spark, ERASURES.name) else []
    if not found:
        raise ErasureError(f"no erasure request {erasure_id!r} in {ERASURES.name}")
    return found[0].asDict()


def erase(spark: SparkSession, settings: Settings, erasure_id: str,
          after_step: Callable[[str], None] | None = None) -> dict:
    """Carry out (or resume) the request `erasure_id` (see the module docstring); returns its final row.
    `after_step` is called with each step's name once it is recorded (tests inject a crash there)."""
    request = load_request(spark, erasure_id)
    if request["status"] == "nobody":
        raise ErasureError(f"erasure request {erasure_id} names nobody the platform knows")
    run = Erasure(spark, settings, request)
    for step in STEPS:
        if step in request["steps_done"]:
            continue
        done = getattr(run, step)() or {}
        for table, n in done.get("rows_deleted", {}).items():
            request["rows_deleted"][table] = request["rows_deleted"].get(table, 0) + n
        for field in ("files_rewritten", "exports_to_recall", "tables_vacuumed"):
            request[field] = sorted({*request[field], *done.get(field, [])})
        request.update({k: v for k, v in done.items() if k in ("customer_id", "vacuumed_at")})
        request.update(steps_done=[*request["steps_done"], step], updated_at=datetime.now(UTC),
                       status="done" if step == STEPS[-1] else "in_progress")
        _save(spark, request)
        log.info("erasure %s: %s done", erasure_id, step)
        if after_step:
            after_step(step)
    return request


class Erasure:
    """The steps of one request. What identifies the person is recomputed from what is left, so any step
    can be the first of a retry."""

    def __init__(self, spark: SparkSession, settings: Settings, request: dict) -> None:
        self.spark, self.settings, self.request = spark, settings, request
        self.keys = pii.pii_keys(settings)

    def _table(self, table: Table) -> DataFrame:
        return self.spark.table(table.name) if table_exists(self.spark, table.name) \
            else self.spark.createDataFrame([], table.struct)

    @cached_property
    def subject_keys(self) -> DataFrame:
        return self._table(ERASED_SUBJECTS).where(F.col("erasure_id") == self.request["erasure_id"]) \
            .select("subject_key").localCheckpoint()

    @cached_property
    def records(self) -> DataFrame:
        """(source, record_id) of every silver record carrying one of the person's identifiers."""
        return reduce(DataFrame.unionByName, [
            with_erased(self._table(table), source, self.subject_keys, self.keys.hmac_key).where("_erased")
            .select(F.lit(source).alias("source"), F.col(SOURCES[source].record_id).alias("record_id"))
            for source, table in IDENTITY_SOURCES.items()]).distinct().localCheckpoint()

    @cached_property
    def directory(self) -> DataFrame:
        """(source, record_id) of the vault's e-mail directory rows (source 'email') of the person's addresses."""
        entries = self._table(silver.PII_VAULT).where(F.col("source") == "email")
        subjects = self.subject_keys.withColumnRenamed("subject_key", "_subject")
        return entries.join(F.broadcast(subjects), pii.suppression_key(node("email", "email_key"),
                                                                      self.keys.hmac_key) == F.col("_subject"),
                            "left_semi").select("source", "record_id").localCheckpoint()

    def _own(self, source: str, df: DataFrame) -> DataFrame:
        """Rows of `df` (bronze or silver of `source`) that are one of the person's records."""
        ids = self.records.where(F.col("source") == source).select(F.col("record_id").alias("_id"))
        return df.join(ids, F.col(SOURCES[source].record_id) == F.col("_id"), "left_semi")

    def _bronze_rows(self, source: str) -> DataFrame:
        return self._own(source, self._table(BRONZE[source]))

    @cached_property
    def needles(self) -> DataFrame:
        """(pattern): the person's record ids, customer id, keyed hashes and contact points (from the vault and
        their bronze rows, as given), lower-case, as whole-word patterns for text they may hide in."""
        key, vault = self.keys.encryption_key, self._table(silver.PII_VAULT)
        theirs = vault.join(self.records.unionByName(self.directory), ["source", "record_id"], "left_semi")
        context = F.concat_ws("|", "source", "record_id")
        values = [theirs.select(F.explode(F.array(
            "record_id", "email_key", "phone_key",
            *[pii.decrypt(F.col(f"{f}_enc"), F.concat_ws("|", context, F.lit(f)), key) for f in ("email", "phone",
                                                                                                  "street")])))]
        values.append(self.records.select(F.col("record_id").alias("col")))
        for source in IDENTITY_SOURCES:
            # A referral's referred e-mail is someone else's when they are the referrer: the vault has theirs.
            sealed = [c for c, t in sealed_columns(SOURCES[source]).items() if t == "string"
                      and c in ("email", "phone", "street")]
            if sealed:
                rows = unsealed_bronze(self._bronze_rows(source), SOURCES[source], key)
                values.append(rows.select(F.explode(F.array(*sealed))))
        if self.request["customer_id"]:
            values.append(self.spark.createDataFrame([(self.request["customer_id"],)], "col string"))
        words = reduce(DataFrame.unionByName, [v.toDF("col") for v in values]) \
            .select(F.lower(F.trim("col")).alias("word")).where(F.length("word") >= 3).distinct().collect()
        patterns = [f"(^|{WORD}){_escape(r.word)}($|{WORD})" for r in words]
        return self.spark.createDataFrame([(p,) for p in patterns], "pattern string").localCheckpoint()

    def _mentioning(self, df: DataFrame, text: str) -> DataFrame:
        return df.join(F.broadcast(self.needles), F.regexp_like(F.lower(F.col(text)), F.col("pattern")), "left_semi")

    @cached_property
    def quarantined(self) -> DataFrame:
        """Their quarantined lines, decrypted: the table's keys and the line as read."""
        lines = unsealed_quarantine(self._table(QUARANTINE), self.keys.encryption_key)
        return self._mentioning(lines, "raw_payload").select(*QUARANTINE.keys, "raw_payload").localCheckpoint()

    # -- the steps, in order ------------------------------------------------------------------------------
    def identify(self) -> dict:
        hmac_key, subject = self.keys.hmac_key, self.request["subject_key"]
        graph = self._table(gold.IDENTITY_GRAPH)
        customer_id = self.request["customer_id"]
        if customer_id is None:
            found = graph.where(pii.suppression_key(F.col("node"), hmac_key) == subject).select("customer_id").first()
            customer_id = found["customer_id"] if found else None
        named = self.spark.createDataFrame([(subject,)], "subject_key string")
        nodes = [graph.where(F.col("customer_id") == customer_id).select("node")] if customer_id else []
        for source, table in IDENTITY_SOURCES.items():
            records = with_erased(self._table(table), source, named, hmac_key).where("_erased")
            nodes.append(records.select(F.explode(F.array(*[node(k, c) for k, c in IDENTIFIERS[source]]))
                                        .alias("node")))
        subjects = reduce(DataFrame.unionByName, nodes).where(F.col("node").isNotNull()).select(
            pii.suppression_key(F.col("node"), hmac_key).alias("subject_key"),
            F.substring_index("node", ":", 1).alias("node_type")).distinct()
        if subjects.isEmpty():
            _save(self.spark, {**self.request, "status": "nobody", "updated_at": datetime.now(UTC)})
            raise ErasureError(f"erasure request {self.request['erasure_id']}: no customer and no record carries "
                               f"the {self.request['request_kind']} it names")
        stamped = subjects.select("*", F.lit(self.request["erasure_id"]).alias("erasure_id"),
                                  F.lit(datetime.now(UTC)).alias("added_at"))
        replace_slice(stamped, ERASED_SUBJECTS, f"erasure_id = {sql_literal(self.request['erasure_id'])}")
        self.request["customer_id"] = customer_id
        return {"customer_id": customer_id}

    def landing(self) -> dict:
        hashes = self.quarantined.select("source", F.xxhash64("raw_payload").alias("_content_hash"))
        for source in IDENTITY_SOURCES:
            hashes = hashes.unionByName(self._bronze_rows(source).select(F.lit(source).alias("source"),
                                                                         "_content_hash"))
        by_source = [r.source for r in hashes.select("source").distinct().collect()]
        landing, rewritten = str(self.settings.paths.landing), []
        for source in sorted(by_source):
            files = [f for batch in list_landed_files(self.spark, landing, source).values() for f in batch]
            if not files:
                continue
            theirs = hashes.where(F.col("source") == source).select("_content_hash").distinct()
            lines = read_lines(self.spark, files).withColumn("_content_hash", F.xxhash64("value")) \
                .join(F.broadcast(theirs), "_content_hash", "left_semi").collect()
            per_file: dict[str, dict[int, str]] = {}
            for line in lines:
                per_file.setdefault(line.source_file, {})[line.line_number] = line.value
            for uri, numbers in sorted(per_file.items()):
                drop_lines(Path(unquote(urlparse(uri).path)), numbers)
                rewritten.append(uri)
        return {"files_rewritten": rewritten}

    def exports(self) -> dict:
        rewritten, held = purge_exports(self.settings.paths.exports, [self.request["customer_id"]]
                                        if self.request["customer_id"] else [])
        return {"files_rewritten": rewritten, "exports_to_recall": held}

    def quarantine(self) -> dict:
        return self._delete({QUARANTINE: (self.quarantined.drop("raw_payload"), _on(QUARANTINE.keys))})

    def bronze(self) -> dict:
        return self._delete({BRONZE[source]: (self._bronze_rows(source).select("_batch_id", "_content_hash"),
                                              _on(("_batch_id", "_content_hash")))
                             for source in IDENTITY_SOURCES})

    def ops(self) -> dict:
        samples = self._mentioning(self._table(DQ_RESULTS).where(F.col("unexpected_sample").isNotNull()),
                                   "unexpected_sample").select(*DQ_RESULTS.keys)
        cleared = _merge(DQ_RESULTS, samples, _on(DQ_RESULTS.keys), clear="unexpected_sample")
        return {"rows_deleted": {DQ_RESULTS.name: cleared} if cleared else {}}

    def _person(self) -> DataFrame:
        return self.spark.createDataFrame([(self.request["customer_id"],)], "customer_id string")

    def gold(self) -> dict:
        if not self.request["customer_id"]:
            return {}
        deletions = {}
        for table in gold.TABLES:
            if table == gold.CUSTOMER_ID_HISTORY:
                deletions[table] = (self._person(), "s.customer_id IN (t.old_customer_id, t.new_customer_id)")
            elif "customer_id" in table.column_names and table != gold.IDENTITY_GRAPH:
                deletions[table] = (self._person(), "t.customer_id = s.customer_id")
            # aggregates (KPIs, rules, value matrix, cluster profiles) hold no person
        return self._delete(deletions)

    def silver(self) -> dict:
        deletions: dict[Table, tuple[DataFrame, str]] = {}
        for source, table in IDENTITY_SOURCES.items():
            ids = self.records.where(F.col("source") == source).select(F.col("record_id").alias("id"))
            deletions[table] = (ids, f"t.{SOURCES[source].record_id} = s.id")
        transactions = self.records.where(F.col("source").isin("orders", "pos")) \
            .select("source", F.col("record_id").alias("id"))
        deletions[silver.ORDER_LINES] = (transactions, "t.source = s.source AND t.transaction_id = s.id")
        deletions[silver.PII_VAULT] = (self.records.unionByName(self.directory), _on(("source", "record_id")))
        return self._delete(deletions)

    def graph(self) -> dict:
        if not self.request["customer_id"]:
            return {}
        return self._delete({gold.IDENTITY_GRAPH: (self._person(), "t.customer_id = s.customer_id")})

    def vacuum(self) -> dict:
        names = {t.name: t for t in (*BRONZE.values(), *silver.TABLES, *gold.TABLES, QUARANTINE, DQ_RESULTS)}
        touched = [names[n] for n, rows in sorted(self.request["rows_deleted"].items()) if rows and n in names]
        # A table with a change data feed keeps a deleted row in its change files until a vacuum, even when
        # nothing was deleted now (a customer who left an audience before the erasure has no row left).
        if self.request["customer_id"]:
            touched += [t for t in names.values() if t not in touched and _has_change_feed(t)
                        and table_exists(self.spark, t.name)]
        self.spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
        try:
            concurrently(partial(_vacuum, self.spark, table) for table in touched)
        finally:
            self.spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "true")
        return {"tables_vacuumed": [t.name for t in touched], "vacuumed_at": datetime.now(UTC)}

    def _delete(self, deletions: dict[Table, tuple[DataFrame, str]]) -> dict:
        # Every table's deletion is a commit of its own: they run side by side.
        counts = concurrently(partial(_merge, table, keys, condition) for table, (keys, condition) in deletions.items())
        return {"rows_deleted": {t.name: n for t, n in zip(deletions, counts, strict=True) if n}}


def _escape(text: str) -> str:
    return "".join(f"\\{c}" if c in r"\^$.|?*+()[]{}" else c for c in text)


def _on(columns: tuple[str, ...]) -> str:
    return " AND ".join(f"t.{c} = s.{c}" for c in columns)


def _merge(table: Table, keys: DataFrame, condition: str, clear: str | None = None) -> int:
    """Delete the rows of `table` matching `keys` on `condition` (aliases t, s), or with `clear` set that column to
    null in them; return the rows changed. The condition names columns only: Delta logs it with the commit."""
    from delta.tables import DeltaTable

    spark = keys.sparkSession
    if not table_exists(spark, table.name):
        return 0
    # Most tables hold nothing of one person: a scan finds that out, a MERGE would also commit and rewrite.
    if spark.table(table.name).alias("t").join(keys.alias("s"), F.expr(condition), "left_semi").isEmpty():
        return 0
    # Materialised first: the keys are mostly read from the table they change.
    keys = keys.distinct().localCheckpoint()
    merge = DeltaTable.forName(spark, table.name).alias("t").merge(keys.alias("s"), condition)
    (merge.whenMatchedUpdate(set={clear: "NULL"}) if clear else merge.whenMatchedDelete()).execute()
    metrics = last_commit_metrics(spark, table)
    return int(metrics.get("numTargetRowsUpdated" if clear else "numTargetRowsDeleted", 0))


def _has_change_feed(table: Table) -> bool:
    return dict(table.properties).get("delta.enableChangeDataFeed") == "true"


def _vacuum(spark: SparkSession, table: Table) -> None:
    # Deletion vectors only mark rows deleted: purge rewrites those files, then the vacuum removes the old ones.
    if table_properties(spark, table).get("delta.enableDeletionVectors") == "true":
        spark.sql(f"REORG TABLE {table.name} APPLY (PURGE)")
    spark.sql(f"VACUUM {table.name} RETAIN 0 HOURS")


def erased_customers(spark: SparkSession) -> DataFrame:
    """(customer_id) of every erasure identified so far, from the published ops.erasures (none before the first)."""
    if not table_exists(spark, ERASURES.name):
        return spark.createDataFrame([], "customer_id string")
    return erased_ids(spark.table(ERASURES.name))


def erased_ids(erasures: DataFrame) -> DataFrame:
    """(customer_id) of every erasure in `erasures` (ops.erasures rows) with its person identified: exports leave
    them out from then on."""
    return erasures.where(F.col("customer_id").isNotNull()).select("customer_id").distinct()
