"""The run report on hand-made gold and ops tables: every chart inlined, the figures right, a note where a
table has no rows, and the page as headless Chromium renders it from disk.

The tables are shared with the rest of the session (one metastore), so the rows here carry dates, run ids
and model versions of their own, and each write replaces only those.
"""

from __future__ import annotations

import base64
import html
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import date, timedelta
from functools import partial
from pathlib import Path

import pytest
from PIL import Image
from pyspark.sql import SparkSession

from jobs.delivery.report import build_report, report_path
from jobs.platform.config import Settings
from jobs.platform.tables import concurrently, replace_slice, sql_literal
from schemas import Table
from schemas.gold import (
    CUSTOMER_SEGMENTS,
    CUSTOMER_VALUE,
    IDENTITY_GRAPH,
    IDENTITY_LINKS,
    KPI,
    LIFECYCLE_HISTORY,
    SEGMENT_MEMBERSHIP,
    VALUE_MATRIX,
)
from schemas.ops import CLV_HOLDOUT, DQ_RESULTS, INGEST_ACCOUNTING, QUARANTINE
from tests.factories import frame

AS_OF, EARLIER = date(2031, 3, 14), date(2031, 3, 7)
QUIET_DAY, BEFORE_ANY_TABLE = date(2031, 3, 15), date(2031, 3, 16)     # reports of their own
RUN, OTHER_RUN = "report-test__2031-03-14", "report-test__2031-03-07"
MODEL, OLD_MODEL = "clv-report-test", "clv-report-old"
SECTIONS = ("segment-sizes", "lifecycle-funnel", "lifecycle-transitions", "value-matrix", "clv-distribution",
            "holdout-calibration", "kpi-trends", "dq-results", "quarantine")

STAGE_OF = {"C1": "prospect", "C2": "new", "C3": "new", "C4": "new", "C5": "growing", "C6": "growing",
            "C7": "at_risk"}
# (customer, previous stage, stage) of the lifecycle rows opened on AS_OF.
MOVES = [("C2", None, "new"), ("C3", None, "new"), ("C4", None, "new"), ("C5", "new", "growing"),
         ("C6", "new", "growing"), ("C7", "growing", "at_risk")]
MONDAYS = [AS_OF - timedelta(days=AS_OF.weekday() + 7 * w) for w in (3, 2, 1, 0)]
WEEKLY = {"revenue": [100.0, 120.0, 130.0, 90.0], "active_customers": [10.0, 12.0, 13.0, 9.0],
          "new_customers": [2.0, 3.0, 1.0, 1.0], "retention_rate": [0.5, 0.6, 0.55, 0.4]}


def _member(as_of: date, segment_type: str, segment: str, customer: str) -> dict:
    return {"as_of_date": as_of, "segment_type": segment_type, "segment": segment, "customer_id": customer,
            "entered_on": as_of}


def _history(customer: str, previous: str | None, stage: str, valid_from: date, model: str = "lifecycle") -> dict:
    reason = "initial" if previous is None else {"new": "first_purchase", "growing": "repeat_purchase",
                                                  "at_risk": "warning:inactivity"}.get(stage, "falling_trend")
    return {"model": model, "customer_id": customer, "previous_stage": previous, "stage": stage, "reason": reason,
            "valid_from": valid_from}


def _quadrant(name: str, customers: int, clv: float) -> dict:
    return {"as_of_date": AS_OF, "value_quadrant": name, "customers": customers, "customer_share": customers / 10,
            "clv": clv, "investment": "invest" if name in ("platinum", "iron") else "maintain", "strategy": "s"}


def _kpi(grain: str, period: date, kpi: str, value: float, segment_type: str = "all") -> dict:
    return {"as_of_date": AS_OF, "grain": grain, "period_start": period, "segment_type": segment_type,
            "segment": "all" if segment_type == "all" else "Champions", "kpi": kpi, "value": value}


def _dq(run: str, stage: str, expectation: str, success: bool, severity: str = "critical") -> dict:
    return {"run_id": run, "stage": stage, "table_name": f"{stage}.t", "expectation_id": expectation,
            "severity": severity, "success": success, "unexpected_count": 0 if success else 4}


def _quarantined(run: str, source: str, line: int, reason: str) -> dict:
    return {"run_id": run, "source": source, "source_file": f"{source}/{run}.csv", "line_number": line,
            "reason_code": reason, "batch_id": "2031-03-14"}


def _accounting(run: str, source: str, batch: str, counts: tuple[int, int, int, int]) -> dict:
    read, loaded, quarantined, deduplicated = counts
    return {"run_id": run, "source": source, "batch_id": batch, "source_file": f"{source}/{batch}/part-0",
            "rows_read": read, "rows_loaded": loaded, "rows_quarantined": quarantined,
            "rows_deduplicated": deduplicated}


TABLES: dict[Table, tuple[str, list[dict]]] = {
    CUSTOMER_SEGMENTS: (
        f"as_of_date = DATE '{AS_OF}'",
        [{"as_of_date": AS_OF, "customer_id": c, "lifecycle_stage": s} for c, s in STAGE_OF.items()]),
    SEGMENT_MEMBERSHIP: (
        f"as_of_date IN (DATE '{AS_OF}', DATE '{EARLIER}')",
        [*(_member(AS_OF, "lifecycle_stage", s, c) for c, s in STAGE_OF.items()),
         _member(AS_OF, "rfm_segment", "Champions", "C5"), _member(AS_OF, "rfm_segment", "Champions", "C6"),
         _member(AS_OF, "rfm_segment", "Lost", "C7"),
         _member(EARLIER, "rfm_segment", "Lost", "C1")]),        # another date: not counted
    LIFECYCLE_HISTORY: (
        f"valid_from IN (DATE '{AS_OF}', DATE '{EARLIER}')",
        [*(_history(c, p, s, AS_OF) for c, p, s in MOVES),
         {**_history("C5", None, "new", EARLIER), "valid_to": AS_OF},       # opened before: not a change today
         _history("C7", "formation", "decline", AS_OF, model="relationship")]),   # the other model
    VALUE_MATRIX: (
        f"as_of_date = DATE '{AS_OF}'",
        [_quadrant("platinum", 1, 900.0), _quadrant("gold", 2, 800.0), _quadrant("iron", 3, 300.0),
         _quadrant("lead", 4, 100.0)]),
    CUSTOMER_VALUE: (
        f"as_of_date IN (DATE '{AS_OF}', DATE '{EARLIER}')",
        [*({"as_of_date": AS_OF, "customer_id": f"V{i}", "clv": 10.0 * i, "model_version": MODEL}
           for i in range(1, 21)),
         {"as_of_date": EARLIER, "customer_id": "V1", "clv": 5.0, "model_version": OLD_MODEL}]),
    CLV_HOLDOUT: (
        f"model_version IN ({sql_literal(MODEL)}, {sql_literal(OLD_MODEL)})",
        [*({"model_version": MODEL, "frequency_bucket": b, "customers": n, "actual_purchases": a,
            "predicted_purchases": p}
           for b, n, a, p in ((0, 50, 0.2, 0.25), (1, 30, 0.8, 0.7), (2, 15, 1.5, 1.6), (3, 5, 2.9, 3.1))),
         {"model_version": OLD_MODEL, "frequency_bucket": 0, "customers": 1, "actual_purchases": 9.0,
          "predicted_purchases": 9.0}]),
    KPI: (
        f"as_of_date = DATE '{AS_OF}'",
        [*(_kpi("week", monday, kpi, v) for kpi, values in WEEKLY.items() for monday, v in zip(MONDAYS, values)),
         _kpi("week", MONDAYS[-1], "revenue", 55.0, segment_type="rfm_segment"),   # a segment: not charted
         _kpi("day", AS_OF, "revenue", 12.0)]),                                    # weeks are charted first
    DQ_RESULTS: (
        f"run_id IN ({sql_literal(RUN)}, {sql_literal(OTHER_RUN)})",
        [_dq(RUN, "ingest", "e1", True), _dq(RUN, "ingest", "e2", True), _dq(RUN, "ingest", "e3", False, "warning"),
         _dq(RUN, "cleanse", "e1", True), _dq(RUN, "cleanse", "e2", True), _dq(RUN, "refit", "e1", True),
         _dq(OTHER_RUN, "ingest", "e1", False)]),
    QUARANTINE: (
        f"run_id IN ({sql_literal(RUN)}, {sql_literal(OTHER_RUN)})",
        [_quarantined(RUN, "orders", 2, "MALFORMED_ROW"), _quarantined(RUN, "orders", 3, "MALFORMED_ROW"),
         _quarantined(RUN, "orders", 9, "TYPE_MISMATCH"), _quarantined(RUN, "crm", 4, "MISSING_REQUIRED"),
         *(_quarantined(OTHER_RUN, "orders", line, "EMPTY_LINE") for line in range(2, 7))]),
    IDENTITY_GRAPH: (
        "true",
        [*({"node": f"contact:C{i}", "node_type": "contact", "customer_id": f"CU-{i // 2}", "first_seen_date": AS_OF,
            "assigned_date": AS_OF, "run_id": RUN} for i in range(1, 6)),   # CU-0: 1 record, CU-1, CU-2: 2 each
         {"node": "email:x", "node_type": "email", "customer_id": "CU-0", "first_seen_date": AS_OF,
          "assigned_date": AS_OF, "run_id": RUN}]),
    IDENTITY_LINKS: (
        "true",
        [{"src": "contact:C2", "dst": "contact:C3", "customer_id": "CU-1", "match_probability": 0.999,
          "match_weight": 11.2, "weights": {"given_name": 8.0}, "run_id": RUN},
         {"src": "contact:C4", "dst": "contact:C5", "customer_id": "CU-2", "match_probability": 1.0,
          "match_weight": 27.5, "weights": {"given_name": 8.0}, "run_id": RUN}]),
    INGEST_ACCOUNTING: (
        f"run_id IN ({sql_literal(RUN)}, {sql_literal(OTHER_RUN)})",
        [_accounting(RUN, "orders", "2031-03-14", (100, 95, 3, 2)),
         _accounting(RUN, "crm", "2031-03-14", (50, 48, 1, 1)),
         _accounting(OTHER_RUN, "orders", "2031-03-07", (80, 75, 5, 0))]),
}


@pytest.fixture(scope="module")
def report(spark: SparkSession, settings: Settings) -> Path:
    _write_tables(spark)
    return build_report(spark, settings, AS_OF, RUN)


@pytest.fixture(scope="module")
def page(report: Path) -> str:
    return report.read_text(encoding="utf-8")


def _section(page: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
    assert match, f"no section {key}"
    return match.group(1)


def _tables(section: str) -> list[list[list[str]]]:
    """The cell texts of the body rows of each table in `section`."""
    return [[[html.unescape(cell.strip()) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
             for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]
            for body in re.findall(r"<tbody>(.*?)</tbody>", section, re.S)]


def _chart_png(section: str, key: str) -> bytes:
    match = re.search(rf'<figure id="chart-{key}"><img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', section)
    assert match, f"no inline chart in {key}"
    return base64.b64decode(match.group(1))


def test_report_is_written_per_date(report: Path, settings: Settings) -> None:
    assert report == settings.paths.warehouse.parent / "reports" / "run" / "2031-03-14" / "index.html"
    assert report == report_path(settings, AS_OF) and report.is_file()


def test_every_section_has_an_inline_chart_and_nothing_loads_from_elsewhere(page: str) -> None:
    for key in SECTIONS:
        section = _section(page, key)
        png = _chart_png(section, key)
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000, key
        assert "No data" not in section, key
    # Self-contained: every reference is inline data or an anchor of the page, and the policy says so.
    assert all(ref.startswith(("data:", "#")) for ref in re.findall(r'(?:src|href)="([^"]*)"', page))
    assert "default-src 'none'" in page and "<script" not in page


def test_identity_section_counts_customers_by_records_and_links_by_weight(page: str) -> None:
    tables = _tables(_section(page, "identity"))
    assert tables[0] == [["1", "1"], ["2", "2"]]               # one customer of 1 contact record, two of 2
    assert tables[1] == [["10", "1"], ["25", "1"]]             # links by match weight bins of 5
    assert [row[1:3] for row in tables[-1]] == [["contact:C2", "contact:C3"], ["contact:C4", "contact:C5"]]


def test_lifecycle_funnel_counts_every_stage_in_model_order(page: str) -> None:
    assert _tables(_section(page, "lifecycle-funnel")) == [[
        ["prospect", "1", "14.3%"], ["new", "3", "42.9%"], ["growing", "2", "28.6%"], ["mature", "0", "0.0%"],
        ["at_risk", "1", "14.3%"], ["churned", "0", "0.0%"]]]


def test_transitions_are_the_lifecycle_rows_opened_on_the_date(page: str) -> None:
    assert _tables(_section(page, "lifecycle-transitions")) == [[
        ["(first seen)", "new", "initial", "3"], ["new", "growing", "repeat_purchase", "2"],
        ["growing", "at_risk", "warning:inactivity", "1"]]]


def test_segment_sizes_per_type(page: str) -> None:
    rows = _tables(_section(page, "segment-sizes"))[0]
    assert rows == [
        ["lifecycle_stage", "new", "3", "42.9%"], ["lifecycle_stage", "growing", "2", "28.6%"],
        ["lifecycle_stage", "at_risk", "1", "14.3%"], ["lifecycle_stage", "prospect", "1", "14.3%"],
        ["rfm_segment", "Champions", "2", "66.7%"], ["rfm_segment", "Lost", "1", "33.3%"]]


def test_value_matrix_quadrants(page: str) -> None:
    rows = _tables(_section(page, "value-matrix"))[0]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("lead", "4", "40.0%"), ("iron", "3", "30.0%"), ("gold", "2", "20.0%"), ("platinum", "1", "10.0%")]


def test_clv_distribution_of_the_date(page: str) -> None:
    section = _section(page, "clv-distribution")
    stats = dict(_tables(section)[0])
    assert (stats["customers"], stats["min"], stats["max"], stats["mean"], stats["total"]) == \
        ("20", "10.00", "200.00", "105.00", "2,100.00")
    assert (stats["p10"], stats["p50"], stats["p90"]) == ("20.00", "100.00", "180.00")


def test_holdout_of_the_model_that_scored_the_date(page: str) -> None:
    section = _section(page, "holdout-calibration")
    assert MODEL in section and OLD_MODEL not in section
    assert _tables(section) == [[["0", "50", "0.20", "0.25"], ["1", "30", "0.80", "0.70"],
                                 ["2", "15", "1.50", "1.60"], ["3", "5", "2.90", "3.10"]]]


def test_kpi_trends_per_week_for_all_customers(page: str) -> None:
    rows = _tables(_section(page, "kpi-trends"))[0]
    assert rows == [[monday.isoformat(), *(f"{WEEKLY[k][i]:,.2f}" for k in WEEKLY)]
                    for i, monday in enumerate(MONDAYS)]


def test_dq_results_of_the_run_by_stage_and_outcome(page: str) -> None:
    by_stage, failed = _tables(_section(page, "dq-results"))
    assert by_stage == [["ingest", "2", "1", "0"], ["cleanse", "2", "0", "0"], ["refit", "1", "0", "0"]]
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in failed] == [("ingest", "warning", "ingest.t", "e3", "4")]


def test_quarantine_and_accounting_of_the_run(page: str) -> None:
    # "crm" is a source no other test lands: its previous batch (none) is this test's alone.
    quarantined, accounting = _tables(_section(page, "quarantine"))
    assert quarantined == [["crm", "MISSING_REQUIRED", "1"], ["orders", "MALFORMED_ROW", "2"],
                           ["orders", "TYPE_MISMATCH", "1"]]
    # source, files, read, loaded, quarantined, deduplicated, quarantine share, rows read vs the previous batch
    assert accounting == [["crm", "1", "50", "48", "1", "1", "2.0%", ""],
                          ["orders", "1", "100", "95", "3", "2", "3.0%", "1.25"],
                          ["all", "2", "150", "143", "4", "3", "2.7%", ""]]


def test_a_date_and_run_without_rows_give_notes(report: Path, spark: SparkSession, settings: Settings) -> None:
    page = build_report(spark, settings, QUIET_DAY, "report-test__no-such-run").read_text(encoding="utf-8")
    for key in SECTIONS:
        section = _section(page, key)
        assert 'class="note">No data: ' in section and "<figure" not in section, key
    assert "gold.lifecycle_history has no rows of the lifecycle model opened on 2031-03-15" in page


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no chromium or chromium-browser on PATH (make setup installs it "
                                                "as root; else apt-get install chromium)")
def test_chromium_renders_every_chart_from_disk(report: Path, tmp_path: Path) -> None:
    def chromium(*args: str) -> str:
        return subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}", *args, report.as_uri()],
            capture_output=True, text=True, timeout=180, check=True).stdout

    dom = chromium("--dump-dom")
    for key in SECTIONS:
        assert re.search(rf'<figure id="chart-{key}"><img [^>]*src="data:image/png;base64,', dom), key

    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,4000")
    with Image.open(shot) as image:
        assert image.size == (1280, 4000)
        pixels = list(image.convert("RGB").getdata())
    # The charts' bars are matplotlib's first colour (#1f77b4), which nothing else on the page uses:
    # they show only if the inline images were decoded and drawn.
    chart_blue = sum(1 for r, g, b in pixels if abs(r - 31) + abs(g - 119) + abs(b - 180) < 30)
    assert chart_blue > 5_000 and len(set(pixels)) > 200


def _write_tables(spark: SparkSession) -> None:
    concurrently(partial(replace_slice, frame(spark, table, rows), table, predicate)
                 for table, (predicate, rows) in TABLES.items())


@pytest.fixture
def without_tables(report: Path, empty_warehouse: SparkSession) -> Iterator[SparkSession]:
    """No table at all (the report of the module is written first), then the module's tables again."""
    yield empty_warehouse
    _write_tables(empty_warehouse)


def test_missing_tables_give_notes(without_tables: SparkSession, settings: Settings) -> None:
    page = build_report(without_tables, settings, BEFORE_ANY_TABLE, RUN).read_text(encoding="utf-8")
    for key in SECTIONS:
        assert 'class="note">No data: ' in _section(page, key), key
    assert "<figure" not in page
