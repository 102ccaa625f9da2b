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

RESOLUTION_CHECKS = Table(
    name="ops.resolution_checks",
    doc="The guards of every identity resolution run: a row per check with its limit (from conf identity.guards). "
        "A non-null breach stops the run before the identity graph is published.",
    keys=("run_id", "check_name"),
    columns=(
        C("run_id", "string", False),
        C("check_name", "string", False),
        C("observed", "double", doc="null when there is nothing to compare (e.g. no previous run)"),
        C("limit_value", "double", False),
        C("breach", "string", doc="null when within the limit; else what broke, naming the worst clusters"),
        C("checked_at", "timestamp", False),
    ),
)

RESOLUTION_RUNS = Table(
    name="ops.resolution_runs",
    doc="One row per published identity resolution: sizes, the match model's fit and what changed.",
    keys=("run_id",),
    columns=(
        C("run_id", "string", False),
        C("as_of_date", "date", False),
        C("nodes", "long", False, "identifiers and contact records in the graph"),
        C("contact_records", "long", False),
        C("customers", "long", False),
        C("largest_cluster", "long", False, "nodes of the largest customer"),
        C("merged_share", "double", False, "share of contact records sharing a customer with another contact"),
        C("candidate_pairs", "long", False, "pairs compared by the probabilistic matcher"),
        C("probabilistic_links", "long", False, "pairs at or above the match threshold"),
        C("links_cut", "long", False, "probabilistic links dropped inside oversized clusters"),
        C("skipped_blocks", "long", False, "blocks over the size limit, not compared"),
        C("shared_devices", "long", False, "devices linked to too many accounts, not used as links"),
        C("ids_merged", "long", False),
        C("ids_split", "long", False),
        C("match_share", "double", False, "EM estimate of the share of candidate pairs that match"),
        C("em_iterations", "int", False),
        C("model", "string", False, "m and u per comparison level, JSON"),
        C("seconds", "double", False),
        C("resolved_at", "timestamp", False),
    ),
)

CLV_MODELS = Table(
    name="ops.clv_models",
    doc="Every CLV model fitted: parameters under the literature's names, fit, holdout validation, and whether "
        "it was promoted to score customers (a refit is refused if it did not converge or validates worse).",
    keys=("model_version",),
    columns=(
        C("model_version", "string", False),
        C("as_of_date", "date", False),
        C("fitted_at", "timestamp", False),
        C("time_unit", "string", False),
        C("calibration_end", "date", False, "transactions up to this date fit the validation model"),
        C("holdout_end", "date", False),
        C("data_version", "long", False, "Delta version of silver.orders the fit read"),
        C("r", "double", False), C("alpha", "double", False), C("a", "double", False), C("b", "double", False),
        C("p", "double", False), C("q", "double", False), C("gamma", "double", False),
        C("bgnbd_log_likelihood", "double", False),
        C("gamma_gamma_log_likelihood", "double", False),
        C("customers", "long", False, "customers in the BG/NBD fit"),
        C("distinct_points", "long", False, "distinct (frequency, recency, T) the likelihood was evaluated on"),
        C("repeat_customers", "long", False, "customers in the Gamma-Gamma fit"),
        C("fit_seconds", "double", False),
        C("holdout_mae", "double", False, "mean absolute error of holdout purchases per customer"),
        C("holdout_correlation", "double", doc="Pearson correlation of predicted and actual holdout purchases"),
        C("churn_auc", "double", doc="AUC of the churn classifier, trained one window earlier, on the next window"),
        C("promoted", "boolean", False),
        C("decision", "string", False, "why it was or was not promoted"),
    ),
)

CLV_HOLDOUT = Table(
    name="ops.clv_holdout",
    doc="Holdout validation of each model: predicted vs actual repeat purchases after the calibration end, "
        "by calibration frequency (7 = 7 or more).",
    keys=("model_version", "frequency_bucket"),
    columns=(
        C("model_version", "string", False),
        C("frequency_bucket", "int", False),
        C("customers", "long", False),
        C("actual_purchases", "double", False, "mean per customer"),
        C("predicted_purchases", "double", False, "mean per customer"),
    ),
)

# rows_read = rows_loaded + rows_quarantined + rows_deduplicated
ROW_COUNTS = ("rows_read", "rows_loaded", "rows_quarantined", "rows_deduplicated")

TABLES = (INGEST_ACCOUNTING, QUARANTINE, DQ_RESULTS, RESOLUTION_CHECKS, RESOLUTION_RUNS, CLV_MODELS, CLV_HOLDOUT)
