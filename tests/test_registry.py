"""The stage registry is the one declaration of every stage: what reads it derives, and how it is enforced."""

from __future__ import annotations

from datetime import date

import pytest
from pyspark.sql import SparkSession

from jobs.cli import build_parser
from jobs.platform.config import PROJECT_ROOT, Settings
from jobs.platform.context import RunContext, UndeclaredTable
from jobs.platform.orchestration import stage_assets
from jobs.platform.stages import DAILY, REGISTRY, STAGES, UnknownStage, stage
from schemas import gold, ops, silver
from schemas.bronze import TABLES as BRONZE

SUITES = {p.stem for p in (PROJECT_ROOT / "expectations").glob("*.json")}


def test_every_stage_declares_tables_suites_and_a_function_that_exists() -> None:
    assert DAILY == ("ingest", "cleanse", "resolve", "profile", "value", "segments", "insights", "export", "report")
    for step in REGISTRY:
        assert callable(step.function()), step.name
        assert set(step.suites) <= set(step.writes), step.name          # a gate validates what the stage writes
        assert {t.name for t in step.suites} <= SUITES, step.name        # and every suite it names exists
    # Every table of bronze, silver and gold is written by exactly one stage and gated by it.
    writers = {t.name: [s.name for s in REGISTRY if t in s.writes] for t in (*BRONZE.values(), *silver.TABLES,
                                                                            *gold.TABLES)}
    assert {name: len(w) for name, w in writers.items() if len(w) != 1} == {}
    gated = {t.name for s in REGISTRY for t in s.suites}
    assert {t.name for t in (*BRONZE.values(), *silver.TABLES, *gold.TABLES)} <= gated


def test_the_cli_the_assets_and_the_run_log_derive_from_the_registry() -> None:
    parser = build_parser()
    run = parser.parse_args(["run", "--stage", "refit", "--date", "2026-11-20"])
    assert run.stage == "refit"
    for name in STAGES:    # `cdp rebuild` takes every stage
        assert parser.parse_args(["rebuild", "--stage", name, "--date", "2026-11-20", "--out", "x"]).stage == name
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--stage", "nonsense", "--date", "2026-11-20"])
    assert sorted(a.name for a in stage_assets("value")) == sorted(t.name for t in STAGES["value"].writes)
    assert stage_assets("erase") == []
    with pytest.raises(UnknownStage, match="stages are ingest, cleanse"):
        stage("nonsense")


def test_a_stage_can_read_and_stage_only_what_it_declares(spark: SparkSession, settings: Settings) -> None:
    ctx = RunContext.create(settings, date(2026, 11, 20), "run-registry").for_stage(STAGES["profile"])
    assert ctx.read(gold.IDENTITY_GRAPH).columns == gold.IDENTITY_GRAPH.column_names   # empty before a publish
    with pytest.raises(UndeclaredTable, match=r"stage profile reads gold\.customer_value, which its entry"):
        ctx.read(gold.CUSTOMER_VALUE)
    with pytest.raises(UndeclaredTable, match=r"stage profile writes gold\.kpi"):
        ctx.stage_overwrite(spark.createDataFrame([], gold.KPI.struct), gold.KPI)
    with pytest.raises(UndeclaredTable, match=r"gates \[.ops\.clv_models.\]"):
        ctx.gate({ops.CLV_MODELS: spark.createDataFrame([], ops.CLV_MODELS.struct)})
    with pytest.raises(UndeclaredTable, match=r"stage \? reads"):
        RunContext.create(settings, date(2026, 11, 20)).read(gold.IDENTITY_GRAPH)


def test_releasing_a_batch_of_an_unknown_source_is_a_clear_error(settings: Settings) -> None:
    import argparse

    from jobs.cli import cmd_release

    with pytest.raises(SystemExit, match="cdp release: unknown source 'nope'; sources are contacts"):
        cmd_release(settings, argparse.Namespace(source="nope", batch="2026-11-21", reason="r", released_by="t"))
