"""Erasure's cheap parts: what Delta keeps statistics on, the suppression list's match, the landing and export
files rewritten without a person, and a request that takes no contact point on its command line. The whole
erasure, with a byte search of every file left, is in tests/test_slow.py."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.cleanse.suppression import ERASED_PERSON, reject_erased
from jobs.delivery.erasure_files import LandingMismatch, drop_lines, purge_exports
from jobs.platform import pii
from schemas import KEYED_HASH_COLUMNS, gold, is_personal, ops, silver
from schemas.bronze import TABLES as BRONZE

KEY = bytes(range(32))


def test_no_table_keeps_statistics_on_personal_columns_or_keyed_hashes() -> None:
    # The transaction log keeps every file's minimum and maximum of these columns after an erasure's vacuum.
    for table in (*BRONZE.values(), *silver.TABLES, *gold.TABLES, *ops.TABLES):
        leaked = [c for c in table.stats_columns if is_personal(c) or c in KEYED_HASH_COLUMNS]
        assert leaked == [], table.name
    assert "birth_date" not in silver.CONTACTS.stats_columns and "node" not in gold.IDENTITY_GRAPH.stats_columns
    # Bronze holds every personal field of a source as ciphertext.
    assert {c.name: c.type for c in BRONZE["contacts"].columns if is_personal(c.name)} == dict.fromkeys(
        ("first_name", "last_name", "email", "phone", "street", "birth_date"), "binary")


def test_records_with_an_erased_identifier_are_rejected_and_counted(spark: SparkSession) -> None:
    orders = spark.createDataFrame(
        [("o1", "a1", "k-ann", None), ("o2", "a2", "k-bob", None), ("o3", "a3", None, "TEST_ACCOUNT"),
         ("o4", "a1", None, None)],
        "order_id string, account_id string, email_key string, _rejected string")
    erased = spark.createDataFrame([("email:k-ann",), ("account:a3",)], "node string") \
        .select(pii.suppression_key(F.col("node"), KEY).alias("subject_key"))
    rejected = {r.order_id: r._rejected for r in reject_erased(orders, "orders", erased, KEY).collect()}
    # o1 by its e-mail; o4 through nothing of hers (her account is not on the list); o3 stays a test account.
    assert rejected == {"o1": ERASED_PERSON, "o2": None, "o3": "TEST_ACCOUNT", "o4": None}
    # The list holds neither the node nor the keyed hash silver uses.
    listed = {r.subject_key for r in erased.collect()}
    assert not listed & {"email:k-ann", "k-ann", "account:a3"}


def test_landing_lines_are_dropped_in_place_plain_or_gzip(tmp_path: Path) -> None:
    plain = tmp_path / "a.csv"
    plain.write_bytes(b"id,email\r\nc1,ann@example.com\r\nc2,bob@example.com\r\n")
    drop_lines(plain, {2: "c1,ann@example.com"})
    assert plain.read_bytes() == b"id,email\r\nc2,bob@example.com\r\n"
    packed = tmp_path / "b.jsonl.gz"
    packed.write_bytes(gzip.compress(b'{"id": 1}\n{"id": 2}\n{"id": 3}\n'))
    drop_lines(packed, {1: '{"id": 1}', 3: '{"id": 3}'})
    assert gzip.decompress(packed.read_bytes()) == b'{"id": 2}\n'
    # A file that changed since Spark read it is not cut blindly.
    with pytest.raises(LandingMismatch, match="line 2"):
        drop_lines(plain, {2: "c1,ann@example.com"})
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _export(root: Path, export_id: str, fmt: str, members: list[dict]) -> None:
    folder = root / export_id / "members"
    folder.mkdir(parents=True)
    path = folder / f"part-0.{fmt}"
    if fmt == "csv":
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, ["customer_id", "email"], lineterminator="\n")
            writer.writeheader()
            writer.writerows(members)
    else:
        pq.write_table(pa.Table.from_pylist(members), path)
    manifest = {"export_id": export_id, "format": fmt, "rows": {"members": len(members)},
                "files": {"members": [{"path": f"members/{path.name}",
                                       "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}]}}
    (root / export_id / "manifest.json").write_text(json.dumps(manifest))


def test_exports_lose_the_persons_rows_and_say_which_to_recall(tmp_path: Path) -> None:
    ann, bob = {"customer_id": "C1", "email": "ann@example.com"}, {"customer_id": "C2", "email": "bob@example.com"}
    _export(tmp_path, "crm-1", "csv", [ann, bob])
    _export(tmp_path, "crm-2", "parquet", [ann, bob])
    _export(tmp_path, "crm-3", "csv", [bob])

    rewritten, recall = purge_exports(tmp_path, ["C1"])

    assert recall == ["crm-1", "crm-2"] and len(rewritten) == 2
    assert (tmp_path / "crm-1" / "members" / "part-0.csv").read_text() == "customer_id,email\nC2,bob@example.com\n"
    assert pq.read_table(tmp_path / "crm-2" / "members" / "part-0.parquet").to_pylist() == [bob]
    for export_id in ("crm-1", "crm-2"):
        manifest = json.loads((tmp_path / export_id / "manifest.json").read_text())
        entry = manifest["files"]["members"][0]
        assert manifest["rows"]["members"] == 1
        assert entry["sha256"] == hashlib.sha256((tmp_path / export_id / entry["path"]).read_bytes()).hexdigest()
    assert purge_exports(tmp_path, ["C1"]) == ([], [])


def test_an_erasure_request_takes_no_contact_point_on_its_command_line() -> None:
    from jobs.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["erase-request", "--email", "--from", "request.txt"])
    assert (args.email, args.from_file) == (True, "request.txt")
    with pytest.raises(SystemExit):
        parser.parse_args(["erase-request", "--email", "ann@example.com"])
    with pytest.raises(SystemExit):
        parser.parse_args(["erase", "--email", "ann@example.com"])
    assert parser.parse_args(["erase", "--request-id", "r1"]).request_id == "r1"


def test_processes_starting_together_on_a_fresh_clone_make_and_read_one_whole_key(tmp_path: Path) -> None:
    """The suite's two workers once met a key file created but not yet written (`got 0` bytes)."""
    from concurrent.futures import ThreadPoolExecutor

    folders = [tmp_path / f"secrets-{i}" for i in range(20)]
    with ThreadPoolExecutor(16) as pool:
        keys = list(pool.map(lambda folder: pii.load_keys(folder, environ={}), [f for f in folders for _ in range(16)]))
    assert {len(k.encryption_key) for k in keys} == {32}
    for i, folder in enumerate(folders):
        assert len({k.encryption_key for k in keys[16 * i:16 * (i + 1)]}) == 1     # everyone has the first key
        assert sorted(p.name for p in folder.iterdir()) == ["encryption.key", "hmac.key"]   # no staged copy left
        assert (folder / "encryption.key").stat().st_mode & 0o777 == 0o600
