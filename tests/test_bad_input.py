"""A corpus of bad input, source by source: every value is caught with its reason and column, or
accounted; nothing changes silently (the reader's paths: CSV dialect, JSON types and keys, encoding,
numbers against the contracts' ranges, empty files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.ingest.accounting import accounting_frame
from jobs.ingest.batches import ContractViolation
from jobs.platform.settings import IngestConfig
from schemas.raw import CONTACTS, ORDERS, POS, SURVEYS, TICKETS
from tests.test_ingest import (
    HEADER,
    NOW,
    accounting,
    bronze,
    contact,
    ingest_source,
    land,
    quarantine_reasons,
    quarantined,
)

POS_HEADER = ",".join(POS.column_names)


def pos(tid: str, amount: str) -> str:
    return f"{tid},S1,L1,2026-11-19 10:00:00,EUR,{amount},SKU-1:books:1:12.00"


def test_non_finite_and_implausible_amounts_are_quarantined_and_the_maximum_is_configurable(
    empty_warehouse: SparkSession, tmp_path: Path
) -> None:
    spark = empty_warehouse
    amounts = ["12.00", "NaN", "Infinity", "-Infinity", "1e400", "1e12", "-5", "0"]
    land(tmp_path, "pos", "2026-11-19", "pos.csv", [POS_HEADER, *[pos(f"T{i}", a) for i, a in enumerate(amounts)]])

    ingest_source(spark, str(tmp_path), POS, "2026-11-20", "run-1", NOW)

    assert quarantine_reasons(spark, "pos") == {
        3: ("NON_FINITE", "amount"), 4: ("NON_FINITE", "amount"), 5: ("NON_FINITE", "amount"),
        6: ("NON_FINITE", "amount"), 7: ("OUT_OF_RANGE", "amount"), 8: ("OUT_OF_RANGE", "amount")}
    assert sorted(r.amount for r in spark.table("bronze.pos").collect()) == [0.0, 12.0]
    assert accounting(spark, "pos") == {"rows_read": 8, "rows_loaded": 2, "rows_quarantined": 6,
                                        "rows_deduplicated": 0}

    # A plausible maximum is configurable: raised for this source, 1e12 loads and 2e13 still does not.
    maximums = IngestConfig(replay_window_days=30, plausible_maximum={"pos.amount": 1e13}).maximums()
    assert maximums["orders.lines.unit_price"] == 100_000 and maximums["pos.amount"] == 1e13
    land(tmp_path, "pos", "2026-11-20", "pos.csv", [POS_HEADER, pos("T9", "1e12"), pos("T10", "2e13")])
    ingest_source(spark, str(tmp_path), POS, "2026-11-20", "run-2", NOW, maximums=maximums)
    assert spark.table("bronze.pos").where("_batch_id = '2026-11-20'").collect()[0].transaction_id == "T9"
    assert spark.table("ops.quarantine").where("batch_id = '2026-11-20'").collect()[0].reason_code == "OUT_OF_RANGE"


def test_json_values_of_the_wrong_type_or_range_and_repeated_keys(empty_warehouse: SparkSession,
                                                                   tmp_path: Path) -> None:
    spark = empty_warehouse
    order = {"order_id": "o1", "account_id": "a1", "email": "x@example.com", "order_ts": "2026-11-18T10:00:00Z",
             "channel": "web", "currency": "USD", "status": "completed", "shipping_postcode": "10001",
             "lines": [{"sku": "S1", "category": "books", "quantity": 2, "unit_price": 9.5}]}

    def with_line(oid: str, **line: object) -> str:
        return json.dumps({**order, "order_id": oid, "lines": [{**order["lines"][0], **line}]})

    good = json.dumps(order)
    lines = [
        good,                                                          # 1: loads
        with_line("o2", quantity="two"),                               # 2: a word for a number
        with_line("o3", quantity=2.5),                                 # 3: not an integer
        with_line("o4", quantity=0),                                   # 4: not a positive quantity
        with_line("o5", unit_price=1e9),                               # 5: implausible price
        with_line("o6", unit_price="NaN"),                             # 6: NaN, as JSON parsers allow it
        with_line("o7").replace('"unit_price": 9.5', '"unit_price": 1e400'),   # 7: overflows to infinity
        good.replace('"order_id": "o1"', '"order_id": "o8", "order_id": "o9"'),   # 8: a key twice
        with_line("o10").replace('"quantity": 2', '"quantity": 2, "quantity": 3'),  # 9: a nested key twice
        with_line("o11", unit_price="9.5"),                            # 10: a number as text
    ]
    land(tmp_path, "orders", "2026-11-19", "a.jsonl", lines)

    ingest_source(spark, str(tmp_path), ORDERS, "2026-11-20", "run-1", NOW)

    assert quarantine_reasons(spark, "orders") == {
        2: ("TYPE_MISMATCH", "lines.quantity"), 3: ("TYPE_MISMATCH", "lines.quantity"),
        4: ("OUT_OF_RANGE", "lines.quantity"), 5: ("OUT_OF_RANGE", "lines.unit_price"),
        6: ("NON_FINITE", "lines.unit_price"), 7: ("NON_FINITE", "lines.unit_price"),
        8: ("MALFORMED_ROW", None), 9: ("MALFORMED_ROW", None), 10: ("TYPE_MISMATCH", "lines.unit_price")}
    assert [r.order_id for r in spark.table("bronze.orders").collect()] == ["o1"]


def test_scores_outside_their_survey_types_scale(empty_warehouse: SparkSession, tmp_path: Path) -> None:
    spark = empty_warehouse
    header = ",".join(SURVEYS.column_names)
    rows = [("nps", 0), ("NPS", 10), ("csat", 1), ("CSAT", 5), ("csat", 8), ("nps", 11), ("CSAT", 0), ("nps", -1)]
    responses = [f"R{i},a@example.com,{kind},{score},,2026-11-19T10:00:00Z" for i, (kind, score) in enumerate(rows)]
    land(tmp_path, "surveys", "2026-11-19", "s.csv", [header, *responses])

    ingest_source(spark, str(tmp_path), SURVEYS, "2026-11-20", "run-1", NOW)

    assert quarantine_reasons(spark, "surveys") == {n: ("OUT_OF_RANGE", "score") for n in (6, 7, 8, 9)}
    assert spark.table("bronze.surveys").count() == 4


def test_bytes_that_are_not_utf8_are_quarantined_not_replaced(empty_warehouse: SparkSession, tmp_path: Path) -> None:
    spark = empty_warehouse
    folder = tmp_path / "contacts" / "2026-11-19"
    folder.mkdir(parents=True)
    latin1 = contact("c2", first_name="José").encode("latin-1")
    (folder / "a.csv").write_bytes(b"\n".join([HEADER.encode(), contact("c1", first_name="José").encode(), latin1])
                                   + b"\n")

    ingest_source(spark, str(tmp_path), CONTACTS, "2026-11-20", "run-1", NOW)

    assert quarantine_reasons(spark, "contacts") == {3: ("BAD_ENCODING", None)}
    assert [r.first_name for r in bronze(spark, CONTACTS).collect()] == ["José"]


def test_empty_and_header_only_files_are_accounted_and_complete_their_batch(
    empty_warehouse: SparkSession, tmp_path: Path
) -> None:
    spark = empty_warehouse
    folder = tmp_path / "contacts" / "2026-11-19"
    folder.mkdir(parents=True)
    (folder / "empty.csv").write_text("")
    (folder / "header.csv").write_text(HEADER + "\n")

    [result] = ingest_source(spark, str(tmp_path), CONTACTS, "2026-11-20", "run-1", NOW)

    assert (result.files, result.rows_read, result.rows_loaded) == (2, 0, 0)
    rows = spark.table("ops.ingest_accounting").orderBy("source_file").collect()
    assert [(r.source_file.rsplit("/", 1)[-1], r.status, r.rows_read) for r in rows] == [
        ("empty.csv", "empty", 0), ("header.csv", "empty", 0)]
    assert ingest_source(spark, str(tmp_path), CONTACTS, "2026-11-20", "run-2", NOW) == []   # the batch is done
    # A batch of nothing but an empty file (no header to read) is accounted the same.
    (tmp_path / "tickets" / "2026-11-19").mkdir(parents=True)
    (tmp_path / "tickets" / "2026-11-19" / "t.csv").write_bytes(b"")
    [tickets] = ingest_source(spark, str(tmp_path), TICKETS, "2026-11-20", "run-3", NOW)
    assert (tickets.files, tickets.rows_read) == (1, 0)

    # The gate's row ratio against an empty previous batch is null, not a division error.
    history = spark.table("ops.ingest_accounting")
    land(tmp_path, "contacts", "2026-11-20", "a.csv", [HEADER, contact("c1")])
    ingest_source(spark, str(tmp_path), CONTACTS, "2026-11-20", "run-4", NOW)
    run = spark.table("ops.ingest_accounting").where("batch_id = '2026-11-20'")
    [row] = accounting_frame(run, history).collect()
    assert (row.source, row.rows_read, row.prev_rows_read, row.row_ratio) == ("contacts", 1, 0, None)


def test_a_nested_field_that_changed_type_fails_the_batch_naming_it(empty_warehouse: SparkSession,
                                                                    tmp_path: Path) -> None:
    order = {"order_id": "o1", "account_id": "a1", "email": "x@example.com", "order_ts": "2026-11-18T10:00:00Z",
             "channel": "web", "currency": "USD", "status": "completed", "shipping_postcode": "10001"}
    lines = [json.dumps({**order, "order_id": f"o{i}", "lines": [{"sku": "S", "category": "c", "quantity": "two",
                                                                   "unit_price": 1.0}]}) for i in range(12)]
    land(tmp_path, "orders", "2026-11-19", "a.jsonl", lines)
    with pytest.raises(ContractViolation, match=r"column 'lines\.quantity' in .*a\.jsonl no longer holds int"):
        ingest_source(empty_warehouse, str(tmp_path), ORDERS, "2026-11-20", "run-1", NOW)


def test_csv_dialect_quoted_header_crlf_and_embedded_newlines(empty_warehouse: SparkSession, tmp_path: Path) -> None:
    spark = empty_warehouse
    quoted_header = ",".join(f'"{c}"' for c in CONTACTS.column_names)
    embedded = contact("c3", street='"1 Main Street\nApt 2"')     # a line break inside a quoted field
    folder = tmp_path / "contacts" / "2026-11-19"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_bytes("\r\n".join([quoted_header, contact("c1"), contact("c2", street='"1, Main St"'),
                                                embedded]).encode() + b"\r\n")

    [result] = ingest_source(spark, str(tmp_path), CONTACTS, "2026-11-20", "run-1", NOW)

    rows = {r.contact_id: r for r in bronze(spark, CONTACTS).collect()}
    assert sorted(rows) == ["c1", "c2"]
    assert rows["c1"].updated_at is not None and rows["c2"].street == "1, Main St"
    assert rows["c1"].sms_opt_in is False     # the last field carries no carriage return
    # One record per physical line: the two halves of the broken record are quarantined, not glued.
    assert quarantine_reasons(spark, "contacts") == {4: ("MALFORMED_ROW", None), 5: ("MALFORMED_ROW", None)}
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (4, 2, 2)
    assert quarantined(spark).where(F.col("line_number") == 5).first().raw_payload.startswith('Apt 2"')
