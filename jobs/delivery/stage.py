"""The delivery stages of the daily DAG: the audience syncs and the run report. Both write files: an
export appears whole (renamed into place with its manifest), the report atomically."""

from __future__ import annotations

from jobs.delivery.audience import audience_view, check_conditions
from jobs.delivery.erasure import erased_ids
from jobs.delivery.export import ExportPolicy
from jobs.delivery.report import build_report
from jobs.delivery.sync import SyncRun, exportable, membership_rows, sync_audience
from jobs.platform import pii
from jobs.platform.context import RunContext
from jobs.platform.tables import sql_literal, table_version
from schemas import gold, silver
from schemas.ops import AUDIENCE_SYNCS, ERASURES


def run_export(ctx: RunContext) -> dict[str, object]:
    """Sync the audiences (conf/audiences.yaml) whose schedule names the date: every condition is checked
    first, then the members of those due are MERGEd into gold.audience_membership at once, and each
    audience's changes since its destination's acknowledged version are published into
    <paths.exports>/<audience>/ (jobs/delivery/sync.py). An audience acknowledged for the date (or a later
    one) is not synced again: a rerun sends nothing new, and a sync that failed before its acknowledgement
    is sent by the rerun."""
    settings, spark = ctx.settings, ctx.spark
    audiences = settings.export.audiences
    check_conditions(spark, audiences)          # before any data is read
    acks = {(r.audience, r.destination): r for r in ctx.read(AUDIENCE_SYNCS).collect()}   # a row per audience
    synced = {a.name for a in audiences if (a.name, a.destination) in acks
              and acks[(a.name, a.destination)].as_of_date >= ctx.as_of}
    due = [a for a in audiences if a.due(ctx.as_of) and a.name not in synced]
    summary: dict[str, object] = {a.name: "not scheduled today" for a in audiences if not a.due(ctx.as_of)}
    summary |= {name: {"sent": "synced for the date before"} for name in synced}
    if not due:
        return summary
    view = audience_view(ctx.read(gold.CUSTOMER_PROFILE), ctx.read(gold.CUSTOMER_VALUE),
                         ctx.read(gold.CUSTOMER_SEGMENTS), ctx.as_of).localCheckpoint()
    erased = erased_ids(ctx.read(ERASURES)).localCheckpoint()     # erased people are never exported
    graph, vault = ctx.read(gold.IDENTITY_GRAPH), ctx.read(silver.PII_VAULT)
    key = pii.pii_keys(settings).encryption_key
    policies = {a.name: ExportPolicy.from_conf(settings.export.destinations, a.destination) for a in due}
    rows = {a.name: exportable(view, a, policies[a.name], erased, graph, vault, key,
                               settings.cleanse.default_phone_region, ctx.as_of).localCheckpoint() for a in due}
    names = ", ".join(sql_literal(a.name) for a in due)
    staged = ctx.stage_merge(membership_rows(rows), gold.AUDIENCE_MEMBERSHIP, update_when="false",
                             update_columns=["entered_on"], delete_missing=f"t.audience IN ({names})")
    ctx.gate({gold.AUDIENCE_MEMBERSHIP: staged})
    ctx.publish()
    version = table_version(spark, gold.AUDIENCE_MEMBERSHIP)
    run = SyncRun(ctx.as_of, ctx.run_id, ctx.requested_by, settings.paths.exports)
    for audience in due:
        summary[audience.name] = sync_audience(spark, audience, policies[audience.name], rows[audience.name], erased,
                                               version, acks.get((audience.name, audience.destination)), run,
                                               ctx.record)
    return summary


def run_report(ctx: RunContext) -> dict[str, object]:
    """The run's static HTML report (charts of what the run published), last in the daily DAG."""
    return {"report": str(build_report(ctx.spark, ctx.settings, ctx.as_of, ctx.run_id))}
