"""Bronze ingestion: raw files -> typed bronze rows, quarantined rows and per-file accounting.

A batch is one landing folder of one source; all pending batches of a source are read in one
pass. Rows are parsed against the source's contract (`schemas/raw.py`); bad rows go to
`ops.quarantine` with a reason code, exact copies of rows already loaded are counted as
deduplicated, and the rest are loaded. The stage (`jobs.ingest.stage`) stages the three
outputs, gates them, and only then replaces exactly these batches' slice of each table, so a
batch is done once its accounting rows exist, and only after its gate passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.ingest.parsing import csv_fields, header_names, json_fields, type_changes, validate
from jobs.platform import pii
from schemas import RawSource
from schemas.bronze import sealed_columns
from schemas.ops import ROW_COUNTS


class ContractViolation(ValueError):
    """A landed file breaks its source's contract (missing required column, changed type)."""


@dataclass(frozen=True)
class BatchResult:
    source: str
    batch_id: str
    files: int
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    rows_deduplicated: int


# -- IO: listing and reading ------------------------------------------------------------------------
def list_landed_files(spark: SparkSession, landing: str, source: str) -> dict[str, list[str]]:
    """Files under landing/<source>/<batch>/, by batch id, through Hadoop's FS (local, HDFS, S3...)."""
    jvm = spark.sparkContext._jvm
    pattern = jvm.org.apache.hadoop.fs.Path(f"{landing}/{source}/*/*")
    fs = pattern.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    batches: dict[str, list[str]] = {}
    for status in fs.globStatus(pattern) or []:
        if status.isFile() and not status.getPath().getName().startswith((".", "_")):
            path = status.getPath()
            batches.setdefault(path.getParent().getName(), []).append(path.toString())
    return {b: sorted(f) for b, f in sorted(batches.items())}


def read_lines(spark: SparkSession, files: list[str]) -> DataFrame:
    """Raw lines with their file, batch (landing folder) and 1-based line number."""
    raw = spark.read.text(files).select(
        "value",
        F.col("_metadata.file_path").alias("source_file"),
        F.col("_metadata.file_block_start").alias("block_start"),
        F.monotonically_increasing_id().alias("row_id"),
    )
    return number_lines(raw)


def number_lines(raw: DataFrame) -> DataFrame:
    """Line numbers from scan order: the rows of one file split are contiguous and in order in one
    partition, so a line's number is its row id less its split's first, plus the lines of the file's
    earlier splits. The splits' table is small and broadcast: no line is shuffled or sorted."""
    splits = raw.groupBy("source_file", "block_start").agg(F.min("row_id").alias("first_row"),
                                                           F.count("*").alias("n"))
    earlier = Window.partitionBy("source_file").orderBy("block_start").rowsBetween(Window.unboundedPreceding, -1)
    offsets = splits.select("source_file", "block_start",
                            (F.coalesce(F.sum("n").over(earlier), F.lit(0)) - F.col("first_row") + 1).alias("offset"))
    return raw.join(F.broadcast(offsets), ["source_file", "block_start"]).select(
        "source_file",
        F.element_at(F.split("source_file", "/"), -2).alias("batch_id"),
        (F.col("row_id") + F.col("offset")).cast("long").alias("line_number"),
        "value",
    )


def first_lines(spark: SparkSession, files: list[str]) -> dict[str, str]:
    """Each file's first line (a CSV header), read through Hadoop's FS and codecs (a .gz too) without
    scanning the files; a byte-order mark is dropped. Keyed by the file's URI, as `_metadata.file_path`
    names it."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    codecs = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(conf)
    firsts = {}
    for file in files:
        path = jvm.org.apache.hadoop.fs.Path(file)
        stream = path.getFileSystem(conf).open(path)
        codec = codecs.getCodec(path)
        reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(
            codec.createInputStream(stream) if codec else stream, "UTF-8"))
        try:
            first = reader.readLine()
        finally:
            reader.close()
        if first is not None:     # an empty file has no header and no lines
            firsts[path.toUri().toString()] = first.removeprefix("\ufeff")
    return firsts


def replay_window_hashes(bronze: DataFrame, batch_ids: list[str], replay_from: str) -> DataFrame:
    """The `_content_hash` of the rows other batches loaded from `replay_from` (a batch date) on: re-sent copies
    are looked for in this replay window, so a day's dedup reads days of bronze, not all its history."""
    return bronze.where((F.col("_batch_id") >= replay_from) & ~F.col("_batch_id").isin(batch_ids)) \
        .select("_content_hash")


# -- pure transformations ---------------------------------------------------------------------------
def bronze_context(source: RawSource) -> Column:
    """Associated data of a bronze row's encrypted fields: '<source>|<record id>' (`pii.seal` adds the field)."""
    return F.concat_ws("|", F.lit(source.name), F.col(source.record_id))


def quarantine_context() -> Column:
    """Associated data of a quarantined line: 'quarantine|<source>|<file>|<line>' (`pii.seal` adds the field)."""
    return F.concat_ws("|", F.lit("quarantine"), "source", "source_file", F.col("line_number").cast("string"))


def unsealed_bronze(bronze: DataFrame, source: RawSource, encryption_key: bytes) -> DataFrame:
    """Bronze rows with their personal fields decrypted to the contract's types (what cleanse reads)."""
    return pii.unseal(bronze, sealed_columns(source), bronze_context(source), encryption_key)


def unsealed_quarantine(quarantine: DataFrame, encryption_key: bytes) -> DataFrame:
    """ops.quarantine rows with `raw_payload` decrypted to the line as read."""
    return pii.unseal(quarantine, {"raw_payload": "string"}, quarantine_context(), encryption_key)


def with_content_hash(validated: DataFrame) -> DataFrame:
    """Adds `_content_hash`; the line's text is kept only where the line is quarantined (its payload), so
    the persisted lines hold each valid line once, typed, not twice."""
    return validated.select(*[c for c in validated.columns if c != "value"],
                            F.when(F.col("reason_code").isNotNull(), F.col("value")).alias("value"),
                            F.xxhash64("value").alias("_content_hash"))


def repeated_lines(hashed: DataFrame, earlier_hashes: DataFrame) -> DataFrame:
    """(source_file, line_number) of the valid lines of `hashed` that are copies: of a row another batch of
    the replay window loaded (`earlier_hashes`: their `_content_hash`), or of a line earlier in these
    batches (the first copy, by batch, file and line, is kept).

    Only hashes and positions are shuffled and sorted, never the lines themselves (at 1M customers the
    lines' shuffle was 7 GB for the events alone); copies are few, so the result is small."""
    valid = hashed.where(F.col("reason_code").isNull()).select(
        "_content_hash", F.struct("batch_id", "source_file", "line_number").alias("position"))
    first_copy = Window.partitionBy("_content_hash").orderBy("position")
    later = valid.withColumn("copy_no", F.row_number().over(first_copy)).where(F.col("copy_no") > 1)
    replayed = valid.join(earlier_hashes, "_content_hash", "left_semi")
    return later.select("position").unionByName(replayed.select("position")).distinct() \
        .select("position.source_file", "position.line_number")


def with_outcome(hashed: DataFrame, repeats: DataFrame) -> DataFrame:
    """Lines with `outcome`: quarantined (a reason), deduplicated (listed in `repeats`, from `repeated_lines`)
    or loaded."""
    return hashed.join(repeats.withColumn("repeat", F.lit(True)), ["source_file", "line_number"], "left") \
        .withColumn("outcome", F.when(F.col("reason_code").isNotNull(), "quarantined")
                    .when(F.col("repeat").isNull(), "loaded").otherwise("deduplicated")) \
        .drop("repeat")


def split_batches(outcome: DataFrame, files: DataFrame, source: RawSource, run_id: str, ingested_at: datetime,
                  encryption_key: bytes) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Bronze rows, quarantine rows and per-file accounting of lines `with_outcome`, for a set of batches
    of one source: every line is counted once, under its outcome. `files` (source_file, batch_id) lists
    every file read, so that one without data lines (empty, or a header alone) is accounted too, as `empty`.
    Personal fields (`sealed_columns`) and quarantined lines leave encrypted: a bronze or quarantine file holds
    no contact point in clear (cleanse decrypts what it needs)."""
    stamp = F.lit(ingested_at).cast("timestamp")
    quarantine = outcome.where(F.col("outcome") == "quarantined").select(
        F.lit(source.name).alias("source"), "batch_id", F.lit(run_id).alias("run_id"), stamp.alias("ingested_at"),
        "source_file", "line_number", F.col("value").alias("raw_payload"), "reason_code", "reason_column",
    )
    quarantine = pii.seal(quarantine, ["raw_payload"], quarantine_context(), encryption_key)
    bronze = outcome.where(F.col("outcome") == "loaded").select(
        "*", F.col("source_file").alias("_source_file"), F.col("line_number").alias("_line_number"),
        F.col("batch_id").alias("_batch_id"), F.lit(run_id).alias("_run_id"), stamp.alias("_ingested_at"),
    )
    bronze = pii.seal(bronze, sealed_columns(source), bronze_context(source), encryption_key)
    per_file = outcome.groupBy("batch_id", "source_file").agg(
        F.count("*").alias("rows_read"),
        F.count(F.when(F.col("outcome") == "loaded", 1)).alias("rows_loaded"),
        F.count(F.when(F.col("outcome") == "quarantined", 1)).alias("rows_quarantined"),
        F.count(F.when(F.col("outcome") == "deduplicated", 1)).alias("rows_deduplicated"),
        F.array_sort(F.array_distinct(F.flatten(F.collect_list(F.coalesce(F.map_keys("extra_fields"), F.array()))))
                     ).alias("extra_columns"),
    )
    accounting = files.join(per_file, ["batch_id", "source_file"], "left").select(
        F.lit(source.name).alias("source"), "batch_id", "source_file",
        *[F.coalesce(c, F.lit(0).cast("long")).alias(c) for c in ROW_COUNTS],
        F.coalesce("extra_columns", F.array().cast("array<string>")).alias("extra_columns"),
        F.when(F.col("rows_read").isNull(), "empty").otherwise("read").alias("status"),
        F.lit(run_id).alias("run_id"), stamp.alias("ingested_at"))
    return bronze, quarantine, accounting


# -- a set of batches of one source ------------------------------------------------------------------
def file_uris(spark: SparkSession, files: list[str]) -> list[str]:
    """Each file's URI as `_metadata.file_path` and the accounting name it (file:///...)."""
    path = spark.sparkContext._jvm.org.apache.hadoop.fs.Path
    return [path(f).toUri().toString() for f in files]


def landed_batches(spark: SparkSession, landing: str, source: RawSource, as_of: str,
                   done_files: set[str]) -> dict[str, list[str]]:
    """Batches up to `as_of` with at least one file not in `done_files` (those accounted for, by URI)."""
    return {
        batch: files
        for batch, files in list_landed_files(spark, landing, source.name).items()
        if batch <= as_of and any(uri not in done_files for uri in file_uris(spark, files))
    }


@dataclass(frozen=True)
class ParsedBatches:
    """The three outputs of a set of batches of one source, computed from the persisted parsed lines."""

    bronze: DataFrame
    quarantine: DataFrame
    accounting: DataFrame
    persisted: tuple[DataFrame, ...]

    def release(self) -> None:
        for frame in self.persisted:
            frame.unpersist()


# Up to this many copies, the list of them is broadcast to the lines; past it (a large file sent twice in
# one run), the lines are joined to it by a shuffle, once, and kept.
BROADCAST_REPEATS = 1_000_000   # about 130 MB of (file, line) to broadcast


def parse_batches(
    spark: SparkSession, source: RawSource, files: list[str], earlier_hashes: DataFrame, run_id: str,
    ingested_at: datetime, encryption_key: bytes, maximums: dict[str, float] | None = None,
) -> ParsedBatches:
    """Parse and validate the files of a set of batches of one source and split them, in one pass; a
    file that breaks the contract raises `ContractViolation` naming the file, the column and the type.
    `maximums`: the plausibility limits in force (`IngestConfig.maximums`), else the contracts' own."""
    lines = read_lines(spark, files)
    if source.format == "csv":
        headers = first_lines(spark, files)
        _check_header_contract(source, headers)
        fields = csv_fields(lines, source, headers)
    else:
        fields = json_fields(lines, source)
    hashed = with_content_hash(validate(fields, source, maximums)).persist()
    changes = type_changes(hashed)
    if changes:
        hashed.unpersist()
        file, column, failed, rows = changes[0]
        expected = declared_type(source, column)
        raise ContractViolation(
            f"{source.name}: column '{column}' in {file} no longer holds {expected} "
            f"({failed} of {rows} rows fail to parse); the contract in schemas/raw.py expects {expected}"
        )
    repeats = repeated_lines(hashed, earlier_hashes).localCheckpoint()
    if repeats.count() <= BROADCAST_REPEATS:
        outcome, persisted = with_outcome(hashed, F.broadcast(repeats)), (hashed,)
    else:
        outcome = with_outcome(hashed, repeats).persist()
        persisted = (hashed, outcome)
    listed = spark.createDataFrame([(uri, uri.rstrip("/").split("/")[-2]) for uri in file_uris(spark, files)],
                                   "source_file string, batch_id string")
    return ParsedBatches(*split_batches(outcome, listed, source, run_id, ingested_at, encryption_key), persisted)


def declared_type(source: RawSource, column: str) -> str:
    """The contract's type of a column, or of a field of its structs ('lines.quantity')."""
    name, _, field = column.partition(".")
    data_type = source.column(name).data_type
    if field:
        return data_type.elementType[field].dataType.simpleString()
    return source.column(name).type


def batch_results(accounting: DataFrame) -> list[BatchResult]:
    """Per source and batch: files and row counts, from accounting rows."""
    totals = accounting.groupBy("source", "batch_id").agg(F.count("*"), *[F.sum(c) for c in ROW_COUNTS]) \
        .orderBy("source", "batch_id").collect()
    return [BatchResult(r[0], r[1], *(int(v) for v in r[2:])) for r in totals]


def _check_header_contract(source: RawSource, headers: dict[str, str]) -> None:
    for file, header in sorted(headers.items()):
        names = set(header_names(header))
        for col in source.columns:
            if not col.nullable and col.name not in names:
                raise ContractViolation(
                    f"{source.name}: required column '{col.name}' ({col.type}) is missing from {file}; "
                    f"header is: {header.strip()}"
                )
