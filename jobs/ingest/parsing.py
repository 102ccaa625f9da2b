"""Parsing and validating landed lines against their source's contract: pure transforms over DataFrames.

CSV lines are split by their file's own header, JSON lines parsed as a map of texts; `validate` types every
contract field and gives each line its first reason code (or none); `type_changes` finds a column that
no longer parses on most of a file's rows, which breaks the contract rather than the rows.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from functools import partial

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.platform.quality import non_finite
from schemas import Range, RawSource

DATE_LIKE = r"^\s*\d{4}-\d{1,2}-\d{1,2}"
# A column whose values fail to cast on more than this share of a file's rows has changed
# type: that breaks the contract and fails the batch instead of quarantining every row.
TYPE_CHANGE_SHARE = 0.5
TYPE_CHANGE_MIN_ROWS = 10


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
    if not parts:   # every file is empty: no header, no lines, nothing to parse
        return lines.where(F.lit(False)).select(
            "source_file", "batch_id", "line_number", "value",
            *[F.lit(None).cast("string").alias(c) for c in source.column_names],
            F.lit(None).cast("map<string,string>").alias("extra_fields"), F.lit(False).alias("malformed"))
    result = parts[0]
    for part in parts[1:]:
        result = result.unionByName(part)
    return result


def _repeats_a_key(json_map: Column) -> Column:
    # `from_json` into a map keeps both entries of a key given twice (and a lookup sees the first): the map
    # itself tells, without parsing the line again.
    keys = F.map_keys(json_map)
    return F.coalesce(F.size(keys) != F.size(F.array_distinct(keys)), F.lit(False))


def json_fields(lines: DataFrame, source: RawSource) -> DataFrame:
    """JSON lines -> one text column per contract field, `extra_fields` and `malformed`.

    An object that names a key twice, at the top or in a nested object of an array of structs (an
    order's lines), is malformed: which of the two values is meant cannot be told.
    """
    names = source.column_names
    parsed = lines.withColumn("m", F.from_json("value", "map<string,string>"))
    # The usual line names each of its keys once and only declared ones: then its size is the count of
    # declared keys it holds, and the lambdas that find repeated or extra keys (per key, interpreted: a
    # third of the parse) are skipped.
    declared_keys = sum(F.map_contains_key("m", c).cast("int") for c in names)
    usual = F.coalesce(F.size("m") == declared_keys, F.lit(False))
    repeated = F.when(usual, F.lit(False)).otherwise(_repeats_a_key(F.col("m")))
    for col in source.columns:
        if _struct_fields(col.data_type):
            elements = F.from_json(F.col("m")[col.name], "array<map<string,string>>")
            repeated = repeated | F.coalesce(F.exists(elements, _repeats_a_key), F.lit(False))
    extra = F.when(usual, F.create_map().cast("map<string,string>")) \
        .otherwise(F.map_filter("m", lambda k, _: ~k.isin(*names)))
    return parsed.select(
        "source_file", "batch_id", "line_number", "value",
        *[F.col("m")[c].alias(c) for c in names],
        extra.alias("extra_fields"),
        (F.col("m").isNull() | repeated).alias("malformed"),
    )


def _struct_fields(data_type: T.DataType) -> list[T.StructField]:
    """The fields of an array of structs (an order's lines); none for any other type."""
    if isinstance(data_type, T.ArrayType) and isinstance(data_type.elementType, T.StructType):
        return list(data_type.elementType.fields)
    return []


def _unparsed_field(name: str) -> Callable[[Column, Column], Column]:
    return lambda typed, text: text[name].isNotNull() & typed[name].isNull()


def _on_field(name: str, check: Callable[[Column], Column]) -> Callable[[Column], Column]:
    return lambda element: check(element[name])


def _outside(value: Column, valid: Range, maximum: float | None) -> Column:
    low = F.lit(False) if valid.minimum is None else (
        value <= valid.minimum if valid.above_minimum else value < valid.minimum)
    return low | (F.lit(False) if maximum is None else value > maximum)


def element_texts(text: Column, data_type: T.DataType) -> Column:
    """An array of structs' text parsed with every field as text: what each field said before its cast."""
    return F.from_json(text, T.ArrayType(T.StructType([T.StructField(f.name, T.StringType())
                                                       for f in _struct_fields(data_type)])))


def value_checks(source: RawSource, text: dict[str, Column], typed: dict[str, Column],
                 elements: dict[str, Column], maximums: dict[str, float]) -> list[tuple[Column, str, str]]:
    """The checks on values that parsed: a nested field whose text did not parse (`TYPE_MISMATCH`, not a
    silent null), then `NON_FINITE` for any NaN or infinity, then `OUT_OF_RANGE` against the contract's
    ranges (`maximums` holds the plausibility limits in force, by 'source.column[.field]'). `elements`: the
    `element_texts` of each array-of-structs column."""
    mismatches, infinite, out_of_range = [], [], []
    for col in source.columns:
        value, fields = typed[col.name], _struct_fields(col.data_type)
        if fields:
            texts = elements[col.name]
            for f in fields:
                # Spark passes a lambda as many arguments as it declares: bind the field name outside it.
                unparsed = F.zip_with(value, texts, _unparsed_field(f.name))
                mismatches.append((F.array_contains(unparsed, True), "TYPE_MISMATCH", f"{col.name}.{f.name}"))
                if isinstance(f.dataType, T.DoubleType | T.FloatType):
                    infinite.append((F.exists(value, _on_field(f.name, non_finite)), "NON_FINITE",
                                     f"{col.name}.{f.name}"))
        elif isinstance(col.data_type, T.DoubleType | T.FloatType):
            infinite.append((non_finite(value), "NON_FINITE", col.name))
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
    return mismatches + infinite + out_of_range


def _text_column(name: str) -> str:
    return f"__text_{name}"


def _elements_column(name: str) -> str:
    return f"__elements_{name}"


def validate(fields: DataFrame, source: RawSource, maximums: dict[str, float] | None = None) -> DataFrame:
    """Typed contract columns plus `reason_code`/`reason_column` (null when the row is valid).

    Bytes that are not UTF-8 are `BAD_ENCODING`: the text reader would turn them into U+FFFD, a silent
    change of the value (a file in another encoding is converted before it lands).
    """
    # One projection per step: the texts, then their casts, then one chain of checks over those columns.
    # Spark keeps a projection whose costly columns the next one reads more than once, so each cast and
    # the chain run once per line (inline, the chain was evaluated for the code and again for the column).
    names = source.column_names
    texts = fields.select("source_file", "batch_id", "line_number", "value", "extra_fields", "malformed",
                          *[_blank_to_null(F.col(c)).alias(_text_column(c)) for c in names])
    nested = [c for c in source.columns if _struct_fields(c.data_type)]
    typed_frame = texts.select(
        "*", *[_typed(F.col(_text_column(c.name)), c.type).alias(c.name) for c in source.columns],
        *[element_texts(F.col(_text_column(c.name)), c.data_type).alias(_elements_column(c.name)) for c in nested])
    text = {c: F.col(_text_column(c)) for c in names}
    typed = {c: F.col(c) for c in names}
    elements = {c.name: F.col(_elements_column(c.name)) for c in nested}
    checks: list[tuple[Column, str, str | None]] = [
        (F.trim("value") == "", "EMPTY_LINE", None),
        (~F.is_valid_utf8("value"), "BAD_ENCODING", None),
        (F.col("malformed"), "MALFORMED_ROW", None),
    ]
    # Missing required fields are reported before type failures, whatever the column order.
    checks += [(text[col.name].isNull(), "MISSING_REQUIRED", col.name) for col in source.columns if not col.nullable]
    for col in source.columns:
        failed = text[col.name].isNotNull() & typed[col.name].isNull()
        if col.type in ("date", "timestamp", "timestamp_ntz"):
            checks.append((failed & text[col.name].rlike(DATE_LIKE), "IMPOSSIBLE_DATE", col.name))
        if col.type != "string":    # a text is its own value: it cannot fail to parse
            checks.append((failed, "TYPE_MISMATCH", col.name))
    checks += value_checks(source, text, typed, elements, maximums or {})

    reason = F.lit(None).cast("struct<code:string,column:string>")
    for cond, code, column in reversed(checks):
        reason = F.when(cond, F.struct(F.lit(code).alias("code"), F.lit(column).cast("string").alias("column"))) \
            .otherwise(reason)
    return typed_frame.select("*", reason.alias("_reason")).select(
        "source_file", "batch_id", "line_number", "value", "extra_fields", *names,
        F.col("_reason.code").alias("reason_code"), F.col("_reason.column").alias("reason_column"),
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


def _group_by_header(headers: dict[str, str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for file, header in sorted(headers.items()):
        groups.setdefault(header.strip(), []).append(file)
    return groups


def header_names(header: str) -> list[str]:
    """A CSV header's column names, read as CSV: a quoted name ("contact_id") is the name itself."""
    return [name.strip() for name in next(csv.reader([header]), [])]
