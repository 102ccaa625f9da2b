"""Operational tables: ingestion accounting, quarantine, data-quality results."""

from __future__ import annotations

from schemas import C, Table

INGEST_ACCOUNTING = Table(
    name="ops.ingest_accounting",
    doc="Rows of every landed file: rows_read = rows_loaded + rows_quarantined + rows_deduplicated. "
        "Written with the bronze rows once the batch's gate passes, so it marks the batch as done.",
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
        C("status", "string", False, "read, or empty: no data lines (an empty file, a header alone); either completes "
                                     "its batch"),
        C("run_id", "string", False),
        C("ingested_at", "timestamp", False),
    ),
)

SILVER_ACCOUNTING = Table(
    name="ops.silver_accounting",
    doc="Bronze to silver, per source and date: bronze_rows = kept_rows + merged_rows + rejected_rows. Written with "
        "silver, once its gate (which checks the identity) passed.",
    keys=("as_of_date", "source"),
    columns=(
        C("as_of_date", "date", False),
        C("source", "string", False),
        C("silver_table", "string", False),
        C("bronze_rows", "long", False, "rows of the source's bronze table up to the date"),
        C("kept_rows", "long", False, "rows of the silver table"),
        C("merged_rows", "long", False, "earlier versions and copies of a record, merged into its latest"),
        C("rejected_rows", "long", False, "records a silver rule rejected"),
        C("rejected_reasons", "map<string,bigint>", False,
          "rejected records by reason: TEST_ACCOUNT (cleanse.test_account_email_patterns), UNKNOWN_SURVEY_TYPE, "
          "INVALID_ITEMS (a store purchase's item with a quantity below 1 or a bad price), OUT_OF_RANGE (in bronze "
          "landed before the contract had the range)"),
        C("rows_add_up", "boolean", False),
        C("run_id", "string", False),
        C("loaded_through", "timestamp", True, "the latest _ingested_at of the bronze rows counted: a later row is "
                                               "new to the next day's cleanse (null on a table written before)"),
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
        C("raw_payload", "binary", False, "the line as read, ENCRYPTED (AES-256-GCM, associated data "
          "'quarantine|<source>|<source_file>|<line_number>'): jobs.platform.pii.decrypt"),
        C("reason_code", "string", False,
          "EMPTY_LINE, BAD_ENCODING (not UTF-8), MALFORMED_ROW (unparsable, unbalanced quotes, surplus fields, a "
          "JSON key given twice), MISSING_REQUIRED, TYPE_MISMATCH, IMPOSSIBLE_DATE, NON_FINITE (NaN, infinity) or "
          "OUT_OF_RANGE (outside the contract's range: schemas/raw.py)"),
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
        C("candidate_pairs", "long", False, "pairs compared by the probabilistic matcher (sum over its blocking "
                                            "rules)"),
        C("probabilistic_links", "long", False, "pairs at or above the match threshold"),
        C("links_cut", "long", False, "probabilistic links dropped inside oversized clusters"),
        C("skipped_rules", "long", False, "blocking rules over the pair cap, not compared"),
        C("oversized_blocks", "long", False, "blocks over identity.max_block_records, left out of their rule"),
        C("records_scored", "long", False, "contact records scored against the rest: all of them, or in an "
                                           "incremental run the new and changed ones"),
        C("shared_devices", "long", False, "devices linked to too many accounts, not used as links"),
        C("shared_contact_points", "long", False, "e-mails, phones and loyalty numbers on the contact records of "
                                                  "several persons, not used as links"),
        C("ids_merged", "long", False),
        C("ids_split", "long", False),
        C("match_share", "double", False, "the model's probability that two random records match"),
        C("model_trained", "boolean", False, "the model was trained in this run (else the one in force was "
                                             "reused, or the shipped default for a small list)"),
        C("model_records", "long", False, "contact records when the model in force was trained (its "
                                             "training sample, identity.training_sample_records, drawn from them)"),
        C("model", "string", False, "the Splink model (m and u per comparison level), JSON"),
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

CHURN_MODELS = Table(
    name="ops.churn_models",
    doc="The churn classifier of each value run: trained one window before the as-of date, evaluated on the "
        "window that follows (AUC), then refitted on that window to score the date.",
    keys=("as_of_date",),
    partition_by=(),
    columns=(
        C("as_of_date", "date", False),
        C("run_id", "string", False),
        C("validation_auc", "double", False),
        C("train_rows", "long", False),
        C("validation_rows", "long", False),
        C("trained_at", "timestamp", False),
    ),
)

INTENT_MODELS = Table(
    name="ops.intent_models",
    doc="The purchase-intent classifier of each value run (logistic regression on the churn features): trained "
        "two windows before the as-of date, evaluated on the window that follows (AUC, Brier score, calibration "
        "by tenths of predicted probability), then refitted on that window to score the date.",
    keys=("as_of_date",),
    partition_by=(),
    columns=(
        C("as_of_date", "date", False),
        C("run_id", "string", False),
        C("window_days", "int", False, "the question: a purchase within this many days"),
        C("validation_auc", "double", False),
        C("brier_score", "double", False, "mean squared error of the predicted probabilities on the next window"),
        C("calibration", "array<struct<bin:int,customers:long,mean_predicted:double,observed_rate:double>>", False,
          "per tenth of predicted probability: customers, mean predicted and observed purchase rate"),
        C("train_rows", "long", False),
        C("validation_rows", "long", False),
        C("trained_at", "timestamp", False),
    ),
)

PIPELINE_RUNS = Table(
    name="ops.pipeline_runs",
    doc="The run log: one row per stage run (a retry replaces its attempt's row), whatever its outcome. "
        "rows_in counts the rows of the stage's input tables when it started (for ingest, the raw lines read); "
        "rows_out the rows its Delta commits wrote (operationMetrics.numOutputRows).",
    keys=("run_id", "stage"),
    partition_by=(),
    columns=(
        C("run_id", "string", False, "Airflow run id, or manual__<date>__<time> for `cdp run`"),
        C("logical_date", "date", False, "the as-of date"),
        C("stage", "string", False),
        C("status", "string", False, "running (from its start), then success or failed (with message); abandoned: "
                                     "the process died while running, as the stage's next run found it"),
        C("rows_in", "long"),
        C("rows_out", "long"),
        C("seconds", "double", False, "0 while running"),
        C("gate_seconds", "double", False, "of `seconds`, the time the stage's quality gates took"),
        C("started_at", "timestamp", False),
        C("finished_at", "timestamp", False, "while running, its start; when abandoned, when a later run found it"),
        C("input_versions", "map<string,bigint>", False,
          "Delta version of every table the stage reads or writes, when it started (what `cdp rebuild` clones)"),
        C("output_versions", "map<string,bigint>", False,
          "Delta version of every table it writes, when it ended (empty while running)"),
        C("summary", "string", doc="the stage's summary (JSON) on success"),
        C("message", "string", doc="why it failed: the gate's summary or the error"),
    ),
)

ERASURES = Table(
    name="ops.erasures",
    doc="Every erasure request (right to be forgotten) and its progress: who asked, how the person was named (a "
        "suppression key, never the value nor the keyed hash silver uses), the steps done (a retry resumes after "
        "the last), what was deleted or rewritten where, and when the vacuum removed the old files. Exports leave "
        "out the customer ids listed here from the moment the person is identified.",
    keys=("erasure_id",),
    partition_by=(),
    columns=(
        C("erasure_id", "string", False, "the request id (`cdp erase-request` prints it; `cdp erase` takes it)"),
        C("requested_at", "timestamp", False),
        C("requested_by", "string", False),
        C("request_kind", "string", False, "customer_id, email or phone"),
        C("subject_key", "string", False,
          "suppression key (jobs.platform.pii.suppression_key) of the identity-graph node the request names"),
        C("status", "string", False, "requested, in_progress, done, or nobody (the request matched no one)"),
        C("steps_done", "array<string>", False, "the steps completed, in order (jobs.delivery.erasure.STEPS)"),
        C("customer_id", "string", True, "the person's customer id, once identified"),
        C("rows_deleted", "map<string,bigint>", False, "table -> rows deleted (or samples cleared), over all attempts"),
        C("files_rewritten", "array<string>", False,
          "landing and export files rewritten without the person's lines or rows"),
        C("exports_to_recall", "array<string>", False,
          "exports that held the person's rows: copies already delivered to their destination are the operator's "
          "to have deleted there"),
        C("tables_vacuumed", "array<string>", False),
        C("vacuumed_at", "timestamp", True, "when the vacuum finished (null until then)"),
        C("updated_at", "timestamp", False, "when the last step was recorded"),
    ),
)

ERASED_SUBJECTS = Table(
    name="ops.erased_subjects",
    doc="The suppression list: every identifier of an erased person (identity-graph nodes: contact, e-mail, phone, "
        "loyalty number, account, device) as a suppression key, so cleanse rejects any record carrying one "
        "(ERASED_PERSON in ops.silver_accounting) and a re-landed file does not bring the person back.",
    keys=("subject_key",),
    partition_by=(),
    columns=(
        C("subject_key", "string", False, "jobs.platform.pii.suppression_key of the node: not the keyed hash silver "
                                          "uses, and not reversible"),
        C("node_type", "string", False, "contact, email, phone, loyalty, account or device"),
        C("erasure_id", "string", False),
        C("added_at", "timestamp", False),
    ),
)

BATCH_RELEASES = Table(
    name="ops.batch_releases",
    doc="Landing batches an operator released (`cdp release`): their ingest gate is still run and recorded, "
        "but its failures no longer stop the batch from loading.",
    keys=("source", "batch_id"),
    partition_by=(),
    columns=(
        C("source", "string", False),
        C("batch_id", "string", False),
        C("released_by", "string", False),
        C("reason", "string", False),
        C("released_at", "timestamp", False),
    ),
)

AUDIENCE_SYNCS = Table(
    name="ops.audience_syncs",
    doc="How far each destination has acknowledged each audience: the gold.audience_membership version its "
        "last sync published (the next sync sends the changes after it) and that sync's export. Written only "
        "after the export's files are in place, so a failed sync is sent again.",
    keys=("audience", "destination"),
    columns=(
        C("audience", "string", False),
        C("destination", "string", False),
        C("acknowledged_version", "long", False, "gold.audience_membership version the destination is up to date "
                                                 "with"),
        C("as_of_date", "date", False, "the date of the last sync"),
        C("synced_at", "timestamp", False),
        C("export_id", "string", doc="the last export published (a sync with nothing to send publishes none)"),
        C("members_path", "string", doc="its members/ folder: what the destination holds, contact points of "
                                        "exiting members included"),
        C("format", "string", doc="csv or parquet, of that export"),
        C("columns", "array<string>", doc="its members' columns"),
        C("entered_rows", "long", False, "of the last sync"),
        C("exited_rows", "long", False),
        C("members_rows", "long", False),
    ),
)

AUDIENCE_EXPORTS = Table(
    name="ops.audience_exports",
    doc="The audit of every audience export published: who, when, what (audience, condition, destination, the "
        "membership versions sent), how many rows and the SHA-256 of every file.",
    keys=("export_id",),
    columns=(
        C("export_id", "string", False, "the export's folder under paths.exports"),
        C("audience", "string", False),
        C("destination", "string", False),
        C("condition", "string", False, "the audience's condition as it was"),
        C("as_of_date", "date", False),
        C("exported_by", "string", False, "airflow:<dag>/<run id>, or user:<OS user> for `cdp run`"),
        C("run_id", "string", False),
        C("exported_at", "timestamp", False),
        C("from_version", "long", doc="changes after this gold.audience_membership version were sent; null for a "
                                      "first sync (every member entered)"),
        C("to_version", "long", False, "...up to this one"),
        C("entered_rows", "long", False),
        C("exited_rows", "long", False),
        C("members_rows", "long", False, "the full list of members/"),
        C("format", "string", False),
        C("files", "array<struct<path:string,sha256:string>>", False, "every data file and manifest.json, with "
                                                                       "its SHA-256"),
    ),
)

TABLES = (INGEST_ACCOUNTING, SILVER_ACCOUNTING, QUARANTINE, DQ_RESULTS, RESOLUTION_CHECKS, RESOLUTION_RUNS,
          CLV_MODELS, CLV_HOLDOUT, CHURN_MODELS, INTENT_MODELS, PIPELINE_RUNS, ERASURES, ERASED_SUBJECTS,
          BATCH_RELEASES, AUDIENCE_SYNCS, AUDIENCE_EXPORTS)
