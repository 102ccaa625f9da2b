"""The run report: one static HTML page per as-of date with the charts of what a pipeline run published.

`build_report` reads the gold and ops tables of the date (and, for data quality and ingestion, the rows
of the run), reduces each to a few rows in Spark (counts per segment, stage, quadrant, bin or period:
never a customer-level table on the driver), draws each with matplotlib and writes
`<warehouse>/../reports/run/<as_of>/index.html`. The page is self-contained: charts are PNGs inlined as
base64 data URIs, the style sheet is inline, and a Content-Security-Policy forbids loading anything else,
so it opens from disk with no server and no network. A table that does not exist yet, or has no rows for
the date or run, gives its section a short "no data" note instead of a chart.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.delivery.report_charts import (
    DQ_OUTCOMES,
    FIRST_SEEN,
    TOP_SEGMENTS,
    clv_histogram_chart,
    dq_chart,
    funnel_chart,
    kpi_chart,
    quarantine_chart,
    segment_sizes_chart,
    transitions_chart,
    value_matrix_chart,
)
from jobs.delivery.report_html import Section, render
from jobs.ingest.accounting import accounting_frame
from jobs.platform.config import Settings
from jobs.platform.stages import DAILY
from jobs.platform.tables import table_exists
from jobs.segments.lifecycle import LIFECYCLE_STAGES
from jobs.value.clv import holdout_figure
from schemas import Table
from schemas.gold import (
    CUSTOMER_SEGMENTS,
    CUSTOMER_SENTIMENT,
    CUSTOMER_VALUE,
    IDENTITY_GRAPH,
    IDENTITY_LINKS,
    KPI,
    LIFECYCLE_HISTORY,
    SEGMENT_MEMBERSHIP,
    VALUE_MATRIX,
)
from schemas.ops import (
    CLV_HOLDOUT,
    DQ_RESULTS,
    INGEST_ACCOUNTING,
    INTENT_MODELS,
    QUARANTINE,
    RESOLUTION_RUNS,
    ROW_COUNTS,
)

KPI_TRENDS = ("revenue", "active_customers", "new_customers", "retention_rate")
KPI_GRAINS = ("week", "day")            # the first grain with rows is charted
CLV_BINS = 30
FAILED_EXPECTATIONS_SHOWN = 20


def build_report(spark: SparkSession, settings: Settings, as_of: date, run_id: str) -> Path:
    """Write the run report of `as_of` (data quality and ingestion of the run `run_id`); returns its path.

    Rewritten whole on every call, so a rerun of the date leaves the report of its latest run.
    """
    quantile_error = settings.segments.quantile_error
    sections = [
        segment_sizes_section(spark, as_of),
        lifecycle_funnel_section(spark, as_of),
        lifecycle_transitions_section(spark, as_of),
        value_matrix_section(spark, as_of),
        clv_distribution_section(spark, as_of, quantile_error),
        holdout_section(spark, as_of),
        intent_section(spark, as_of),
        feedback_section(spark, as_of),
        kpi_trends_section(spark, as_of),
        identity_section(spark, as_of),
        dq_section(spark, run_id),
        ingest_section(spark, run_id),
    ]
    path = report_path(settings, as_of)
    write_atomically(render(sections, as_of, run_id), path)
    return path


def report_path(settings: Settings, as_of: date) -> Path:
    return settings.paths.warehouse.parent / "reports" / "run" / as_of.isoformat() / "index.html"


def write_atomically(text: str, path: Path) -> None:
    """Write `text` to `path` through a temporary file and a rename, so a reader never sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


# -- reading: a few aggregated rows per section ----------------------------------------------------


def read_rows(spark: SparkSession, table: Table, where: Column) -> DataFrame | None:
    """`table`'s rows where `where` holds, or None when the table does not exist yet."""
    if not table_exists(spark, table.name):
        return None
    return spark.table(table.name).where(where)


def small(spark: SparkSession, table: Table, where: Column,
          aggregate: Callable[[DataFrame], DataFrame]) -> pd.DataFrame | None:
    """`aggregate` of `table`'s rows where `where` holds, on the driver; None when there are no rows.

    `aggregate` must reduce to a few rows: only its result leaves Spark.
    """
    rows = read_rows(spark, table, where)
    if rows is None:
        return None
    result = aggregate(rows).toPandas()
    return None if result.empty else result


def on_date(as_of: date) -> Column:
    return F.col("as_of_date") == F.lit(as_of)


def of_run(run_id: str) -> Column:
    return F.col("run_id") == F.lit(run_id)


def no_data(key: str, title: str, table: Table, what: str) -> Section:
    return Section(key, title, note=f"No data: {table.name} has no rows {what}.")


def counted(df: DataFrame, *columns: str) -> DataFrame:
    return df.groupBy(*columns).agg(F.count("*").alias("customers"))


# -- aggregates (pure: DataFrames in, a few rows out) ---------------------------------------------


def clv_statistics(values: DataFrame, quantile_error: float) -> dict[str, float]:
    """Count, sum, mean, min and max of `clv`, with its deciles (p10 … p90) and p99."""
    stats = values.agg(F.count("*").alias("customers"), F.sum("clv").alias("total"), F.avg("clv").alias("mean"),
                       F.min("clv").alias("min"), F.max("clv").alias("max")).first().asDict()
    probabilities = [d / 10 for d in range(1, 10)] + [0.99]
    quantiles = values.approxQuantile("clv", probabilities, quantile_error)
    return {**stats, **{f"p{round(p * 100)}": q for p, q in zip(probabilities, quantiles)}}


def clv_histogram(values: DataFrame, low: float, high: float, bins: int) -> DataFrame:
    """(bin, customers): `bins` equal bins of clv over [low, high]; values above `high` count in the last."""
    width = (high - low) / bins or 1.0
    bin_ = F.least(F.floor((F.col("clv") - F.lit(low)) / F.lit(width)), F.lit(bins - 1)).cast("int")
    return values.groupBy(bin_.alias("bin")).agg(F.count("*").alias("customers"))


def dq_counts(results: DataFrame) -> DataFrame:
    """(stage, outcome, expectations): passed, or failed by severity."""
    outcome = F.when(F.col("success"), "passed").otherwise(F.concat(F.lit("failed ("), F.col("severity"), F.lit(")")))
    return results.groupBy("stage", outcome.alias("outcome")).agg(F.count("*").alias("expectations"))


def failed_expectations(results: DataFrame, limit: int) -> DataFrame:
    return results.where(~F.col("success")).select(
        "stage", "severity", "table_name", "expectation_id", "unexpected_count", "observed_value") \
        .orderBy("severity", "stage", "table_name", "expectation_id").limit(limit)


# -- sections ---------------------------------------------------------------------------------------


def segment_sizes_section(spark: SparkSession, as_of: date) -> Section:
    key, title = "segment-sizes", "Segment sizes"
    sizes = small(spark, SEGMENT_MEMBERSHIP, on_date(as_of), lambda df: counted(df, "segment_type", "segment"))
    if sizes is None:
        return no_data(key, title, SEGMENT_MEMBERSHIP, f"for {as_of}")
    sizes = sizes.sort_values(["segment_type", "customers", "segment"], ascending=[True, False, True])
    sizes["share"] = sizes["customers"] / sizes.groupby("segment_type")["customers"].transform("sum")
    return Section(key, title, segment_sizes_chart(sizes),
                   f"Customers per segment of each segment type ({SEGMENT_MEMBERSHIP.name}); at most "
                   f"{TOP_SEGMENTS} bars per type, the smaller segments summed as 'other'.",
                   (("Members per segment", percent(sizes, "share")),))


def lifecycle_funnel_section(spark: SparkSession, as_of: date) -> Section:
    key, title = "lifecycle-funnel", "Lifecycle funnel"
    counts = small(spark, CUSTOMER_SEGMENTS, on_date(as_of), lambda df: counted(df, "lifecycle_stage"))
    if counts is None:
        return no_data(key, title, CUSTOMER_SEGMENTS, f"for {as_of}")
    # Every stage of the model, in its order, also those nobody is in.
    funnel = pd.DataFrame({"lifecycle_stage": LIFECYCLE_STAGES}).merge(counts, how="left").fillna({"customers": 0})
    funnel["customers"] = funnel["customers"].astype(int)
    funnel["share"] = funnel["customers"] / funnel["customers"].sum()
    return Section(key, title, funnel_chart(funnel),
                   f"Customers per lifecycle stage on {as_of} ({CUSTOMER_SEGMENTS.name}), in the model's order.",
                   (("Customers per stage", percent(funnel, "share")),))


def lifecycle_transitions_section(spark: SparkSession, as_of: date) -> Section:
    key, title = "lifecycle-transitions", "Lifecycle transitions"
    opened = (F.col("model") == "lifecycle") & (F.col("valid_from") == F.lit(as_of))
    moves = small(spark, LIFECYCLE_HISTORY, opened, lambda df: counted(df, "previous_stage", "stage", "reason"))
    if moves is None:
        return no_data(key, title, LIFECYCLE_HISTORY, f"of the lifecycle model opened on {as_of}")
    moves = moves.fillna({"previous_stage": FIRST_SEEN}).rename(columns={"previous_stage": "from", "stage": "to"})
    moves = moves.sort_values(["customers", "from", "to", "reason"], ascending=[False, True, True, True])
    return Section(key, title, transitions_chart(moves),
                   f"Customers whose lifecycle stage changed on {as_of} ({LIFECYCLE_HISTORY.name}), from the stage "
                   f"of their previous run, with the event that moved them (reason); '{FIRST_SEEN}' are customers "
                   "seen for the first time.",
                   (("Stage changes", moves),))


def value_matrix_section(spark: SparkSession, as_of: date) -> Section:
    key, title = "value-matrix", "Value matrix"
    matrix = small(spark, VALUE_MATRIX, on_date(as_of), lambda df: df.drop("as_of_date"))
    if matrix is None:
        return no_data(key, title, VALUE_MATRIX, f"for {as_of}")
    matrix = matrix.sort_values("customers", ascending=False)
    return Section(key, title, value_matrix_chart(matrix),
                   f"Customers by current and potential value on {as_of} ({VALUE_MATRIX.name}): size, share and "
                   "CLV of each quadrant.", (("Quadrants", percent(matrix, "customer_share")),))


def clv_distribution_section(spark: SparkSession, as_of: date, quantile_error: float) -> Section:
    key, title = "clv-distribution", "CLV distribution"
    values = read_rows(spark, CUSTOMER_VALUE, on_date(as_of))
    if values is None or values.isEmpty():
        return no_data(key, title, CUSTOMER_VALUE, f"for {as_of}")
    stats = clv_statistics(values, quantile_error)
    # Bins up to the 99th percentile: CLV has a long tail, which would squeeze everyone else into one bar.
    histogram = clv_histogram(values, stats["min"], stats["p99"], CLV_BINS).toPandas()
    width = (stats["p99"] - stats["min"]) / CLV_BINS or 1.0
    histogram["from"] = stats["min"] + histogram["bin"] * width
    deciles = pd.DataFrame({"statistic": list(stats), "value": [
        f"{v:,.0f}" if name == "customers" else f"{v:,.2f}" for name, v in stats.items()]})
    return Section(key, title, clv_histogram_chart(histogram.sort_values("bin"), width, stats),
                   f"CLV of the {stats['customers']:,} customers scored on {as_of} ({CUSTOMER_VALUE.name}), in "
                   f"{CLV_BINS} bins up to the 99th percentile; the last bar also counts the top 1 %.",
                   (("Summary and deciles (approximate)", deciles),))


def intent_section(spark: SparkSession, as_of: date) -> Section:
    key, title = "purchase-intent", "Purchase intent"
    model = small(spark, INTENT_MODELS, on_date(as_of), lambda df: df.select(
        "window_days", F.round("validation_auc", 3).alias("auc"), F.round("brier_score", 4).alias("brier_score"),
        "train_rows", "validation_rows", F.explode("calibration").alias("c")).select("*", "c.*").drop("c"))
    if model is None:
        return no_data(key, title, INTENT_MODELS, f"for {as_of}")
    head = model.iloc[0]
    calibration = model[["bin", "customers", "mean_predicted", "observed_rate"]].round(3)
    return Section(key, title, None,
                   f"P(a purchase in the next {head.window_days} days), logistic regression on the churn features, "
                   f"evaluated on the window before {as_of}: AUC {head.auc}, Brier score {head.brier_score} "
                   f"({head.validation_rows:,} customers). Calibration: per tenth of predicted probability, the "
                   f"mean prediction and the share that bought ({INTENT_MODELS.name}).",
                   (("Calibration on the evaluation window", calibration),))


def feedback_section(spark: SparkSession, as_of: date) -> Section:
    key, title = "feedback", "Feedback sentiment by language"
    by_language = small(spark, CUSTOMER_SENTIMENT, on_date(as_of), lambda df: df.groupBy("language").agg(
        F.count("*").alias("customers"), F.sum("texts").alias("texts"),
        F.round(F.sum(F.col("avg_sentiment") * F.col("texts")) / F.sum("texts"), 3).alias("mean_sentiment"),
        F.round(F.sum(F.col("negative_share") * F.col("texts")) / F.sum("texts"), 3).alias("negative_share"))
        .orderBy("language"))
    if by_language is None:
        return no_data(key, title, CUSTOMER_SENTIMENT, f"for {as_of}")
    return Section(key, title, None,
                   f"Customers by the language of most of their feedback (ticket text, survey comments) on {as_of}, "
                   f"their texts, mean sentiment (-1..1: VADER for English, SnowNLP for Chinese) and share of "
                   f"negative texts ({CUSTOMER_SENTIMENT.name}).",
                   (("Sentiment by language", by_language),))


def holdout_section(spark: SparkSession, as_of: date) -> Section:
    key, title = "holdout-calibration", "CLV holdout calibration"
    version = small(spark, CUSTOMER_VALUE, on_date(as_of),
                    lambda df: df.agg(F.max("model_version").alias("model_version")).dropna())
    if version is None:
        return no_data(key, title, CUSTOMER_VALUE, f"for {as_of}, so no model version to show")
    # The value stage stamps one model version on all of a date's scores.
    model_version = str(version["model_version"].iloc[0])
    holdout = small(spark, CLV_HOLDOUT, F.col("model_version") == F.lit(model_version),
                    lambda df: df.drop("model_version"))
    if holdout is None:
        return no_data(key, title, CLV_HOLDOUT, f"for model {model_version}")
    holdout = holdout.sort_values("frequency_bucket").reset_index(drop=True)
    return Section(key, title, holdout_figure(holdout, f"{model_version}: holdout validation"),
                   f"Mean predicted (BG/NBD) and actual purchases in the holdout period by calibration frequency, "
                   f"for {model_version}, the model that scored {as_of} ({CLV_HOLDOUT.name}).",
                   (("Per frequency bucket", holdout),))


def kpi_trends_section(spark: SparkSession, as_of: date) -> Section:
    key, title = "kpi-trends", "KPI trends"
    wanted = on_date(as_of) & (F.col("segment_type") == "all") & F.col("grain").isin(*KPI_GRAINS) \
        & F.col("kpi").isin(*KPI_TRENDS)
    rows = small(spark, KPI, wanted, lambda df: df.select("grain", "period_start", "kpi", "value"))
    if rows is None:
        return no_data(key, title, KPI, f"for {as_of} (segment 'all', grain {' or '.join(KPI_GRAINS)})")
    grain = next(g for g in KPI_GRAINS if (rows["grain"] == g).any())
    trends = rows[rows["grain"] == grain].pivot(index="period_start", columns="kpi", values="value") \
        .reindex(columns=[k for k in KPI_TRENDS if k in set(rows["kpi"])]).rename_axis(columns=None).sort_index()
    return Section(key, title, kpi_chart(trends),
                   f"KPIs of all customers per {grain} as of {as_of} ({KPI.name}); the last {grain} is partial, "
                   "up to the as-of date.", ((f"Per {grain}", trends.reset_index()),))


def identity_section(spark: SparkSession, as_of: date, borderline: int = 10) -> Section:
    """How the published resolution holds together: customers by contact records, links by match weight,
    what the guards and caps left out, and the weakest links (the first to check)."""
    key, title = "identity", "Identity resolution"
    sizes = small(spark, IDENTITY_GRAPH, F.col("node_type") == "contact", lambda df: df.groupBy("customer_id").agg(
        F.count("*").alias("contact_records")).groupBy("contact_records").agg(F.count("*").alias("customers"))
        .orderBy("contact_records"))
    if sizes is None:
        return no_data(key, title, IDENTITY_GRAPH, "of contact records")
    weights = small(spark, IDENTITY_LINKS, F.lit(True), lambda df: df.groupBy(
        (F.floor(F.col("match_weight") / 5) * 5).cast("int").alias("match_weight_from")).agg(
        F.count("*").alias("links")).orderBy("match_weight_from"))
    weakest = small(spark, IDENTITY_LINKS, F.lit(True), lambda df: df.orderBy("match_weight", "src").limit(
        borderline).select("customer_id", "src", "dst", F.round("match_weight", 2).alias("match_weight"),
                           F.round("match_probability", 4).alias("match_probability")))
    run = small(spark, RESOLUTION_RUNS, F.col("as_of_date") <= F.lit(as_of), lambda df: df.orderBy(
        F.col("resolved_at").desc()).limit(1).select(
        "run_id", "candidate_pairs", "probabilistic_links", "links_cut", "skipped_rules", "shared_contact_points",
        "shared_devices", "model_trained", "model_records"))
    tables = [("Customers by number of contact records", sizes)]
    tables += [("Probabilistic links by match weight (bins of 5)", weights)] if weights is not None else []
    tables += [("What the caps and guards left out, and the model", run)] if run is not None else []
    tables += [("Weakest links (borderline pairs): `cdp explain-customer` shows each", weakest)] \
        if weakest is not None else []
    return Section(key, title, None, f"The published identity graph ({IDENTITY_GRAPH.name}), its probabilistic links "
                   f"({IDENTITY_LINKS.name}) and the latest resolution run ({RESOLUTION_RUNS.name}).", tuple(tables))


def dq_section(spark: SparkSession, run_id: str) -> Section:
    key, title = "dq-results", "Data quality"
    counts = small(spark, DQ_RESULTS, of_run(run_id), dq_counts)
    if counts is None:
        return no_data(key, title, DQ_RESULTS, f"of run {run_id}")
    by_stage = counts.pivot(index="stage", columns="outcome", values="expectations") \
        .reindex(columns=list(DQ_OUTCOMES)).rename_axis(columns=None).fillna(0).astype(int)
    by_stage = by_stage.loc[sorted(by_stage.index, key=stage_order)]
    tables = [("Expectations per stage", by_stage.reset_index())]
    if by_stage[list(DQ_OUTCOMES[1:])].to_numpy().any():
        failed = small(spark, DQ_RESULTS, of_run(run_id),
                       lambda df: failed_expectations(df, FAILED_EXPECTATIONS_SHOWN))
        tables.append((f"Failed expectations (at most {FAILED_EXPECTATIONS_SHOWN})", failed))
    return Section(key, title, dq_chart(by_stage),
                   f"Expectations evaluated by the quality gates of run {run_id} ({DQ_RESULTS.name}), by stage and "
                   "outcome: a failed critical expectation stops the run, a failed warning is recorded.",
                   tuple(tables))


def ingest_section(spark: SparkSession, run_id: str) -> Section:
    """Rows quarantined by the run per source and reason, and the run's ingest accounting per source."""

    key, title = "quarantine", "Quarantine and ingest accounting"
    # The gate's own figures: the row ratio compares with each source's batch before the run's.
    history = read_rows(spark, INGEST_ACCOUNTING, F.lit(True))
    accounting = small(spark, INGEST_ACCOUNTING, of_run(run_id), lambda run: accounting_frame(run, history))
    if accounting is None:
        return no_data(key, title, INGEST_ACCOUNTING, f"of run {run_id} (it landed no new batch)")
    totals = accounting_totals(accounting)
    tables = [("Ingest accounting per source: rows read = loaded + quarantined + deduplicated", totals)]
    quarantined = small(spark, QUARANTINE, of_run(run_id),
                        lambda df: df.groupBy("source", "reason_code").agg(F.count("*").alias("rows")))
    if quarantined is None:
        return Section(key, title, tables=tuple(tables), note=f"No rows were quarantined by run {run_id}.")
    quarantined = quarantined.sort_values(["source", "rows", "reason_code"], ascending=[True, False, True])
    return Section(key, title, quarantine_chart(quarantined),
                   f"Input rows rejected by run {run_id} ({QUARANTINE.name}) per source and reason code, and "
                   f"every row it read ({INGEST_ACCOUNTING.name}).",
                   (("Quarantined rows per source and reason", quarantined), *tables))


def accounting_totals(accounting: pd.DataFrame) -> pd.DataFrame:
    """Per source and in all: files, the row counts, the quarantine share and the row ratio the gate bounds."""
    per_source = accounting[["source", "files", *ROW_COUNTS, "quarantine_share", "row_ratio"]] \
        .sort_values("source")
    total = per_source[["files", *ROW_COUNTS]].sum().to_frame().T.assign(source="all")
    total["quarantine_share"] = total["rows_quarantined"] / max(int(total["rows_read"].iloc[0]), 1)
    return percent(pd.concat([per_source, total], ignore_index=True), "quarantine_share")


def stage_order(stage: str) -> tuple[int, str]:
    """Daily stages in pipeline order, any other stage (refit) after them."""
    return (DAILY.index(stage) if stage in DAILY else len(DAILY), stage)


def percent(df: pd.DataFrame, column: str) -> pd.DataFrame:
    return df.assign(**{column: df[column].map(lambda v: f"{v:.1%}")})


