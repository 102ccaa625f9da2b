"""The delivery stages of the daily DAG: the scheduled marketing exports and the run report. Both
write files, not tables: an export appears whole (renamed into place with its manifest), the report
atomically."""

from __future__ import annotations

from jobs.delivery.erasure import erased_ids
from jobs.delivery.export import export_segment, known_segments, read_manifests
from jobs.delivery.report import build_report
from jobs.platform.context import RunContext
from jobs.segments.segmentation import SEGMENT_COLUMNS
from schemas import gold
from schemas.ops import ERASURES


def run_export(ctx: RunContext) -> dict[str, object]:
    """Publish the segment exports of conf `export.scheduled` as of the date into <paths.exports>. A
    (segment, destination, date) exported before is not exported again, so a rerun is a no-op; a segment
    with no members on the date is reported, not exported."""
    out = ctx.settings.paths.exports
    done = {(m["segment"]["segment_type"], m["segment"]["segment"], m["destination"], m["as_of_date"])
            for m in read_manifests(out)} if out.is_dir() else set()
    known = known_segments(ctx.read(gold.SEGMENT_MEMBERSHIP), ctx.as_of)
    erased = erased_ids(ctx.read(ERASURES))    # erased people are never exported
    summary: dict[str, object] = {}
    for job in ctx.settings.export.scheduled:
        segment_type, segment, destination = job.segment_type, job.segment, job.destination
        if segment_type not in SEGMENT_COLUMNS:
            raise ValueError(f"export.scheduled: unknown segment type {segment_type!r}; types: {SEGMENT_COLUMNS}")
        name = f"{segment_type}={segment}->{destination}"
        if (segment_type, segment, destination, ctx.as_of.isoformat()) in done:
            summary[name] = "exported before"
        elif (segment_type, segment) not in known:
            summary[name] = "no members"    # a segment may be empty on a day: nothing to send
        else:
            summary[name] = export_segment(ctx.spark, ctx.settings, segment_type, segment, ctx.as_of, destination,
                                           job.format, out, erased, read=ctx.read)["rows"]
    return summary


def run_report(ctx: RunContext) -> dict[str, object]:
    """The run's static HTML report (charts of what the run published), last in the daily DAG."""
    return {"report": str(build_report(ctx.spark, ctx.settings, ctx.as_of, ctx.run_id))}
