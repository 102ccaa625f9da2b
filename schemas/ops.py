"""Operational tables: ingestion accounting, quarantine, data-quality results."""

from __future__ import annotations

from schemas import C, Table

INGEST_ACCOUNTING = Table(
    name="ops.ingest_accounting",
    doc="Rows of every landed file: rows_read = rows_loaded + rows_quarantined + rows_deduplicated. "
        "Written last for a batch, so it marks the batch as done.",
    keys=("source", "batch_id", "source_file"),
    partition_by=("source",),
    columns=(
        C("source", "string", False),
        C("batch_id", "string", False, "landing folder name (the batch date)"),
        C("source_file", "string", False),
        C("rows_read", "long", False, "data lines in the file (header excluded)"),
        C("rows_loaded", "long", False, "new rows written to bronze"),
        C("rows_quarantined", "long", False),
        C("rows_deduplicated", "long", False, "exact copies of a row already loaded (same batch or earlier)"),
        C("extra_columns", "array<string>", False, "columns beyond the contract (schema drift), kept in extra_fields"),
        C("run_id", "string", False),
        C("ingested_at", "timestamp", False),
    ),
)

QUARANTINE = Table(
    name="ops.quarantine",
    doc="Rejected input rows with the raw payload, where they came from and why.",
    keys=("source", "source_file", "line_number"),
    partition_by=("source",),
    columns=(
        C("source", "string", False),
        C("batch_id", "string", False),
        C("source_file", "string", False),
        C("line_number", "long", False, "1-based line in the file (the CSV header is line 1)"),
        C("raw_payload", "string", False),
        C("reason_code", "string", False,
          "MALFORMED_ROW, MISSING_REQUIRED, TYPE_MISMATCH, IMPOSSIBLE_DATE or EMPTY_LINE"),
        C("reason_column", "string", True, "the offending field, where there is one"),
        C("run_id", "string", False),
        C("ingested_at", "timestamp", False),
    ),
)

DQ_RESULTS = Table(
    name="ops.dq_results",
    doc="Every expectation evaluated by a quality gate.",
    keys=("run_id", "table_name", "expectation_id"),
    partition_by=("table_name",),
    columns=(
        C("run_id", "string", False),
        C("stage", "string", False),
        C("table_name", "string", False),
        C("suite", "string", False),
        C("expectation_id", "string", False, "expectation type and its column"),
        C("expectation_type", "string", False),
        C("column_name", "string"),
        C("severity", "string", False, "critical stops the run; warning is recorded"),
        C("success", "boolean", False),
        C("observed_value", "string"),
        C("unexpected_count", "long"),
        C("unexpected_sample", "string"),
        C("validated_at", "timestamp", False),
    ),
)

# rows_read = rows_loaded + rows_quarantined + rows_deduplicated
ROW_COUNTS = ("rows_read", "rows_loaded", "rows_quarantined", "rows_deduplicated")

TABLES = (INGEST_ACCOUNTING, QUARANTINE, DQ_RESULTS)
