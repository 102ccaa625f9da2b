"""Bronze ingestion: complete loads, quarantine with reasons, row accounting, idempotency, contracts."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.ingest import batches
from jobs.ingest.batches import (
    BatchResult,
    ContractViolation,
    batch_results,
    landed_batches,
    list_landed_files,
    parse_batches,
    replay_window_hashes,
    unsealed_bronze,
    unsealed_quarantine,
)
from jobs.platform.tables import ensure_table, replace_slice, sql_literal
from schemas import RawSource
from schemas.bronze import TABLES as BRONZE
from schemas.ops import INGEST_ACCOUNTING, QUARANTINE, ROW_COUNTS
from schemas.raw import CONTACTS, ORDERS, POS

NOW = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
KEY = bytes(range(32))      # the encryption key these tests ingest with
HEADER = ",".join(CONTACTS.column_names)


def ingest_source(spark: SparkSession, landing: str, source: RawSource, as_of: str, run_id: str,
                  now: datetime, replay_from: str = "0000", maximums: dict[str, float] | None = None
                  ) -> list[BatchResult]:
    """Parse, split and write one source's pending batches: the ingest stage without its gate (whose
    write-audit-publish is tested in tests/test_stages_bronze_silver.py), accounting last as a crash would leave it."""
    for table in (INGEST_ACCOUNTING, BRONZE[source.name]):
        ensure_table(spark, table)
    done = {r.source_file for r in spark.table(INGEST_ACCOUNTING.name).where(F.col("source") == source.name)
            .collect()}
    batches = landed_batches(spark, landing, source, as_of, done)
    if not batches:
        return []
    ids = ", ".join(sql_literal(b) for b in batches)
    earlier = replay_window_hashes(spark.table(BRONZE[source.name].name), list(batches), replay_from)
    parsed = parse_batches(spark, source, [f for files in batches.values() for f in files], earlier, run_id, now,
                           KEY, maximums)
    try:
        batch_slice = f"source = {sql_literal(source.name)} AND batch_id IN ({ids})"
        replace_slice(parsed.quarantine, QUARANTINE, batch_slice)
        replace_slice(parsed.bronze, BRONZE[source.name], f"_batch_id IN ({ids})")
        replace_slice(parsed.accounting, INGEST_ACCOUNTING, batch_slice)
    finally:
        parsed.release()
    return batch_results(spark.table(INGEST_ACCOUNTING.name).where(batch_slice))


def bronze(spark: SparkSession, source: RawSource) -> DataFrame:
    """bronze.<source> with its personal fields decrypted, as cleanse reads it."""
    return unsealed_bronze(spark.table(BRONZE[source.name].name), source, KEY)


def quarantined(spark: SparkSession) -> DataFrame:
    """ops.quarantine with its lines decrypted."""
    return unsealed_quarantine(spark.table(QUARANTINE.name), KEY)


def contact(cid: str, **overrides: str) -> str:
    values = {
        "contact_id": cid, "first_name": "Ann", "last_name": "Lee", "email": f"{cid}@example.com",
        "phone": "(212) 555-0100", "street": "1 Main Street", "city": "New York", "postcode": "10001",
        "country": "US", "birth_date": "1980-04-01", "gender": "F", "loyalty_number": "", "signup_channel": "web",
        "email_opt_in": "true", "sms_opt_in": "false", "created_at": "2026-01-01T10:00:00Z",
        "updated_at": "2026-01-02T10:00:00Z",
    }
    values.update(overrides)
    return ",".join(values[c] for c in CONTACTS.column_names)


def land(landing: Path, source: str, batch: str, name: str, lines: list[str]) -> None:
    folder = landing / source / batch
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def accounting(spark: SparkSession, source: str) -> dict[str, int]:
    row = spark.table("ops.ingest_accounting").where(F.col("source") == source).agg(
        *[F.sum(c).alias(c) for c in ROW_COUNTS]).first()
    return row.asDict()


def quarantine_reasons(spark: SparkSession, source: str) -> dict[int, tuple[str, str | None]]:
    rows = spark.table("ops.quarantine").where(F.col("source") == source).collect()
    return {r.line_number: (r.reason_code, r.reason_column) for r in rows}


def test_clean_file_loads_completely(empty_warehouse: SparkSession, tmp_path: Path) -> None:
    spark = empty_warehouse
    land(tmp_path, "contacts", "2026-11-19", "a.csv", [HEADER, contact("c1"), contact("c2"), contact("c3")])

    [result] = ingest_source(spark, str(tmp_path), CONTACTS, "2026-11-20", "run-1", NOW)

    assert (result.rows_read, result.rows_loaded, result.rows_quarantined, result.rows_deduplicated) == (3, 3, 0, 0)
    stored = spark.table("bronze.contacts").orderBy("contact_id").collect()
    assert all(b"example.com" not in r.email and b"Ann" not in r.first_name for r in stored)   # encrypted at rest
    bronze_rows = bronze(spark, CONTACTS).orderBy("contact_id").collect()
    assert [r.contact_id for r in bronze_rows] == ["c1", "c2", "c3"]
    assert [r._line_number for r in bronze_rows] == [2, 3, 4]
    first = bronze_rows[0]
    assert first.birth_date.isoformat() == "1980-04-01" and first.email_opt_in is True
    assert first.email == "c1@example.com"
    assert first._batch_id == "2026-11-19" and first._source_file.endswith("contacts/2026-11-19/a.csv")


def test_defects_are_quarantined_with_reason_and_rows_add_up(empty_warehouse: SparkSession, tmp_path: Path) -> None:
    spark = empty_warehouse
    lines = [
        HEADER,
        contact("c1"),                                   # line 2: fine
        '"' + contact("c2"),                             # 3: broken quote
        contact("c3", email_opt_in="maybe"),             # 4: wrong type
        contact("c4", birth_date="1985-02-30"),          # 5: impossible date
        contact("", first_name="NoId"),                  # 6: missing required
        contact("c1"),                                   # 7: exact duplicate of line 2
        "",                                              # 8: empty line
        contact("c5") + ",surplus",                      # 9: more fields than the header
        contact("c6", created_at="yesterday"),           # 10: wrong type in a timestamp
    ]
    land(tmp_path, "contacts", "2026-11-19", "a.csv", lines)

    [result] = ingest_source(spark, str(tmp_path), CONTACTS, "2026-11-20", "run-1", NOW)

    assert quarantine_reasons(spark, "contacts") == {
        3: ("MALFORMED_ROW", None), 4: ("TYPE_MISMATCH", "email_opt_in"), 5: ("IMPOSSIBLE_DATE", "birth_date"),
        6: ("MISSING_REQUIRED", "contact_id"), 8: ("EMPTY_LINE", None), 9: ("MALFORMED_ROW", None),
        10: ("TYPE_MISMATCH", "created_at"),
    }
    counts = accounting(spark, "contacts")
    assert counts == {"rows_read": 9, "rows_loaded": 1, "rows_quarantined": 7, "rows_deduplicated": 1}
    assert counts["rows_read"] == counts["rows_loaded"] + counts["rows_quarantined"] + counts["rows_deduplicated"]
    assert result.rows_read == 9
    assert b"c3@example.com" not in spark.table("ops.quarantine").where("line_number = 4").first().raw_payload
    payload = quarantined(spark).where("line_number = 4").first().raw_payload
    assert payload == contact("c3", email_opt_in="maybe")


def test_json_defects_and_nested_lines(empty_warehouse: SparkSession, tmp_path: Path) -> None:
    spark = empty_warehouse
    good = {"order_id": "o1", "account_id": "a1", "email": "x@example.com", "order_ts": "2026-11-18T10:00:00Z",
            "channel": "web", "currency": "USD", "status": "completed", "shipping_postcode": "10001",
            "lines": [{"sku": "S1", "category": "books", "quantity": 2, "unit_price": 9.5}]}
    lines = [
        json.dumps(good),
        json.dumps(good)[:40],                                          # broken JSON
        json.dumps({**good, "order_id": "o2", "lines": "n/a"}),          # wrong type
        json.dumps({**good, "order_id": "o3", "order_ts": "2026-02-30T10:00:00Z"}),
        json.dumps({**good, "order_id": "o4", "account_id": None}),      # missing required
        json.dumps({**good, "order_id": "o5", "gift_wrap": True}),       # new optional field: drift
        # as many keys as the contract declares, one optional field left out and one new: drift too
        json.dumps({**{k: v for k, v in good.items() if k != "shipping_postcode"}, "order_id": "o6",
                    "coupon": "SPRING"}),
    ]
    land(tmp_path, "orders", "2026-11-19", "a.jsonl", lines)

    ingest_source(spark, str(tmp_path), ORDERS, "2026-11-20", "run-1", NOW)

    assert quarantine_reasons(spark, "orders") == {
        2: ("MALFORMED_ROW", None), 3: ("TYPE_MISMATCH", "lines"), 4: ("IMPOSSIBLE_DATE", "order_ts"),
        5: ("MISSING_REQUIRED", "account_id"),
    }
    bronze = {r.order_id: r for r in spark.table("bronze.orders").collect()}
    assert set(bronze) == {"o1", "o5", "o6"}
    assert bronze["o1"].lines[0].quantity == 2 and bronze["o1"].lines[0].unit_price == 9.5
    assert bronze["o1"].extra_fields == {}
    assert bronze["o5"].extra_fields == {"gift_wrap": "true"}
    assert bronze["o6"].extra_fields == {"coupon": "SPRING"} and bronze["o6"].shipping_postcode is None
    drift = spark.table("ops.ingest_accounting").where("source = 'orders'").first().extra_columns
    assert drift == ["coupon", "gift_wrap"]


def test_rerun_is_a_no_op_and_a_crashed_batch_replays_to_the_same_result(
    empty_warehouse: SparkSession, tmp_path: Path
) -> None:
    spark = empty_warehouse
    land(tmp_path, "contacts", "2026-11-18", "a.csv", [HEADER, contact("c1"), contact("c2"), "broken,row"])
    land(tmp_path, "contacts", "2026-11-19", "a.csv", [HEADER, contact("c3"), contact("c1")])  # c1 replayed
    ingest_source(spark, str(tmp_path), CONTACTS, "2026-11-20", "run-1", NOW)
    snapshot = sorted(map(tuple, spark.table("bronze.contacts").select("contact_id", "_batch_id").collect()))
    version = spark.sql("DESCRIBE HISTORY bronze.contacts").agg(F.max("version")).first()[0]

    assert ingest_source(spark, str(tmp_path), CONTACTS, "2026-11-20", "run-2", NOW) == []
    assert spark.sql("DESCRIBE HISTORY bronze.contacts").agg(F.max("version")).first()[0] == version

    # A crash before the accounting commit leaves the batch pending: replaying it changes nothing.
    spark.sql("DELETE FROM ops.ingest_accounting WHERE batch_id = '2026-11-19'")
    [replayed] = ingest_source(spark, str(tmp_path), CONTACTS, "2026-11-20", "run-3", NOW)
    assert replayed.batch_id == "2026-11-19"
    assert (replayed.rows_loaded, replayed.rows_deduplicated) == (1, 1)
    assert sorted(map(tuple, spark.table("bronze.contacts").select("contact_id", "_batch_id").collect())) == snapshot
    assert snapshot == [("c1", "2026-11-18"), ("c2", "2026-11-18"), ("c3", "2026-11-19")]
    assert spark.table("ops.quarantine").count() == 1
    assert accounting(spark, "contacts") == {
        "rows_read": 5, "rows_loaded": 3, "rows_quarantined": 1, "rows_deduplicated": 1}


def test_copies_are_looked_for_in_the_replay_window_only(empty_warehouse: SparkSession, tmp_path: Path) -> None:
    spark = empty_warehouse
    land(tmp_path, "contacts", "2026-10-01", "a.csv", [HEADER, contact("c1")])
    land(tmp_path, "contacts", "2026-11-18", "a.csv", [HEADER, contact("c2")])
    ingest_source(spark, str(tmp_path), CONTACTS, "2026-11-18", "run-1", NOW)
    land(tmp_path, "contacts", "2026-11-19", "a.csv", [HEADER, contact("c1"), contact("c2"), contact("c3")])

    [day] = ingest_source(spark, str(tmp_path), CONTACTS, "2026-11-19", "run-2", NOW, replay_from="2026-11-01")

    # c2's copy is within the window: deduplicated; c1's is older: loaded again, and every row is counted.
    assert (day.rows_read, day.rows_loaded, day.rows_deduplicated) == (3, 2, 1)
    assert sorted(r.contact_id for r in spark.table("bronze.contacts").where("_batch_id = '2026-11-19'").collect()) \
        == ["c1", "c3"]


@pytest.mark.parametrize("broadcast_repeats", [batches.BROADCAST_REPEATS, 0])
def test_the_first_copy_by_batch_file_and_line_is_loaded_however_the_copies_are_joined_back(
    empty_warehouse: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broadcast_repeats: int
) -> None:
    # Copies are found from hashes and positions alone, then joined back to the lines by broadcast or, past
    # the limit, by a shuffle: the same outcome either way.
    monkeypatch.setattr(batches, "BROADCAST_REPEATS", broadcast_repeats)
    spark = empty_warehouse
    land(tmp_path, "contacts", "2026-11-10", "a.csv", [HEADER, contact("c0")])
    ingest_source(spark, str(tmp_path), CONTACTS, "2026-11-10", "run-1", NOW)
    land(tmp_path, "contacts", "2026-11-18", "a.csv", [HEADER, contact("c2"), contact("c0")])
    land(tmp_path, "contacts", "2026-11-18", "b.csv",
         [HEADER, contact("c1"), contact("c2"), contact("c1"), "broken,row", "broken,row"])
    land(tmp_path, "contacts", "2026-11-19", "a.csv", [HEADER, contact("c1"), contact("c3")])

    results = ingest_source(spark, str(tmp_path), CONTACTS, "2026-11-20", "run-2", NOW)

    # 11-18: c0 was loaded on 11-10, b.csv's c2 copies a.csv's, its second c1 its first; a bad line is
    # quarantined however often it repeats. 11-19: c1 copies 11-18's.
    assert [(r.batch_id, r.rows_read, r.rows_loaded, r.rows_quarantined, r.rows_deduplicated) for r in results] == [
        ("2026-11-18", 7, 2, 2, 3), ("2026-11-19", 2, 1, 0, 1)]
    # "broken,row" is two fields of a longer header: its required created_at is missing.
    assert quarantine_reasons(spark, "contacts") == {5: ("MISSING_REQUIRED", "created_at"),
                                                     6: ("MISSING_REQUIRED", "created_at")}
    loaded = spark.table("bronze.contacts").where("_batch_id >= '2026-11-18'").collect()
    assert sorted((r.contact_id, r._batch_id, r._source_file.rsplit("/", 1)[-1], r._line_number) for r in loaded) == [
        ("c1", "2026-11-18", "b.csv", 2), ("c2", "2026-11-18", "a.csv", 2), ("c3", "2026-11-19", "a.csv", 3)]


def test_line_numbers_hold_across_file_splits_and_a_compressed_header_is_read_alone(
    empty_warehouse: SparkSession, tmp_path: Path
) -> None:
    spark = empty_warehouse
    rows = [contact(f"c{i:04d}") for i in range(1, 401)]
    land(tmp_path, "contacts", "2026-11-19", "a.csv", ["\ufeff" + HEADER, *rows[:200], "broken,row", *rows[200:]])
    folder = tmp_path / "contacts" / "2026-11-19"
    with gzip.open(folder / "b.csv.gz", "wt", encoding="utf-8") as out:
        out.write("\n".join([HEADER, contact("z1"), "also,broken"]) + "\n")
    (folder / "c.csv").write_text("")   # no header, no lines: nothing to load, no contract broken
    spark.conf.set("spark.sql.files.maxPartitionBytes", "8k")   # a.csv (about 50 KiB) is read in several splits
    try:
        results = ingest_source(spark, str(tmp_path), CONTACTS, "2026-11-20", "run-1", NOW)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")

    assert [(r.rows_read, r.rows_loaded, r.rows_quarantined) for r in results] == [(403, 401, 2)]
    lines = {r.contact_id: (r._source_file.rsplit("/", 1)[-1], r._line_number)
             for r in spark.table("bronze.contacts").collect()}
    assert lines["c0001"] == ("a.csv", 2) and lines["c0200"] == ("a.csv", 201) and lines["c0201"] == ("a.csv", 203)
    assert lines["c0400"] == ("a.csv", 402) and lines["z1"] == ("b.csv.gz", 2)
    assert sorted(n for f, n in lines.values() if f == "a.csv") == [*range(2, 202), *range(203, 403)]
    quarantined = {(r.source_file.rsplit("/", 1)[-1], r.line_number) for r in spark.table("ops.quarantine").collect()}
    assert quarantined == {("a.csv", 202), ("b.csv.gz", 3)}


def test_batches_after_the_logical_date_wait(empty_warehouse: SparkSession, tmp_path: Path) -> None:
    land(tmp_path, "contacts", "2026-11-21", "a.csv", [HEADER, contact("c9")])
    assert ingest_source(empty_warehouse, str(tmp_path), CONTACTS, "2026-11-20", "run-1", NOW) == []
    assert list(list_landed_files(empty_warehouse, str(tmp_path), "contacts")) == ["2026-11-21"]


def test_missing_required_column_fails_the_batch_naming_file_column_and_type(
    empty_warehouse: SparkSession, tmp_path: Path
) -> None:
    header = HEADER.replace(",updated_at", "")
    row = contact("c1").rsplit(",", 1)[0]
    land(tmp_path, "contacts", "2026-11-19", "old.csv", [header, row])
    with pytest.raises(ContractViolation, match=r"'updated_at' \(timestamp\) is missing from .*old\.csv"):
        ingest_source(empty_warehouse, str(tmp_path), CONTACTS, "2026-11-20", "run-1", NOW)
    assert not empty_warehouse.catalog.tableExists("ops.quarantine") or \
        empty_warehouse.table("ops.quarantine").count() == 0


def test_type_change_fails_the_batch(empty_warehouse: SparkSession, tmp_path: Path) -> None:
    header = ",".join(POS.column_names)
    rows = [f"T{i},S1,L1,2026-11-19 10:00:00,EUR,twelve euros,SKU-1:books:1:12.00" for i in range(12)]
    land(tmp_path, "pos", "2026-11-19", "pos.csv", [header, *rows])
    with pytest.raises(ContractViolation, match=r"column 'amount' in .*pos\.csv no longer holds double"):
        ingest_source(empty_warehouse, str(tmp_path), POS, "2026-11-20", "run-1", NOW)


def test_reordered_columns_are_read_by_header(empty_warehouse: SparkSession, tmp_path: Path) -> None:
    names = list(reversed(CONTACTS.column_names))
    values = dict(zip(CONTACTS.column_names, contact("c1").split(","), strict=True))
    land(tmp_path, "contacts", "2026-11-19", "a.csv", [",".join(names), ",".join(values[n] for n in names)])
    ingest_source(empty_warehouse, str(tmp_path), CONTACTS, "2026-11-20", "run-1", NOW)
    row = bronze(empty_warehouse, CONTACTS).first()
    assert (row.contact_id, row.email, row.postcode) == ("c1", "c1@example.com", "10001")
