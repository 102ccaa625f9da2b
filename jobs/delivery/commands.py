"""`cdp audience list` and `cdp audience preview`: what marketers see of their audiences, as text."""

from __future__ import annotations

from datetime import date
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.platform.config import Settings
from jobs.platform.tables import table_exists
from schemas import gold
from schemas.ops import AUDIENCE_SYNCS


class AudienceCommandError(ValueError):
    """An audience command cannot answer: unknown audience, nothing published yet."""


def list_audiences(settings: Settings) -> str:
    """Every configured audience with its destination, format, schedule and last sync (read with delta-rs:
    no Spark, no metastore lock)."""
    from jobs.delivery.serving import read_table, table_path

    syncs: dict[tuple[str, str], dict[str, Any]] = {}
    if (table_path(settings.paths.warehouse, AUDIENCE_SYNCS) / "_delta_log").is_dir():
        frame = read_table(settings.paths.warehouse, AUDIENCE_SYNCS)
        syncs = {(r["audience"], r["destination"]): r for r in frame.to_dict("records")}
    lines = [f"{'audience':28} {'destination':16} {'format':8} {'schedule':16} last sync"]
    for audience in settings.export.audiences:
        sync = syncs.get((audience.name, audience.destination))
        last = "never" if sync is None else (
            f"version {sync['acknowledged_version']} at {sync['synced_at']:%Y-%m-%d %H:%M:%S} for "
            f"{sync['as_of_date']}: {sync['entered_rows']} entered, {sync['exited_rows']} exited, "
            f"{sync['members_rows']} members ({sync['export_id'] or 'nothing sent'})")
        lines.append(f"{audience.name:28} {audience.destination:16} {audience.format:8} {audience.schedule:16} {last}")
        lines.append(f"{'':28} {audience.condition}")
    return "\n".join(lines)


def latest_scored_date(spark: SparkSession) -> date:
    if not table_exists(spark, gold.CUSTOMER_SEGMENTS.name):
        raise AudienceCommandError(f"{gold.CUSTOMER_SEGMENTS.name} does not exist: run the pipeline first")
    latest = spark.table(gold.CUSTOMER_SEGMENTS.name).agg(F.max("as_of_date")).first()[0]
    if latest is None:
        raise AudienceCommandError(f"{gold.CUSTOMER_SEGMENTS.name} is empty: run the segments stage first")
    return latest


def preview_audience(spark: SparkSession, settings: Settings, name: str, as_of: date | None) -> str:
    """`cdp audience preview`: size, overlaps, segments and a masked sample of an audience; exports nothing."""
    from jobs.delivery.audience import audience_view, check_conditions, preview
    from jobs.delivery.erasure import erased_customers

    audiences = settings.export.audiences
    if name not in {a.name for a in audiences}:
        raise AudienceCommandError(f"unknown audience {name!r}; audiences: {', '.join(a.name for a in audiences)}")
    check_conditions(spark, audiences)
    as_of = as_of or latest_scored_date(spark)
    tables = [gold.CUSTOMER_PROFILE, gold.CUSTOMER_VALUE, gold.CUSTOMER_SEGMENTS]
    missing = [t.name for t in tables if not table_exists(spark, t.name)]
    if missing:
        raise AudienceCommandError(f"{', '.join(missing)} missing: run the pipeline first")
    view = audience_view(*(spark.table(t.name) for t in tables), as_of)
    result = preview(view, audiences, name, settings.export.destinations, erased_customers(spark))
    return format_preview(result, as_of)


def format_preview(result: dict[str, Any], as_of: date) -> str:
    lines = [f"audience {result['audience']} as of {as_of} -> {result['destination']}",
             f"  condition: {result['condition']}",
             f"  members: {result['size']}, of whom {result['with_consent']} with the destination's consent "
             "(erased customers left out; members without a contact point are left out when exported)",
             "  overlap: " + (", ".join(f"{k} {v}" for k, v in result["overlap"].items()) or "no other audience")]
    for segment, sizes in result["by_segment"].items():
        lines.append(f"  by {segment}: " + (", ".join(f"{k} {v}" for k, v in sizes.items()) or "-"))
    lines.append("  sample (contact points masked):")
    for row in result["sample"]:
        clv = "-" if row["clv"] is None else f"{row['clv']:.2f}"
        lines.append(f"    {row['customer_id']:24} {row['email_masked'] or '-':28} {row['phone_masked'] or '-':10} "
                     f"{row['lifecycle_stage'] or '-':10} {row['rfm_segment'] or '-':20} clv {clv}")
    return "\n".join(lines)
