"""The one quality gate: Great Expectations suites from `expectations/`, run on real batches.

A stage calls `gate` with the DataFrames it has staged and not yet published. Every evaluated
expectation is stored in `ops.dq_results`; a failed expectation of severity `critical`
stops the run with a readable summary, a failed `warning` is recorded and the run goes on.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2.bccache import Bucket, BytecodeCache
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.platform.tables import replace_slice, sql_literal
from schemas import is_personal
from schemas.ops import DQ_RESULTS

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


class QualityGateFailed(RuntimeError):
    """A critical expectation failed; the message is the gate's summary."""


@dataclass(frozen=True)
class Outcome:
    table_name: str
    suite: str
    expectation_type: str
    column_name: str | None
    severity: str
    success: bool
    observed_value: str | None
    unexpected_count: int | None
    unexpected_sample: str | None

    @property
    def expectation_id(self) -> str:
        return f"{self.expectation_type}({self.column_name or ''})"

    breached_sources: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.unexpected_count is not None:
            detail = f"{self.unexpected_count} rows"
        else:
            detail = f"observed {self.observed_value}"
        sources = f", sources {', '.join(self.breached_sources)}" if self.breached_sources else ""
        sample = f", e.g. {self.unexpected_sample}" if self.unexpected_sample else ""
        return f"{self.table_name}: {self.expectation_id} failed ({detail}{sources}{sample})"


def load_suite(suites_dir: Path, table_name: str) -> dict[str, Any]:
    path = suites_dir / f"{table_name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no expectation suite for {table_name}: expected {path}")
    return json.loads(path.read_text())


def _context(docs_dir: Path | None):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        _share_compiled_templates()
        context.add_data_docs_site(site_name="cdp", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    return context


class _CompiledTemplates(BytecodeCache):
    """jinja2's compiled templates kept in this process, checked against the template's source."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        if (code := self._code.get(bucket.key)) is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


_TEMPLATES = _CompiledTemplates()


def _share_compiled_templates() -> None:
    """GX's Data Docs make a jinja2 environment per page and view, so every page compiled the same
    templates again: about 2 s of CPU a gate, most of the rendering. One process-wide bytecode cache
    makes that a load (jinja2 recompiles when a template's source changes)."""
    from great_expectations.render.view.view import DefaultJinjaView

    if getattr(DefaultJinjaView, "_cdp_shared_templates", False):
        return
    build = DefaultJinjaView.__init__

    @functools.wraps(build)
    def build_with_shared_cache(self: Any, *args: Any, **kwargs: Any) -> None:
        build(self, *args, **kwargs)
        self.env.bytecode_cache = _TEMPLATES

    DefaultJinjaView.__init__ = build_with_shared_cache
    DefaultJinjaView._cdp_shared_templates = True


# Pass one counts: every expectation's metrics, which GX bundles into a few aggregate jobs per table.
# Fetching sample rows costs a job per expectation, so only pass two (failed ones only) does it.
COUNTS_ONLY = {"result_format": "BASIC", "partial_unexpected_count": 0}
WITH_SAMPLES = {"result_format": "BASIC", "partial_unexpected_count": 5}


def validate_frames(frames: dict[str, DataFrame], suites: dict[str, dict[str, Any]],
                    docs_dir: Path | None = None, run_name: str = "cdp") -> list[Outcome]:
    """Run each table's GX suite on its DataFrame; with `docs_dir`, also render GX Data Docs there."""
    context = _context(docs_dir)
    # GX would persist each frame and never release it: every later query of the session then pays for
    # matching its plan against all of them (the suite's one session slowed down several-fold). Each
    # frame is cached here for its own validation's jobs only.
    source = context.data_sources.add_spark(name="cdp", persist=False)
    outcomes, rendered = [], []
    for table_name, df in frames.items():
        df = suite_columns(df, suites[table_name])
        with _cached(df):
            table_outcomes, result_ids = _validate(context, source, run_name, table_name, df, suites[table_name])
        outcomes += table_outcomes
        rendered += result_ids
    if docs_dir is not None:
        # Once for the whole gate: a checkpoint action would rebuild the site and its index after every table.
        context.build_data_docs(site_names=["cdp"], resource_identifiers=rendered)
    return outcomes


COLUMN_ARGUMENTS = ("column", "column_A", "column_B")


def suite_columns(df: DataFrame, suite: dict[str, Any]) -> DataFrame:
    """The columns of `df` its suite checks (and `source`, which names a failure's sources): what is cached
    and scanned for the suite is no wider than that (`silver.events` has 11 columns, its suite checks 3)."""
    expectations = [e.get("kwargs", {}) for e in suite["expectations"]]
    if any("row_condition" in kwargs for kwargs in expectations):
        return df       # a condition may name any column
    checked = {kwargs[a] for kwargs in expectations for a in COLUMN_ARGUMENTS if a in kwargs}
    checked |= {c for kwargs in expectations for c in kwargs.get("column_list", [])}
    if not checked:
        return df       # a row count alone: any column will do
    return df.select(*[c for c in df.columns if c in checked or c == "source"])


def reads_materialised_rows(df: DataFrame) -> bool:
    """Whether `df` only filters or selects rows already materialised: a checkpoint (a staged frame is a
    local checkpoint) or a frame its caller cached (`suite_columns` makes a new frame of it, which
    the storage level of its own does not show)."""
    node = df._jdf.queryExecution().optimizedPlan()
    while node.nodeName() in ("Filter", "Project"):
        node = node.children().head()
    return node.nodeName() == "InMemoryRelation" or (
        node.nodeName() == "LogicalRDD" and node.rdd().isCheckpointed())


@contextmanager
def _cached(df: DataFrame) -> Iterator[None]:
    """`df` cached while the block runs, unless its caller cached it already (then the caller releases it) or
    it only reads a checkpoint or a cached frame: scanning a checkpoint's rows once per query of the suite
    costs a quarter of copying them into the cache first (at 1M customers, that copy of bronze.events was
    most of the ingest gate)."""
    mine = not df.storageLevel.useMemory and not df.storageLevel.useDisk and not reads_materialised_rows(df)
    if mine:
        df.persist()
    try:
        yield
    finally:
        if mine:
            df.unpersist()


def _validate(context: Any, source: Any, run_name: str, table_name: str, df: DataFrame,
              spec: dict[str, Any]) -> tuple[list[Outcome], list[Any]]:
    """The table's outcomes, and the ids of the checkpoint's stored validation results (for Data Docs)."""
    import great_expectations as gx
    from great_expectations.core import ExpectationSuite
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    batch_definition = source.add_dataframe_asset(name=table_name).add_batch_definition_whole_dataframe("run")
    suite = context.suites.add(ExpectationSuite(name=table_name, expectations=spec["expectations"]))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=table_name, data=batch_definition, suite=suite))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=f"{table_name}-gate", validation_definitions=[definition], result_format=COUNTS_ONLY))
    run = checkpoint.run(batch_parameters={"dataframe": df}, run_id=RunIdentifier(run_name=run_name))
    results = [r for result in run.run_results.values() for r in result.results]
    failed = [r.expectation_config for r in results if not r.success and (r.result or {}).get("unexpected_count")]
    samples = {}
    if failed:
        retry = context.suites.add(ExpectationSuite(name=f"{table_name}-failed", expectations=[
            c.to_json_dict() for c in failed]))
        rerun = gx.ValidationDefinition(name=f"{table_name}-failed", data=batch_definition, suite=retry)
        samples = {_key(r.expectation_config): r.result.get("partial_unexpected_list")
                   for r in rerun.run(batch_parameters={"dataframe": df}, result_format=WITH_SAMPLES).results}
    outcomes = [_outcome(table_name, spec["name"], r, samples.get(_key(r.expectation_config))) for r in results]
    return [_with_sources(df, o, samples.get(_key(r.expectation_config)))
            for o, r in zip(outcomes, results, strict=True)], [
        i for result_id, result in run.run_results.items()
        for i in (result_id, ExpectationSuiteIdentifier(name=result.suite_name))]


def _with_sources(df: DataFrame, outcome: Outcome, sample: list | None) -> Outcome:
    """Name the sources of the sampled bad values, in a frame with one row per source (the ingest gate's
    accounting): which source breached a share says more than the share does."""
    if not sample or "source" not in df.columns or not outcome.column_name or outcome.column_name == "source":
        return outcome
    values = [v for v in sample if v is not None]
    rows = df.where(F.col(outcome.column_name).isin(values)).select("source").distinct().limit(10).collect() \
        if values else []
    return dataclasses.replace(outcome, breached_sources=tuple(sorted(r.source for r in rows)))


def _key(config: Any) -> str:
    return json.dumps({"type": config.type, "kwargs": config.kwargs}, sort_keys=True, default=str)


def validate_frame(df: DataFrame, table_name: str, suite_spec: dict[str, Any]) -> list[Outcome]:
    """Run one GX suite on one DataFrame, without rendering docs."""
    return validate_frames({table_name: df}, {table_name: suite_spec})


def _outcome(table_name: str, suite_name: str, r: Any, sample: list | None) -> Outcome:
    config = r.expectation_config
    details = r.result or {}
    return Outcome(
        table_name=table_name,
        suite=suite_name,
        expectation_type=config.type,
        column_name=config.kwargs.get("column"),
        severity=str(getattr(config.severity, "value", config.severity)),
        success=bool(r.success),
        observed_value=None if details.get("observed_value") is None else str(details["observed_value"]),
        unexpected_count=details.get("unexpected_count"),
        unexpected_sample=json.dumps([_masked(config.kwargs.get("column"), v) for v in sample[:5]], default=str)
        if sample else None,
    )


def _masked(column: str | None, value: Any) -> Any:
    """A sampled value as a gate message and ops.dq_results show it: a personal one is masked."""
    if column is None or value is None or not is_personal(column):
        return value
    text = str(value)
    return text[:1] + "***" + f" ({len(text)} chars)"


def non_finite(value: Column) -> Column:
    """NaN or an infinity: numbers no published figure may hold (the ingest contracts and the gates ask it)."""
    return F.isnan(value) | value.isin(float("inf"), float("-inf"))


NON_FINITE_COLUMN = "non_finite_columns"
# Layers whose every floating-point value must be a number: what analysts, BI and exports read.
FINITE_LAYERS = ("silver.", "gold.")


def with_finite_check(df: DataFrame, suite: dict[str, Any]) -> tuple[DataFrame, dict[str, Any]]:
    """`df` with `non_finite_columns` (the names of its floating-point columns holding NaN or an infinity in
    the row, null when none) and `suite` with a critical expectation that it is null: a NaN passes
    a range check with a minimum only (Spark orders NaN above every number) and would hide a sum it enters."""
    floating = [f.name for f in df.schema.fields if isinstance(f.dataType, T.DoubleType | T.FloatType)]
    if not floating:
        return df, suite
    bad = [F.when(non_finite(F.col(c)), F.lit(c)) for c in floating]
    flagged = df.withColumn(NON_FINITE_COLUMN, F.nullif(F.concat_ws(",", *bad), F.lit("")))
    check = {"type": "expect_column_values_to_be_null", "kwargs": {"column": NON_FINITE_COLUMN}}
    return flagged, {**suite, "expectations": [*suite["expectations"], check]}


def gate(
    spark: SparkSession, stage: str, frames: dict[str, DataFrame], suites_dir: Path, run_id: str,
    validated_at: datetime, docs_dir: Path | None = None, enforce: bool = True,
) -> list[Outcome]:
    """Validate each table's DataFrame with its suite, record every result, stop on critical failures
    (unless `enforce` is off: for batches an operator released, failures are recorded only). Silver and
    gold tables are also checked for NaN and infinite values in every floating-point column.

    With `docs_dir`, the results are also rendered as GX Data Docs (open `index.html`).
    """
    frames = dict(frames)
    suites = {name: load_suite(suites_dir, name) for name in frames}
    for name in frames:
        if name.startswith(FINITE_LAYERS):
            frames[name], suites[name] = with_finite_check(frames[name], suites[name])
    outcomes = validate_frames(frames, suites, docs_dir, run_name=f"{run_id}-{stage}")
    rows = [
        (run_id, stage, o.table_name, o.suite, o.expectation_id, o.expectation_type, o.column_name, o.severity,
         o.success, o.observed_value, o.unexpected_count, o.unexpected_sample, validated_at)
        for o in outcomes
    ]
    results = spark.createDataFrame(rows, DQ_RESULTS.struct)
    replace_slice(results, DQ_RESULTS, f"run_id = {sql_literal(run_id)} AND stage = {sql_literal(stage)}")
    critical = [o for o in outcomes if not o.success and o.severity == "critical"]
    if critical and enforce:
        raise QualityGateFailed(
            f"quality gate '{stage}' failed: {len(critical)} critical expectation(s)\n"
            + "\n".join("  - " + o.describe() for o in critical)
        )
    return outcomes


def with_reference(df: DataFrame, key: str, parent: DataFrame, parent_key: str, flag: str) -> DataFrame:
    """Add `flag`: whether `key` exists in `parent` (null where `key` is null), for integrity checks."""
    known = parent.select(F.col(parent_key).alias("_ref")).where(F.col("_ref").isNotNull()).distinct() \
        .withColumn("_found", F.lit(True))
    joined = df.join(known, F.col(key) == F.col("_ref"), "left")
    return joined.withColumn(flag, F.when(F.col(key).isNotNull(), F.coalesce("_found", F.lit(False)))) \
        .drop("_ref", "_found")
