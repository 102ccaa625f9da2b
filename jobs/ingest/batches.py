"""Bronze ingestion: raw files -> typed bronze rows, quarantined rows and per-file accounting.

A batch is one landing folder of one source; all pending batches of a source are read in one
pass. Rows are parsed against the source's contract (`schemas/raw.py`); bad rows go to
`ops.quarantine` with a reason code, exact copies of rows already loaded are counted as
deduplicated, and the rest are loaded. The stage (`jobs.ingest.stage`) stages the three
outputs, gates them, and only then replaces exactly these batches' slice of each table, so a
batch is done once its accounting rows exist, and only after its gate passed.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from schemas import Range, RawSource
from schemas.ops import ROW_COUNTS

DATE_LIKE = r"^\s*\d{4}-\d{1,2}-\d{1,2}"
# A column whose values fail to cast on more than this share of a file's rows has changed
# type: that breaks the contract and fails the batch instead of quarantining every row.
TYPE_CHANGE_SHARE = 0.5
TYPE_CHANGE_MIN_ROWS = 10


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
def _blank_to_null(c: Column) -> Column:
    return F.when(F.trim(c) == "", F.lit(None)).otherwise(c)


def _typed(text: Column, type_: str) -> Column:
    if type_ == "string":
        return text
    if type_.startswith(("array", "struct", "map")):
        return F.from_json(text, type_)
    return text.try_cast(type_)


def csv_fields(lines: DataFrame, source: RawSource, headers: dict[str, str]) -> DataFrame:
    """CSV data lines -> one text column per contract field, `extra_fields` and `malformed`.

    Columns are matched by the file's own header, so reordered or added columns are fine.
    """
    parts = []
    for header, files in _group_by_header(headers).items():
        names = header_names(header)
        ddl = ", ".join(f"`c{i}` string" for i in range(len(names) + 1))  # one spare catches extra fields
        parsed = lines.where(F.col("source_file").isin(files) & (F.col("line_number") > 1)).withColumn(
            "f", F.from_csv("value", ddl, {"mode": "PERMISSIVE"}))
        position = {n: i for i, n in enumerate(names)}
        fields = [
            (F.col(f"f.c{position[c]}") if c in position else F.lit(None).cast("string")).alias(c)
            for c in source.column_names
        ]
        extra = [n for n in names if n not in source.column_names]
        extra_map = (
            F.create_map(*[x for n in extra for x in (F.lit(n), F.col(f"f.c{position[n]}"))]) if extra
            else F.lit(None).cast("map<string,string>")
        )
        odd_quotes = (F.size(F.split("value", '"')) % 2) == 0
        malformed = odd_quotes | F.col(f"f.c{len(names)}").isNotNull()
        parts.append(parsed.select("source_file", "batch_id", "line_number", "value", *fields,
                                   extra_map.alias("extra_fields"), malformed.alias("malformed")))
    result = parts[0]
    for part in parts[1:]:
        result = result.unionByName(part)
    return result


def _repeats_a_key(json_object: Column) -> Column:
    keys = F.json_object_keys(json_object)
    return F.coalesce(F.size(keys) != F.size(F.array_distinct(keys)), F.lit(False))


def json_fields(lines: DataFrame, source: RawSource) -> DataFrame:
    """JSON lines -> one text column per contract field, `extra_fields` and `malformed`.

    An object that names a key twice, at the top or in a nested object of an array of structs (an
    order's lines), is malformed: which of the two values is meant cannot be told.
    """
    parsed = lines.withColumn("m", F.from_json("value", "map<string,string>"))
    declared = F.array(*[F.lit(c) for c in source.column_names])
    repeated = _repeats_a_key(F.col("value"))
    for col in source.columns:
        if _struct_fields(col.data_type):
            elements = F.from_json(F.col("m")[col.name], "array<string>")
            repeated = repeated | F.coalesce(F.exists(elements, _repeats_a_key), F.lit(False))
    return parsed.select(
        "source_file", "batch_id", "line_number", "value",
        *[F.col("m")[c].alias(c) for c in source.column_names],
        F.map_filter("m", lambda k, _: ~F.array_contains(declared, k)).alias("extra_fields"),
        (F.col("m").isNull() | repeated).alias("malformed"),
    )


def _struct_fields(data_type: T.DataType) -> list[T.StructField]:
    """The fields of an array of structs (an order's lines); none for any other type."""
    if isinstance(data_type, T.ArrayType) and isinstance(data_type.elementType, T.StructType):
        return list(data_type.elementType.fields)
    return []


def _non_finite(value: Column) -> Column:
    return F.isnan(value) | value.isin(float("inf"), float("-inf"))


def _unparsed_field(name: str) -> Callable[[Column, Column], Column]:
    return lambda typed, text: text[name].isNotNull() & typed[name].isNull()


def _on_field(name: str, check: Callable[[Column], Column]) -> Callable[[Column], Column]:
    return lambda element: check(element[name])


def _outside(value: Column, valid: Range, maximum: float | None) -> Column:
    low = F.lit(False) if valid.minimum is None else (
        value <= valid.minimum if valid.above_minimum else value < valid.minimum)
    return low | (F.lit(False) if maximum is None else value > maximum)


def value_checks(source: RawSource, text: dict[str, Column], typed: dict[str, Column],
                 maximums: dict[str, float]) -> list[tuple[Column, str, str]]:
    """The checks on values that parsed: a nested field whose text did not parse (`TYPE_MISMATCH`, not a
    silent null), then `NON_FINITE` for any NaN or infinity, then `OUT_OF_RANGE` against the contract's
    ranges (`maximums` holds the plausibility limits in force, by 'source.column[.field]')."""
    mismatches, non_finite, out_of_range = [], [], []
    for col in source.columns:
        value, fields = typed[col.name], _struct_fields(col.data_type)
        if fields:
            as_text = T.ArrayType(T.StructType([T.StructField(f.name, T.StringType()) for f in fields]))
            texts = F.from_json(text[col.name], as_text)
            for f in fields:
                # Spark passes a lambda as many arguments as it declares: bind the field name outside it.
                unparsed = F.zip_with(value, texts, _unparsed_field(f.name))
                mismatches.append((F.array_contains(unparsed, True), "TYPE_MISMATCH", f"{col.name}.{f.name}"))
                if isinstance(f.dataType, T.DoubleType | T.FloatType):
                    non_finite.append((F.exists(value, _on_field(f.name, _non_finite)), "NON_FINITE",
                                       f"{col.name}.{f.name}"))
        elif isinstance(col.data_type, T.DoubleType | T.FloatType):
            non_finite.append((_non_finite(value), "NON_FINITE", col.name))
        for valid in col.ranges:
            name = ".".join(filter(None, (col.name, valid.field)))
            maximum = maximums.get(f"{source.name}.{name}", valid.maximum) if valid.plausible else valid.maximum
            if valid.field:
                outside = F.exists(value, _on_field(valid.field, partial(_outside, valid=valid, maximum=maximum)))
            else:
                outside = _outside(value, valid, maximum)
            if valid.when:
                outside = outside & (F.upper(F.trim(text[valid.when[0]])) == valid.when[1].upper())
            out_of_range.append((F.coalesce(outside, F.lit(False)), "OUT_OF_RANGE", name))
    return mismatches + non_finite + out_of_range


def validate(fields: DataFrame, source: RawSource, maximums: dict[str, float] | None = None) -> DataFrame:
    """Typed contract columns plus `reason_code`/`reason_column` (null when the row is valid).

    Bytes that are not UTF-8 are `BAD_ENCODING`: the text reader would turn them into U+FFFD, a silent
    change of the value (a file in another encoding is converted before it lands).
    """
    checks: list[tuple[Column, str, str | None]] = [
        (F.trim("value") == "", "EMPTY_LINE", None),
        (~F.is_valid_utf8("value"), "BAD_ENCODING", None),
        (F.col("malformed"), "MALFORMED_ROW", None),
    ]
    text = {col.name: _blank_to_null(F.col(col.name)) for col in source.columns}
    typed = {col.name: _typed(text[col.name], col.type) for col in source.columns}
    # Missing required fields are reported before type failures, whatever the column order.
    checks += [(text[col.name].isNull(), "MISSING_REQUIRED", col.name) for col in source.columns if not col.nullable]
    for col in source.columns:
        failed = text[col.name].isNotNull() & typed[col.name].isNull()
        if col.type in ("date", "timestamp", "timestamp_ntz"):
            checks.append((failed & text[col.name].rlike(DATE_LIKE), "IMPOSSIBLE_DATE", col.name))
        checks.append((failed, "TYPE_MISMATCH", col.name))
    checks += value_checks(source, text, typed, maximums or {})

    def first(kind: int) -> Column:
        expr = F.lit(None).cast("string")
        for cond, code, column in reversed(checks):
            expr = F.when(cond, F.lit(code if kind == 0 else column)).otherwise(expr)
        return expr

    return fields.select(
        "source_file", "batch_id", "line_number", "value", "extra_fields",
        *[typed[c.name].alias(c.name) for c in source.columns],
        first(0).alias("reason_code"), first(1).alias("reason_column"),
    )


def type_changes(validated: DataFrame, min_rows: int = TYPE_CHANGE_MIN_ROWS,
                 share: float = TYPE_CHANGE_SHARE) -> list[tuple[str, str, int, int]]:
    """(file, column, failed rows, rows) where a column fails to cast on most rows of a file."""
    stats = (
        validated.where(F.col("reason_code").isin("TYPE_MISMATCH", "IMPOSSIBLE_DATE"))
        .groupBy("source_file", "reason_column").agg(F.count("*").alias("failed"))
        .join(validated.groupBy("source_file").agg(F.count("*").alias("rows")), "source_file")
        .where((F.col("rows") >= min_rows) & (F.col("failed") > F.col("rows") * share))
    )
    return [(r.source_file, r.reason_column, r.failed, r.rows) for r in stats.collect()]


def with_outcome(validated: DataFrame, earlier_hashes: DataFrame) -> DataFrame:
    """Validated lines with `_content_hash` and `outcome`: quarantined (a reason), deduplicated or loaded.

    `earlier_hashes` holds the `_content_hash` of rows other batches loaded (`replay_window_hashes`). Copies of
    those (replays, re-sent files) and repeats of a line within these batches (the first copy, by batch,
    file and line, is kept) count as deduplicated.
    """
    first_copy = Window.partitionBy("_content_hash").orderBy("batch_id", "source_file", "line_number")
    return (
        validated.withColumn("_content_hash", F.xxhash64("value"))
        .withColumn("copy_no", F.when(F.col("reason_code").isNull(), F.row_number().over(first_copy)))
        .join(earlier_hashes.distinct().withColumn("seen_before", F.lit(True)), "_content_hash", "left")
        .withColumn(
            "outcome",
            F.when(F.col("reason_code").isNotNull(), "quarantined")
            .when((F.col("copy_no") == 1) & F.col("seen_before").isNull(), "loaded")
            .otherwise("deduplicated"),
        )
    )


def split_batches(outcome: DataFrame, files: DataFrame, source: str, run_id: str, ingested_at: datetime
                  ) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Bronze rows, quarantine rows and per-file accounting of lines `with_outcome`, for a set of batches
    of one source: every line is counted once, under its outcome. `files` (source_file, batch_id) lists
    every file read, so that one without data lines (empty, or a header alone) is accounted too, as `empty`."""
    stamp = F.lit(ingested_at).cast("timestamp")
    quarantine = outcome.where(F.col("outcome") == "quarantined").select(
        F.lit(source).alias("source"), "batch_id", F.lit(run_id).alias("run_id"), stamp.alias("ingested_at"),
        "source_file", "line_number", F.col("value").alias("raw_payload"), "reason_code", "reason_column",
    )
    bronze = outcome.where(F.col("outcome") == "loaded").select(
        "*", F.col("source_file").alias("_source_file"), F.col("line_number").alias("_line_number"),
        F.col("batch_id").alias("_batch_id"), F.lit(run_id).alias("_run_id"), stamp.alias("_ingested_at"),
    )
    per_file = outcome.groupBy("batch_id", "source_file").agg(
        F.count("*").alias("rows_read"),
        F.count(F.when(F.col("outcome") == "loaded", 1)).alias("rows_loaded"),
        F.count(F.when(F.col("outcome") == "quarantined", 1)).alias("rows_quarantined"),
        F.count(F.when(F.col("outcome") == "deduplicated", 1)).alias("rows_deduplicated"),
        F.array_sort(F.array_distinct(F.flatten(F.collect_list(F.coalesce(F.map_keys("extra_fields"), F.array()))))
                     ).alias("extra_columns"),
    )
    accounting = files.join(per_file, ["batch_id", "source_file"], "left").select(
        F.lit(source).alias("source"), "batch_id", "source_file",
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
    """The three outputs of a set of batches of one source, computed from one persisted outcome."""

    bronze: DataFrame
    quarantine: DataFrame
    accounting: DataFrame
    outcome: DataFrame

    def release(self) -> None:
        self.outcome.unpersist()


def parse_batches(
    spark: SparkSession, source: RawSource, files: list[str], earlier_hashes: DataFrame, run_id: str,
    ingested_at: datetime, maximums: dict[str, float] | None = None,
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
    outcome = with_outcome(validate(fields, source, maximums), earlier_hashes).persist()
    changes = type_changes(outcome)
    if changes:
        outcome.unpersist()
        file, column, failed, rows = changes[0]
        raise ContractViolation(
            f"{source.name}: column '{column}' in {file} no longer holds {source.column(column).type} "
            f"({failed} of {rows} rows fail to parse); the contract in schemas/raw.py expects "
            f"{source.column(column).type}"
        )
    listed = spark.createDataFrame([(uri, uri.rstrip("/").split("/")[-2]) for uri in file_uris(spark, files)],
                                   "source_file string, batch_id string")
    return ParsedBatches(*split_batches(outcome, listed, source.name, run_id, ingested_at), outcome)


def batch_results(accounting: DataFrame) -> list[BatchResult]:
    """Per source and batch: files and row counts, from accounting rows."""
    totals = accounting.groupBy("source", "batch_id").agg(F.count("*"), *[F.sum(c) for c in ROW_COUNTS]) \
        .orderBy("source", "batch_id").collect()
    return [BatchResult(r[0], r[1], *(int(v) for v in r[2:])) for r in totals]


def _group_by_header(headers: dict[str, str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for file, header in sorted(headers.items()):
        groups.setdefault(header.strip(), []).append(file)
    return groups


def header_names(header: str) -> list[str]:
    """A CSV header's column names, read as CSV: a quoted name ("contact_id") is the name itself."""
    return [name.strip() for name in next(csv.reader([header]), [])]


def _check_header_contract(source: RawSource, headers: dict[str, str]) -> None:
    for file, header in sorted(headers.items()):
        names = set(header_names(header))
        for col in source.columns:
            if not col.nullable and col.name not in names:
                raise ContractViolation(
                    f"{source.name}: required column '{col.name}' ({col.type}) is missing from {file}; "
                    f"header is: {header.strip()}"
                )
