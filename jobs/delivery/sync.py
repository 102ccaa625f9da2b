"""Audience syncs: who entered and who exited an audience since its destination last acknowledged it.

Each sync MERGEs the audience's exportable members of the day (condition, the destination's consent, a
contact point of its policy, not erased) into gold.audience_membership, which has a Delta change data
feed: a customer who stays changes nothing, an entry is an insert and an exit a delete. The export
then holds the changes after the destination's acknowledged version (ops.audience_syncs) up to the
version just written, read from the feed, with the full member list:

    <paths.exports>/<audience>/<export_id>/entered/  members/  exited/  manifest.json

`exited/` carries the contact points the destination was sent (from the last acknowledged export's
members), which it needs to remove them. The export is published atomically (`export.publish`), then
audited (ops.audience_exports), and only then acknowledged: a sync that fails before its
acknowledgement is sent again in full by the next, and a sync with nothing new publishes nothing.
A customer who entered and left again between two acknowledgements was never sent and is in neither
file. Erased customers never leave, not even in `exited/`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from jobs.delivery import export
from jobs.delivery.audience import audience_members
from jobs.delivery.export import ExportPolicy, consenting, contact_points, export_rows, neutralise_formulas
from jobs.platform.settings import AudienceConfig
from jobs.platform.tables import location, sql_literal
from schemas import Table
from schemas.gold import AUDIENCE_MEMBERSHIP
from schemas.ops import AUDIENCE_EXPORTS, AUDIENCE_SYNCS

log = logging.getLogger(__name__)

DATA_FOLDERS = ("entered", "exited", "members")
Record = Callable[[DataFrame, Table, str], None]    # writes an operational record now (RunContext.record)


@dataclass(frozen=True)
class SyncRun:
    """Who syncs, for which date and where to."""

    as_of: date
    run_id: str
    exported_by: str
    out_dir: Path


# ---------------------------------------------------------------------------------------------- transforms


def exportable(view: DataFrame, audience: AudienceConfig, policy: ExportPolicy, erased: DataFrame,
               graph: DataFrame, vault: DataFrame, encryption_key: bytes, phone_region: str,
               as_of: date) -> DataFrame:
    """The rows the destination would hold today (policy.columns, entered_on = `as_of`): the audience's
    members with its consent, a contact point and no erasure, written as the export's format writes them."""
    members = audience_members(view, audience).select("customer_id", F.lit(as_of).alias("entered_on"))
    allowed = consenting(members, view, policy.consent, erased)
    rows = export_rows(contact_points(allowed, graph, vault, encryption_key), policy, phone_region)
    return neutralise_formulas(rows) if audience.format == "csv" else rows


def membership_rows(rows: dict[str, DataFrame]) -> DataFrame:
    """gold.audience_membership rows of the audiences synced: (audience, customer_id, entered_on)."""
    frames = [r.select(F.lit(name).alias("audience"), "customer_id", "entered_on") for name, r in rows.items()]
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame)
    return union


def net_changes(changes: DataFrame, audience: str) -> tuple[DataFrame, DataFrame]:
    """(entered, exited) customer ids of `audience` from change-feed rows of the membership: a customer's
    first change says whether the destination has them, their last whether it should. Inserted then
    deleted (or the reverse) is no change."""
    per_customer = (changes.where((F.col("audience") == audience)
                                  & F.col("_change_type").isin("insert", "delete"))
                    .groupBy("customer_id")
                    .agg(F.min_by("_change_type", "_commit_version").alias("first"),
                         F.max_by("_change_type", "_commit_version").alias("last")))
    entered = per_customer.where((F.col("first") == "insert") & (F.col("last") == "insert"))
    exited = per_customer.where((F.col("first") == "delete") & (F.col("last") == "delete"))
    return entered.select("customer_id"), exited.select("customer_id")


# ---------------------------------------------------------------------------------------------- IO


def read_changes(spark: SparkSession, after: int, up_to: int) -> DataFrame:
    """The membership's change-feed rows of the versions after `after` up to `up_to`."""
    return (spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", after + 1)
            .option("endingVersion", up_to).load(location(spark, AUDIENCE_MEMBERSHIP)))


def members_at(spark: SparkSession, audience: str, version: int) -> DataFrame:
    """(customer_id, entered_on) of the audience's members at a version of the membership."""
    return (spark.read.format("delta").option("versionAsOf", version).load(location(spark, AUDIENCE_MEMBERSHIP))
            .where(F.col("audience") == audience).select("customer_id", "entered_on"))


def changes_since(spark: SparkSession, audience: str, ack: Row, version: int, members: DataFrame,
                  sent: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(entered, exited) customer ids since the acknowledged version, from the change feed. An erasure
    vacuums the membership, and with it the change files of earlier versions: then the same is found
    by comparing today's members with the members last sent (`sent`)."""
    try:
        entered, exited = net_changes(read_changes(spark, ack["acknowledged_version"], version), audience)
        return entered.localCheckpoint(), exited.localCheckpoint()
    except (PySparkException, Py4JJavaError) as exc:
        reason = exc.java_exception.toString() if isinstance(exc, Py4JJavaError) else str(exc)
        log.warning("audience %s: the change feed after version %s is not readable (%s); comparing today's "
                    "members with those last sent", audience, ack["acknowledged_version"], reason.splitlines()[0])
        now, before = members.select("customer_id"), sent.select("customer_id")
        return now.subtract(before), before.subtract(now)


def _ack_row(audience: AudienceConfig, run: SyncRun, version: int, manifest: dict[str, Any] | None,
             previous: Row | None, rows: dict[str, int], now: datetime) -> tuple:
    if manifest is None:    # nothing sent: the destination still holds the last export's members
        path, fmt, columns = (previous["members_path"], previous["format"], previous["columns"]) if previous \
            else (None, None, None)
        export_id = previous["export_id"] if previous else None
    else:
        export_id, fmt, columns = manifest["export_id"], manifest["format"], manifest["columns"]
        path = str(run.out_dir / audience.name / export_id / "members")
    return (audience.name, audience.destination, version, run.as_of, now, export_id, path, fmt,
            columns, rows.get("entered", 0), rows.get("exited", 0), rows.get("members", 0))


def acknowledge(spark: SparkSession, record: Record, row: tuple) -> None:
    """Record what the destination now holds (after its export is in place)."""
    record(spark.createDataFrame([row], AUDIENCE_SYNCS.struct), AUDIENCE_SYNCS,
           f"audience = {sql_literal(row[0])} AND destination = {sql_literal(row[1])}")


def audit(spark: SparkSession, record: Record, audience: AudienceConfig, run: SyncRun, manifest: dict[str, Any],
          from_version: int | None, to_version: int, now: datetime) -> None:
    """One ops.audience_exports row: who published what, and every file's checksum (manifest.json too)."""
    folder = run.out_dir / audience.name / manifest["export_id"]
    files = [(f["path"], f["sha256"]) for entries in manifest["files"].values() for f in entries]
    files.append((export.MANIFEST_FILE, export.sha256_file(folder / export.MANIFEST_FILE)))
    rows = manifest["rows"]
    row = (manifest["export_id"], audience.name, audience.destination, audience.condition, run.as_of,
           run.exported_by, run.run_id, now, from_version, to_version, rows["entered"], rows["exited"],
           rows["members"], audience.format, files)
    record(spark.createDataFrame([row], AUDIENCE_EXPORTS.struct), AUDIENCE_EXPORTS,
           f"export_id = {sql_literal(manifest['export_id'])}")


def sync_audience(spark: SparkSession, audience: AudienceConfig, policy: ExportPolicy, rows: DataFrame,
                  erased: DataFrame, version: int, ack: Row | None, run: SyncRun, record: Record) -> dict[str, Any]:
    """Publish the audience's changes since `ack` (its ops.audience_syncs row, None before the first sync) up to
    membership `version`, which already holds today's members; then audit and acknowledge. `rows` are today's
    exportable rows (`exportable`). Returns the rows sent, or why nothing was."""
    if ack is not None and ack["acknowledged_version"] >= version:
        return {"sent": "nothing new"}
    now = datetime.now(UTC)
    members = members_at(spark, audience.name, version)
    full = rows.drop("entered_on").join(members, "customer_id").select(*policy.columns)
    contact = ["customer_id", *policy.contact_columns]
    if ack is None:     # a first sync: every member enters
        entered, exited = full, spark.createDataFrame([], full.select(*contact).schema)
    else:
        sent = export.read_export_file(spark, Path(ack["members_path"]), ack["format"], ack["columns"])
        entered_ids, exited_ids = changes_since(spark, audience.name, ack, version, members, sent)
        entered = full.join(entered_ids, "customer_id", "left_semi")
        exited = (sent.join(exited_ids, "customer_id", "left_semi")
                  .join(erased.select("customer_id"), "customer_id", "left_anti").select(*contact))
        if entered.isEmpty() and exited.isEmpty():
            acknowledge(spark, record, _ack_row(audience, run, version, None, ack,
                                                {"members": ack["members_rows"]}, now))
            return {"sent": "nothing new"}
    export_id = "-".join([audience.name, audience.destination, run.as_of.isoformat(),
                          now.strftime("%Y%m%dT%H%M%S%fZ")])
    from_version = None if ack is None else ack["acknowledged_version"]
    manifest = export.publish(run.out_dir / audience.name, export_id,
                              dict(zip(DATA_FOLDERS, (entered, exited, full))), audience.format, {
        "export_id": export_id,
        "created_at": now.isoformat(),
        "as_of_date": run.as_of.isoformat(),
        "audience": audience.model_dump(),
        "destination": audience.destination,
        "policy": asdict(policy),
        "format": audience.format,
        "columns": policy.columns,
        "versions": {"table": AUDIENCE_MEMBERSHIP.name, "after": from_version, "up_to": version},
        "exported_by": run.exported_by,
    })
    audit(spark, record, audience, run, manifest, from_version, version, now)
    acknowledge(spark, record, _ack_row(audience, run, version, manifest, ack, manifest["rows"], now))
    return {**manifest["rows"], "export_id": export_id}
