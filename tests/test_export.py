"""Marketing exports on hand-made gold and vault tables: consent, contact policy, manifest, atomic
publication, delta files and input errors."""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from jobs.delivery import export
from jobs.delivery.export import ExportError, ExportPolicy, export_rows, export_segment
from jobs.platform.config import Settings
from jobs.platform.pii import pii_keys
from jobs.platform.tables import overwrite
from schemas.gold import CUSTOMER_PROFILE, IDENTITY_GRAPH, SEGMENT_MEMBERSHIP
from schemas.silver import PII_VAULT
from tests.factories import frame, graph_rows, vault_frame

D1, D2 = date(2026, 11, 19), date(2026, 11, 20)


def _profile(customer: str, email_opt_in: bool | None, unsubscribed: bool = False, sms_opt_in: bool | None = None,
             email_masked: str | None = None) -> dict:
    return {"customer_id": customer, "email_opt_in": email_opt_in, "unsubscribed": unsubscribed,
            "sms_opt_in": sms_opt_in, "email_masked": email_masked, "as_of_date": D2}


PROFILES = [
    _profile("C1", True, sms_opt_in=True),
    _profile("C2", False),                        # opted out
    _profile("C3", True, unsubscribed=True),      # unsubscribed overrides the opt-in
    _profile("C4", None),                         # consent unknown
    _profile("C5", True),                         # erased (in the tests that pass the erasure)
    _profile("C6", True),                         # a phone, no e-mail
    _profile("C7", True, email_masked="c***@example.com"),   # two e-mails: the golden record's wins
    _profile("C8", True),
    _profile("C9", True),
]


def _member(as_of: date, segment: str, customer: str) -> dict:
    return {"as_of_date": as_of, "segment_type": "rfm_segment", "segment": segment, "customer_id": customer,
            "entered_on": D1}


MEMBERSHIP = [
    _member(D1, "Champions", "C1"), _member(D1, "Champions", "C9"),
    *[_member(D2, "Champions", c) for c in ("C1", "C2", "C3", "C4", "C5", "C6", "C7")],
    _member(D2, "Lost", "C8"),
]

# (customer, field, vault source, record id, raw value)
CONTACTS = [
    ("C1", "email", "contacts", "K1", "Ann.Lee@Example.com"), ("C1", "phone", "contacts", "K1", "+12125550100"),
    ("C2", "email", "contacts", "K2", "bob@example.com"), ("C3", "email", "contacts", "K3", "cy@example.com"),
    ("C4", "email", "contacts", "K4", "di@example.com"), ("C5", "email", "contacts", "K5", "ed@example.com"),
    ("C6", "phone", "contacts", "K6", "(212) 555-0199"),
    ("C7", "email", "email", "old7", "carl.old@example.org"), ("C7", "email", "contacts", "K7", "carl@example.com"),
    ("C9", "email", "contacts", "K9", "flo@example.com"),
]


@pytest.fixture(scope="module")
def gold(spark: SparkSession, settings: Settings) -> SparkSession:
    overwrite(frame(spark, CUSTOMER_PROFILE, PROFILES), CUSTOMER_PROFILE)
    overwrite(frame(spark, SEGMENT_MEMBERSHIP, MEMBERSHIP), SEGMENT_MEMBERSHIP)
    overwrite(frame(spark, IDENTITY_GRAPH, graph_rows(CONTACTS, D1)), IDENTITY_GRAPH)
    overwrite(vault_frame(spark, CONTACTS, pii_keys(settings).encryption_key), PII_VAULT)
    return spark


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _csv_rows(export_dir: Path, folder: str) -> list[dict[str, str]]:
    (data,) = (export_dir / folder).glob("part-*.csv")
    with data.open(newline="") as fh:
        return sorted(csv.DictReader(fh), key=lambda r: r["customer_id"])


def test_raw_export_has_consenting_members_with_the_golden_contact(gold: SparkSession, settings: Settings,
                                                                   tmp_path: Path) -> None:
    erased = gold.createDataFrame([("C5",)], "customer_id string")
    summary = export_segment(gold, settings, "rfm_segment", "Champions", D2, "email_platform", "csv", tmp_path,
                             erased=erased)

    assert _csv_rows(Path(summary["path"]), "members") == [
        {"customer_id": "C1", "entered_on": "2026-11-19", "email": "Ann.Lee@Example.com"},
        {"customer_id": "C7", "entered_on": "2026-11-19", "email": "carl@example.com"},
    ]
    # C2 opted out, C3 unsubscribed, C4 unknown; C5 erased; C6 has no e-mail.
    assert summary["excluded"] == {"no_consent": 3, "erased": 1, "no_contact": 1}


def test_hashed_export_hashes_normalised_contacts(gold: SparkSession, settings: Settings, tmp_path: Path) -> None:
    summary = export_segment(gold, settings, "rfm_segment", "Champions", D2, "ad_audience", "parquet", tmp_path)

    members = pd.read_parquet(Path(summary["path"]) / "members").sort_values("customer_id", ignore_index=True)
    expected = pd.DataFrame({
        "customer_id": ["C1", "C5", "C6", "C7"],
        "email_sha256": [_sha("ann.lee@example.com"), _sha("ed@example.com"), None, _sha("carl@example.com")],
        "phone_sha256": [_sha("+12125550100"), None, _sha("+12125550199"), None],
    })
    pd.testing.assert_frame_equal(members[["customer_id", "email_sha256", "phone_sha256"]], expected)
    assert summary["excluded"] == {"no_consent": 3, "erased": 0, "no_contact": 0}


def test_hashing_trims_and_lower_cases_emails_and_puts_phones_in_e164(spark: SparkSession) -> None:
    members = spark.createDataFrame([("C1", D1, "  Ann.Lee@Example.COM ", "+1 (212) 555-0100")],
                                    "customer_id string, entered_on date, email string, phone string")
    policy = ExportPolicy("ads", "hashed", ("email", "phone"), ("email",))
    row = export_rows(members, policy, "US").first()
    assert (row.email_sha256, row.phone_sha256) == (_sha("ann.lee@example.com"), _sha("+12125550100"))


def test_values_a_spreadsheet_would_run_are_neutralised_in_csv(spark: SparkSession) -> None:
    values = ["=cmd|'/Ccalc'!A0@example.com", "+1 212 555 0100", "-2+3", "@SUM(A1:A9)", "\tx", "\rx", "ann@example.com",
              "a=b", None, "+12125550100", "-4.5", "+1|cmd"]
    df = spark.createDataFrame([(v, i) for i, v in enumerate(values)], "value string, n int")
    out = [(r.value, r.n) for r in export.neutralise_formulas(df).orderBy("n").collect()]
    # Plain numbers (an E.164 phone) carry no formula and stay as they are: destinations dial and match them.
    assert out == [("'=cmd|'/Ccalc'!A0@example.com", 0), ("'+1 212 555 0100", 1), ("'-2+3", 2), ("'@SUM(A1:A9)", 3),
                   ("'\tx", 4), ("'\rx", 5), ("ann@example.com", 6), ("a=b", 7), (None, 8), ("+12125550100", 9),
                   ("-4.5", 10), ("'+1|cmd", 11)]


def test_manifest_counts_rows_and_checksums_every_file(gold: SparkSession, settings: Settings,
                                                       tmp_path: Path) -> None:
    summary = export_segment(gold, settings, "rfm_segment", "Champions", D2, "email_platform", "csv", tmp_path)
    export_dir = Path(summary["path"])
    manifest = json.loads((export_dir / "manifest.json").read_text())

    assert {k: manifest[k] for k in ("as_of_date", "destination", "format", "previous_export", "rows")} == {
        "as_of_date": "2026-11-20", "destination": "email_platform", "format": "csv", "previous_export": None,
        "rows": {"members": 3, "added": 3, "removed": 0}}
    assert manifest["segment"] == {"table": "gold.segment_membership", "segment_type": "rfm_segment",
                                   "segment": "Champions"}
    assert manifest["policy"]["contact"] == "raw"
    listed = [f for files in manifest["files"].values() for f in files]
    on_disk = sorted(str(p.relative_to(export_dir)) for p in export_dir.rglob("*") if p.is_file())
    assert sorted(f["path"] for f in listed) == sorted(set(on_disk) - {"manifest.json"})
    for entry in listed:
        assert entry["sha256"] == hashlib.sha256((export_dir / entry["path"]).read_bytes()).hexdigest()
    assert len(_csv_rows(export_dir, "members")) == manifest["rows"]["members"]


def test_delta_files_hold_who_joined_and_who_left_since_the_previous_export(gold: SparkSession, settings: Settings,
                                                                            tmp_path: Path) -> None:
    first = export_segment(gold, settings, "rfm_segment", "Champions", D1, "email_platform", "csv", tmp_path)
    assert [r["customer_id"] for r in _csv_rows(Path(first["path"]), "added")] == ["C1", "C9"]

    second = export_segment(gold, settings, "rfm_segment", "Champions", D2, "email_platform", "csv", tmp_path)
    assert second["previous_export"] == first["export_id"]
    assert _csv_rows(Path(second["path"]), "added") == [
        {"customer_id": "C5", "email": "ed@example.com"}, {"customer_id": "C7", "email": "carl@example.com"}]
    assert _csv_rows(Path(second["path"]), "removed") == [{"customer_id": "C9", "email": "flo@example.com"}]
    assert second["rows"] == {"members": 3, "added": 2, "removed": 1}


def test_a_failed_export_publishes_nothing_and_leaves_the_previous_intact(
        gold: SparkSession, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = export_segment(gold, settings, "rfm_segment", "Champions", D1, "email_platform", "csv", tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def fail(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(export, "write_manifest", fail)
    with pytest.raises(OSError, match="disk full"):
        export_segment(gold, settings, "rfm_segment", "Champions", D2, "email_platform", "csv", tmp_path)

    assert [p.name for p in tmp_path.iterdir()] == [first["export_id"]]  # no temporary folder left
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(("args", "message"), [
    (("rfm_segment", "Champs", D2, "email_platform", "csv"), r"unknown segment 'Champs'.*Champions"),
    (("rfm", "Champions", D2, "email_platform", "csv"), r"unknown segment type 'rfm'.*rfm_segment"),
    (("rfm_segment", "Champions", date(2020, 1, 1), "email_platform", "csv"), "no rows as of 2020-01-01"),
    (("rfm_segment", "Champions", D2, "email_platform", "xlsx"), r"unknown format 'xlsx'"),
    (("rfm_segment", "Champions", D2, "billboard", "csv"), r"unknown destination 'billboard'.*email_platform"),
])
def test_bad_input_is_a_clear_error(gold: SparkSession, settings: Settings, tmp_path: Path, args: tuple,
                                    message: str) -> None:
    with pytest.raises(ExportError, match=message):
        export_segment(gold, settings, *args, tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
