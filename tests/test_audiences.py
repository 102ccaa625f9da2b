"""Audiences: conditions checked before anything runs, previews on known data, and change-feed syncs on a real
Delta change data feed (entries and exits since the acknowledged version, a failed sync resent, a rerun
sending nothing, the audit and its checksums)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path

import pytest
from pydantic import ValidationError
from pyspark.sql import DataFrame, SparkSession

from jobs.delivery import sync
from jobs.delivery.audience import audience_view, check_conditions, preview
from jobs.delivery.commands import format_preview, list_audiences, preview_audience
from jobs.delivery.conditions import ConditionError
from jobs.delivery.stage import run_export
from jobs.platform.config import Settings, load_settings
from jobs.platform.context import RunContext
from jobs.platform.pii import pii_keys
from jobs.platform.settings import AudienceConfig, ExportConfig
from jobs.platform.stages import stage
from jobs.platform.tables import concurrently, overwrite
from schemas.gold import AUDIENCE_MEMBERSHIP, CUSTOMER_PROFILE, CUSTOMER_SEGMENTS, CUSTOMER_VALUE, IDENTITY_GRAPH
from schemas.ops import AUDIENCE_EXPORTS, AUDIENCE_SYNCS, ERASURES
from schemas.silver import PII_VAULT
from tests.factories import frame, graph_rows, vault_frame

D1, D2, D3 = date(2026, 11, 19), date(2026, 11, 20), date(2026, 11, 21)


def _audience(name: str, condition: str, destination: str = "email_platform") -> AudienceConfig:
    return AudienceConfig(name=name, condition=condition, destination=destination)


# ---------------------------------------------------------------------------------------------- conditions


@pytest.mark.parametrize(("condition", "message"), [
    ("clv_pct > 70", r"audience 'bad': unknown column 'clv_pct'"),
    ("customer_id IN (SELECT customer_id FROM silver.pii_vault)", r"audience 'bad': subqueries are not allowed"),
    ("rfm_segment = 'Champions'; DROP TABLE gold.customer_profile", r"audience 'bad': .*one expression \(no ';'\)"),
    ("DROP TABLE gold.customer_profile", r"audience 'bad': .*not a DROP statement"),
    ("reflect('java.lang.System', 'exit', '1')", r"audience 'bad': function reflect is not allowed"),
])
def test_a_condition_that_is_not_one_expression_over_the_view_fails_at_config_load(condition: str,
                                                                                     message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _audience("bad", condition)


def test_an_audience_file_with_an_unknown_column_fails_the_configuration(tmp_path: Path) -> None:
    from jobs.platform.config import ConfigError

    (tmp_path / "audiences.yaml").write_text(
        "audiences:\n  - {name: vip, condition: \"clv_percentile >= 90 AND tier = 'gold'\", "
        "destination: ad_audience}\n")
    with pytest.raises(ConfigError, match=r"export.audiences\[0\].*audience 'vip': unknown column 'tier'"):
        load_settings("test", {"CDP__EXPORT__AUDIENCES_FILE": str(tmp_path / "audiences.yaml")})


@pytest.mark.parametrize(("condition", "message"), [
    ("clv + 1", r"audience 'bad': the condition is a double, not a true/false expression"),
    ("channels = 'web'", r"audience 'bad': the condition does not fit the audience view: .*DATATYPE_MISMATCH"),
])
def test_types_are_checked_against_the_view_schema_without_data(spark: SparkSession, condition: str,
                                                               message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        check_conditions(spark, [_audience("good", "rfm_segment = 'Champions'"), _audience("bad", condition)])


# ---------------------------------------------------------------------------------------------- data

def _profile(customer: str, email_opt_in: bool, masked: str | None) -> dict:
    return {"customer_id": customer, "email_opt_in": email_opt_in, "email_masked": masked, "as_of_date": D2}


PROFILES = [_profile("C1", True, "a***@example.com"), _profile("C2", True, "b***@example.com"),
            _profile("C3", True, "c***@example.com"), _profile("C4", False, "d***@example.com"),
            _profile("C5", True, "e***@example.com"), _profile("C6", True, None)]   # C6: no contact point
CLV = {"C1": 100.0, "C2": 50.0, "C3": 10.0, "C4": 80.0, "C5": 20.0}                  # C6: not scored
# Per date: customer -> (rfm_segment, lifecycle_stage)
SEGMENTS = {
    D1: {"C1": ("Champions", "mature"), "C2": ("Champions", "mature"), "C3": ("Loyal", "new"),
         "C4": ("Champions", "mature"), "C5": ("Champions", "at_risk"), "C6": ("Champions", "new")},
    D2: {"C1": ("Champions", "mature"), "C2": ("Loyal", "mature"), "C3": ("Champions", "new"),
         "C4": ("Champions", "mature"), "C5": ("Champions", "at_risk"), "C6": ("Champions", "new")},
    D3: {"C1": ("Champions", "mature"), "C2": ("Loyal", "mature"), "C3": ("Champions", "new"),
         "C4": ("Champions", "growing"), "C5": ("Champions", "at_risk"), "C6": ("Champions", "new")},
}
CONTACTS = [("C1", "email", "contacts", "K1", "ann@example.com"), ("C2", "email", "contacts", "K2", "bob@example.com"),
            ("C3", "email", "contacts", "K3", "cy@example.com"), ("C4", "email", "contacts", "K4", "di@example.com"),
            ("C5", "email", "contacts", "K5", "ed@example.com")]


def _value(spark: SparkSession) -> DataFrame:
    return frame(spark, CUSTOMER_VALUE, [{"as_of_date": day, "customer_id": c, "clv": v}
                                         for day in SEGMENTS for c, v in CLV.items()])


def _segments(spark: SparkSession) -> DataFrame:
    return frame(spark, CUSTOMER_SEGMENTS, [{"as_of_date": day, "customer_id": c, "rfm_segment": rfm,
                                             "lifecycle_stage": stage}
                                            for day, rows in SEGMENTS.items() for c, (rfm, stage) in rows.items()])


def test_preview_gives_size_consent_overlaps_segments_and_a_masked_sample(spark: SparkSession,
                                                                          settings: Settings) -> None:
    view = audience_view(frame(spark, CUSTOMER_PROFILE, PROFILES), _value(spark), _segments(spark), D2)
    audiences = (_audience("champions", "rfm_segment = 'Champions'"),
                 _audience("top_half", "clv_percentile >= 50", "ad_audience"),
                 _audience("at_risk", "lifecycle_stage = 'at_risk'"))
    # CLV percentiles among the five scored: C3 0, C5 25, C2 50, C4 75, C1 100; C6 has none.
    percentiles = {r.customer_id: r.clv_percentile for r in view.select("customer_id", "clv_percentile").collect()}
    assert percentiles == {"C1": 100.0, "C2": 50.0, "C3": 0.0, "C4": 75.0, "C5": 25.0, "C6": None}

    erased = spark.createDataFrame([("C6",)], "customer_id string")
    result = preview(view, audiences, "champions", settings.export.destinations, erased, sample_size=2)

    assert (result["size"], result["with_consent"]) == (4, 3)        # C1 C3 C4 C5; C4 opted out; C6 erased
    assert result["overlap"] == {"top_half": 2, "at_risk": 1}          # C1 and C4; C5
    assert result["by_segment"] == {"lifecycle_stage": {"mature": 2, "at_risk": 1, "new": 1},
                                    "rfm_segment": {"Champions": 4}}
    assert result["sample"] == [
        {"customer_id": "C1", "email_masked": "a***@example.com", "phone_masked": None,
         "lifecycle_stage": "mature", "rfm_segment": "Champions", "clv": 100.0},
        {"customer_id": "C3", "email_masked": "c***@example.com", "phone_masked": None,
         "lifecycle_stage": "new", "rfm_segment": "Champions", "clv": 10.0}]


def test_a_preview_prints_as_marketers_read_it() -> None:
    result = {"audience": "champions", "condition": "rfm_segment = 'Champions'", "destination": "email_platform",
              "size": 4, "with_consent": 3, "overlap": {"top_half": 2}, "by_segment": {"rfm_segment": {"Champions": 4}},
              "sample": [{"customer_id": "C1", "email_masked": "a***@example.com", "phone_masked": None,
                          "lifecycle_stage": "mature", "rfm_segment": "Champions", "clv": 100.0}]}
    text = format_preview(result, D2).splitlines()
    assert text[0] == "audience champions as of 2026-11-20 -> email_platform"
    assert text[2].startswith("  members: 4, of whom 3 with the destination's consent")
    assert text[3:5] == ["  overlap: top_half 2", "  by rfm_segment: Champions 4"]
    assert text[6].split() == ["C1", "a***@example.com", "-", "mature", "Champions", "clv", "100.00"]


def test_net_changes_keep_only_what_the_destination_must_hear(spark: SparkSession) -> None:
    changes = spark.createDataFrame([
        ("a", "C1", "insert", 1), ("a", "C2", "delete", 1), ("a", "C3", "insert", 1), ("a", "C3", "delete", 2),
        ("a", "C4", "delete", 1), ("a", "C4", "insert", 2), ("b", "C5", "insert", 1),
    ], "audience string, customer_id string, _change_type string, _commit_version long")
    entered, exited = sync.net_changes(changes, "a")
    # C3 came and went, C4 went and came back: neither is news; C5 is another audience's.
    assert [r.customer_id for r in entered.collect()] == ["C1"]
    assert [r.customer_id for r in exited.collect()] == ["C2"]


# ---------------------------------------------------------------------------------------------- syncs


@pytest.fixture
def warehouse(spark: SparkSession, settings: Settings, tmp_path: Path) -> Settings:
    """Gold and the vault of the customers above; no membership, acknowledgement or audit yet; one audience."""
    for table in (AUDIENCE_MEMBERSHIP, AUDIENCE_SYNCS, AUDIENCE_EXPORTS, ERASURES):
        spark.sql(f"DROP TABLE IF EXISTS {table.name}")
    vault = vault_frame(spark, CONTACTS, pii_keys(settings).encryption_key)
    concurrently(partial(overwrite, df, table) for df, table in (
        (frame(spark, CUSTOMER_PROFILE, PROFILES), CUSTOMER_PROFILE), (_value(spark), CUSTOMER_VALUE),
        (_segments(spark), CUSTOMER_SEGMENTS), (frame(spark, IDENTITY_GRAPH, graph_rows(CONTACTS, D1)), IDENTITY_GRAPH),
        (vault, PII_VAULT)))
    export = ExportConfig.model_validate({**settings.export.model_dump(), "audiences": [
        {"name": "champions", "condition": "rfm_segment = 'Champions'", "destination": "email_platform"}]})
    return dataclasses.replace(settings.with_paths(exports=tmp_path / "exports"), export=export)


def _sync(settings: Settings, day: date) -> dict:
    ctx = RunContext.create(settings, day, f"run-{day}-{datetime.now(UTC):%H%M%S%f}", "user:tester")
    return run_export(ctx.for_stage(stage("export")))["champions"]


def _rows(settings: Settings, export_id: str, folder: str) -> list[dict[str, str]]:
    (data,) = (settings.paths.exports / "champions" / export_id / folder).glob("part-*.csv")
    with data.open(newline="") as fh:
        return sorted(csv.DictReader(fh), key=lambda r: r["customer_id"])


def _audits(spark: SparkSession) -> list:
    return spark.table(AUDIENCE_EXPORTS.name).orderBy("exported_at").collect()


# Slow (about 20 s idle): the stage tier's export test covers a first sync and a rerun in `make test`.
@pytest.mark.slow
def test_syncs_send_who_entered_and_who_exited_since_the_acknowledged_version_and_are_audited(
        warehouse: Settings, spark: SparkSession) -> None:
    settings = warehouse
    first = _sync(settings, D1)      # every member enters: C1 C2 C5 (C4 opted out, C6 has no e-mail)
    assert {k: first[k] for k in ("entered", "exited", "members")} == {"entered": 3, "exited": 0, "members": 3}
    properties = {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {AUDIENCE_MEMBERSHIP.name}").collect()}
    assert properties["delta.enableChangeDataFeed"] == "true"

    # D2: C3 enters, C2 leaves (with the address the destination was sent, not the one changed since), C5 is
    # erased: gone from the audience, and never named again, not even as leaving.
    changed = [(c, f, s, r, "bob.new@example.com" if c == "C2" else v) for c, f, s, r, v in CONTACTS]
    overwrite(vault_frame(spark, changed, pii_keys(settings).encryption_key), PII_VAULT)
    overwrite(frame(spark, ERASURES, [{"erasure_id": "e1", "customer_id": "C5"}]), ERASURES)
    second = _sync(settings, D2)
    assert _rows(settings, second["export_id"], "entered") == [
        {"customer_id": "C3", "entered_on": "2026-11-20", "email": "cy@example.com"}]
    assert _rows(settings, second["export_id"], "exited") == [{"customer_id": "C2", "email": "bob@example.com"}]
    assert [r["customer_id"] for r in _rows(settings, second["export_id"], "members")] == ["C1", "C3"]

    audits = _audits(spark)
    assert [(a.export_id, a.entered_rows, a.exited_rows, a.members_rows) for a in audits] == [
        (first["export_id"], 3, 0, 3), (second["export_id"], 1, 1, 2)]
    assert {(a.audience, a.destination, a.exported_by) for a in audits} == {
        ("champions", "email_platform", "user:tester")}
    assert audits[0].from_version is None and audits[1].from_version == audits[0].to_version
    for audit in audits:
        folder = settings.paths.exports / "champions" / audit.export_id
        on_disk = {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                   for p in folder.rglob("*") if p.is_file()}
        assert {f.path: f.sha256 for f in audit.files} == on_disk
    (ack,) = spark.table(AUDIENCE_SYNCS.name).collect()
    assert (ack.acknowledged_version, ack.export_id, ack.members_rows) == (audits[1].to_version, second["export_id"], 2)
    listed = list_audiences(settings)       # `cdp audience list`, read without Spark
    assert f"version {ack.acknowledged_version} at " in listed and "1 entered, 1 exited, 2 members" in listed


@pytest.mark.slow
def test_a_sync_that_fails_before_its_acknowledgement_is_resent_and_a_rerun_sends_nothing_new(
        warehouse: Settings, spark: SparkSession, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = warehouse
    _sync(settings, D1)

    # D2 (C2 leaves, C3 enters) fails after its files are published, before it is acknowledged...
    def fail(*_: object) -> None:
        raise OSError("acknowledgement lost")

    monkeypatch.setattr(sync, "acknowledge", fail)
    with pytest.raises(OSError, match="acknowledgement lost"):
        _sync(settings, D2)
    monkeypatch.undo()
    # ...so the next sync sends the same changes again, and a rerun after it nothing.
    resent = _sync(settings, D2)
    assert [r["customer_id"] for r in _rows(settings, resent["export_id"], "entered")] == ["C3"]
    assert [r["customer_id"] for r in _rows(settings, resent["export_id"], "exited")] == ["C2"]
    assert _sync(settings, D2) == {"sent": "synced for the date before"}
    # D3: the same members (one changed lifecycle stage): nothing to send, and the destination is up to date.
    assert _sync(settings, D3) == {"sent": "nothing new"}
    assert len(list((settings.paths.exports / "champions").iterdir())) == 3
    audits = _audits(spark)
    assert [(a.entered_rows, a.exited_rows) for a in audits] == [(3, 0), (1, 1), (1, 1)]
    assert audits[1].from_version == audits[2].from_version == audits[0].to_version
    (ack,) = spark.table(AUDIENCE_SYNCS.name).collect()
    assert (ack.export_id, ack.as_of_date, ack.members_rows) == (resent["export_id"], D3, 3)
    assert ack.acknowledged_version > audits[2].to_version
    # `cdp audience preview` on the latest scored date (D3): C1 C3 C4 C5 C6, of whom C4 opted out.
    text = preview_audience(spark, settings, "champions", None)
    assert text.startswith("audience champions as of 2026-11-21") and "members: 5, of whom 4" in text


@pytest.mark.slow
def test_after_an_erasure_vacuumed_the_change_files_a_sync_compares_with_what_was_sent(
        warehouse: Settings, spark: SparkSession) -> None:
    settings = warehouse
    _sync(settings, D1)                                             # C1 C2 C5 sent
    # C5 is erased as `cdp erase` does it: deleted everywhere, then every older file vacuumed, change files too.
    overwrite(frame(spark, ERASURES, [{"erasure_id": "e1", "customer_id": "C5"}]), ERASURES)
    spark.sql(f"DELETE FROM {AUDIENCE_MEMBERSHIP.name} WHERE customer_id = 'C5'")
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        spark.sql(f"VACUUM {AUDIENCE_MEMBERSHIP.name} RETAIN 0 HOURS")
    finally:
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "true")
    second = _sync(settings, D2)
    assert [r["customer_id"] for r in _rows(settings, second["export_id"], "entered")] == ["C3"]
    assert [r["customer_id"] for r in _rows(settings, second["export_id"], "exited")] == ["C2"]
