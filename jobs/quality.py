"""The one quality gate: Great Expectations suites from `expectations/`, run on real batches.

A stage calls `gate` after writing, with the DataFrames it wants checked. Every evaluated
expectation is stored in `ops.dq_results`; a failed expectation of severity `critical`
stops the run with a readable summary, a failed `warning` is recorded and the run goes on.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from jobs.tables import replace_slice, sql_literal
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

    def describe(self) -> str:
        if self.unexpected_count is not None:
            detail = f"{self.unexpected_count} rows"
        else:
            detail = f"observed {self.observed_value}"
        sample = f", e.g. {self.unexpected_sample}" if self.unexpected_sample else ""
        return f"{self.table_name}: {self.expectation_id} failed ({detail}{sample})"


def load_suite(suites_dir: Path, table_name: str) -> dict[str, Any]:
    path = suites_dir / f"{table_name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no expectation suite for {table_name}: expected {path}")
    return json.loads(path.read_text())


def validate_frame(df: DataFrame, table_name: str, suite_spec: dict[str, Any]) -> list[Outcome]:
    """Run one GX suite on one DataFrame (an ephemeral context: nothing is read from disk)."""
    import great_expectations as gx
    from great_expectations.core import ExpectationSuite

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    source = context.data_sources.add_spark(name="cdp")
    batch = (
        source.add_dataframe_asset(name=table_name)
        .add_batch_definition_whole_dataframe("run")
        .get_batch(batch_parameters={"dataframe": df})
    )
    suite = ExpectationSuite(name=suite_spec["name"], expectations=suite_spec["expectations"])
    result = batch.validate(suite, result_format="SUMMARY")
    outcomes = []
    for r in result.results:
        config = r.expectation_config
        details = r.result or {}
        sample = details.get("partial_unexpected_list")
        outcomes.append(Outcome(
            table_name=table_name,
            suite=suite_spec["name"],
            expectation_type=config.type,
            column_name=config.kwargs.get("column"),
            severity=str(getattr(config.severity, "value", config.severity)),
            success=bool(r.success),
            observed_value=None if details.get("observed_value") is None else str(details["observed_value"]),
            unexpected_count=details.get("unexpected_count"),
            unexpected_sample=json.dumps(sample[:5], default=str) if sample else None,
        ))
    return outcomes


def gate(
    spark: SparkSession, stage: str, frames: dict[str, DataFrame], suites_dir: Path, run_id: str,
    validated_at: datetime,
) -> list[Outcome]:
    """Validate each table's DataFrame with its suite, record every result, stop on critical failures."""
    outcomes = [o for name, df in frames.items() for o in validate_frame(df, name, load_suite(suites_dir, name))]
    rows = [
        (run_id, stage, o.table_name, o.suite, o.expectation_id, o.expectation_type, o.column_name, o.severity,
         o.success, o.observed_value, o.unexpected_count, o.unexpected_sample, validated_at)
        for o in outcomes
    ]
    results = spark.createDataFrame(rows, DQ_RESULTS.struct)
    replace_slice(results, DQ_RESULTS, f"run_id = {sql_literal(run_id)} AND stage = {sql_literal(stage)}")
    critical = [o for o in outcomes if not o.success and o.severity == "critical"]
    if critical:
        raise QualityGateFailed(
            f"quality gate '{stage}' failed: {len(critical)} critical expectation(s)\n"
            + "\n".join("  - " + o.describe() for o in critical)
        )
    return outcomes
