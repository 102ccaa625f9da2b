"""Marketing exports: the consenting members of a segment, with their contact points, for one destination.

`export_segment` reads gold.segment_membership as of a date, keeps the customers whose consent the
destination's policy requires (conf `export.destinations`; consent is read from the current
gold.customer_profile, so a withdrawal applies to every export made after it, back-dated ones
included) and who are not erased, and attaches the contact fields of the policy: `raw`, decrypted
from silver.pii_vault (owned channels), or `hashed`, normalised and SHA-256 hex (ad-platform
audiences, which match on such hashes). Files and layout: `schemas/export.py`.

Publication is atomic: everything is written into a hidden temporary folder inside the output folder,
then renamed into place, so a reader sees a whole export or none. Each export also holds the
customers added and removed since the previous export of the same segment to the same destination
(found through the manifests in the output folder), so a destination can be updated incrementally;
the removed file carries the contact points the destination has, which it needs to delete them.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, get_args

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.cleanse import standardise
from jobs.cleanse.sources import first_per_key
from jobs.platform import pii
from jobs.platform.config import Settings
from jobs.platform.settings import DestinationConfig, ExportFormat
from schemas import Table
from schemas.export import EXPORT_FILE
from schemas.gold import CUSTOMER_PROFILE, IDENTITY_GRAPH, SEGMENT_MEMBERSHIP
from schemas.silver import PII_VAULT

FORMATS: tuple[str, ...] = get_args(ExportFormat)
DATA_FOLDERS = ("members", "added", "removed")
MANIFEST_FILE = "manifest.json"


class ExportError(ValueError):
    """The export cannot be made as asked: unknown segment, destination or format."""


@dataclass(frozen=True)
class ExportPolicy:
    """What a destination receives: contact `raw` or `hashed`, which fields, and the consent required."""

    destination: str
    contact: str
    fields: tuple[str, ...]
    consent: tuple[str, ...]

    @classmethod
    def from_conf(cls, destinations: Mapping[str, DestinationConfig], destination: str) -> ExportPolicy:
        """The policy of `destination` (conf `export.destinations`, whose modes, fields and consent
        DestinationConfig has checked)."""
        if destination not in destinations:
            raise ExportError(f"unknown destination {destination!r}; configured: {sorted(destinations)}")
        conf = destinations[destination]
        return cls(destination, conf.contact, conf.fields, conf.consent)

    @property
    def contact_columns(self) -> list[str]:
        return [f if self.contact == "raw" else f"{f}_sha256" for f in self.fields]

    @property
    def columns(self) -> list[str]:
        return ["customer_id", "entered_on", *self.contact_columns]


# ---------------------------------------------------------------------------------------------- transforms


def segment_members(membership: DataFrame, segment_type: str, segment: str, as_of: date) -> DataFrame:
    """(customer_id, entered_on) of the segment's members as of `as_of`."""
    return membership.where((F.col("as_of_date") == F.lit(as_of)) & (F.col("segment_type") == segment_type)
                            & (F.col("segment") == segment)).select("customer_id", "entered_on")


def consent_given(channel: str) -> Column:
    """Consent to marketing on `channel`, from a profile row's golden record. Unknown (null) is no consent;
    an e-mail unsubscribe overrides the e-mail opt-in."""
    if channel == "email":
        return F.coalesce(F.col("email_opt_in"), F.lit(False)) & ~F.col("unsubscribed")
    return F.coalesce(F.col("sms_opt_in"), F.lit(False))


def consenting(members: DataFrame, profile: DataFrame, consent: tuple[str, ...], erased: DataFrame) -> DataFrame:
    """The members that have every consent of `consent` and are not in `erased` (customer_id), with the
    profile's masked contact points; a member without a profile has no known consent and is dropped."""
    allowed = F.lit(True)
    for channel in consent:
        allowed = allowed & consent_given(channel)
    profile = profile.where(allowed).select("customer_id", "email_masked", "phone_masked")
    return members.join(profile, "customer_id").join(erased.select("customer_id"), "customer_id", "left_anti")


def contact_points(customers: DataFrame, graph: DataFrame, vault: DataFrame, encryption_key: bytes) -> DataFrame:
    """`customers` (customer_id, email_masked, phone_masked, ...) with `email` and `phone` decrypted from the
    vault. A customer's contact points are those of the e-mail and phone nodes of the identity graph; of
    several, the one the golden record shows (same mask) wins, then the smallest. Only these customers'
    values are decrypted."""
    nodes = graph.join(customers.select("customer_id"), "customer_id").select(
        "customer_id", "node_type", F.substring_index("node", ":", -1).alias("key"))
    result = customers
    for field, mask in (("email", pii.mask_email), ("phone", pii.mask_phone)):
        # Several vault rows can hold one value (a contact's and the e-mail directory's); one is enough.
        ciphers = first_per_key(
            vault.where(F.col(f"{field}_key").isNotNull() & F.col(f"{field}_enc").isNotNull()).select(
                F.col(f"{field}_key").alias("key"), F.col(f"{field}_enc").alias("enc"),
                F.concat_ws("|", "source", "record_id", F.lit(field)).alias("context")),
            ["key"], [F.col("context")])
        values = (nodes.where(F.col("node_type") == field).join(ciphers, "key")
                  .select("customer_id", pii.decrypt(F.col("enc"), F.col("context"), encryption_key).alias(field)))
        golden = F.coalesce(mask(F.col(field)) == F.col(f"{field}_masked"), F.lit(False))
        chosen = first_per_key(values.join(customers.select("customer_id", f"{field}_masked"), "customer_id"),
                               ["customer_id"], [golden.desc(), F.col(field)])
        result = result.join(chosen.select("customer_id", field), "customer_id", "left")
    return result


def export_rows(members: DataFrame, policy: ExportPolicy, default_phone_region: str) -> DataFrame:
    """The rows a destination receives (policy.columns): raw contact points, or SHA-256 hex of the e-mail
    trimmed and lower-cased and of the phone in E.164, as ad platforms hash them. Members with none of the
    policy's fields are left out: there is nothing to reach them by."""
    normalised = {"email": F.lower(F.trim(F.col("email"))),
                  "phone": standardise.phone_e164(F.col("phone"), default_phone_region)}
    contact = [F.col(f) if policy.contact == "raw" else F.sha2(normalised[f], 256).alias(f"{f}_sha256")
               for f in policy.fields]
    rows = members.select("customer_id", "entered_on", *contact)
    return rows.where(F.coalesce(*[F.col(c) for c in policy.contact_columns]).isNotNull())


# OWASP's CSV-injection rule: a cell starting with one of these is a formula to a spreadsheet.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


# A plain number (an E.164 phone: +12125550100) carries no formula: left as it is, so that machine
# destinations get the phone they can dial and match.
PLAIN_NUMBER = r"^[+-]?[0-9]+(\.[0-9]+)?$"


def neutralise_formulas(df: DataFrame) -> DataFrame:
    """Every text value that a spreadsheet would run as a formula, prefixed with a single quote (OWASP), so
    that a CSV export opened by a marketer shows the text instead of running it. Plain numbers are left."""
    starts_a_formula = "^[" + "".join(re.escape(c) for c in FORMULA_STARTS) + "]"
    return df.select(*[
        F.when(F.col(f.name).rlike(starts_a_formula) & ~F.col(f.name).rlike(PLAIN_NUMBER),
               F.concat(F.lit("'"), F.col(f.name)))
        .otherwise(F.col(f.name)).alias(f.name) if isinstance(f.dataType, T.StringType) else F.col(f.name)
        for f in df.schema.fields])


def changes(current: DataFrame, previous: DataFrame, columns: list[str]) -> tuple[DataFrame, DataFrame]:
    """(added, removed) between two exports, compared on `columns` (customer_id and the contact columns): a
    changed contact point is removed in its old form and added in its new one."""
    now, before = current.select(*columns), previous.select(*columns)
    return now.subtract(before), before.subtract(now)


def empty_erasures(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([], T.StructType([T.StructField("customer_id", T.StringType(), False)]))


# ---------------------------------------------------------------------------------------------- IO


def latest_membership_date(membership: DataFrame) -> date:
    latest = membership.agg(F.max("as_of_date")).first()[0]
    if latest is None:
        raise ExportError(f"{SEGMENT_MEMBERSHIP.name} is empty: run the segments stage first")
    return latest


def known_segments(membership: DataFrame, as_of: date) -> set[tuple[str, str]]:
    """(segment_type, segment) of every segment with members as of `as_of` (a few hundred at most)."""
    return {(r.segment_type, r.segment) for r in membership.where(F.col("as_of_date") == F.lit(as_of))
            .select("segment_type", "segment").distinct().collect()}


def check_segment(membership: DataFrame, segment_type: str, segment: str, as_of: date) -> None:
    """Fail naming what exists when the segment has no membership as of `as_of`."""
    known = known_segments(membership, as_of)
    if not known:
        raise ExportError(f"{SEGMENT_MEMBERSHIP.name} has no rows as of {as_of}")
    types = sorted({t for t, _ in known})
    if segment_type not in types:
        raise ExportError(f"unknown segment type {segment_type!r} as of {as_of}; known: {types}")
    if (segment_type, segment) not in known:
        names = sorted(s for t, s in known if t == segment_type)
        raise ExportError(f"unknown segment {segment!r} of {segment_type} as of {as_of}; known: {names}")


def read_manifests(out_dir: Path) -> list[dict[str, Any]]:
    """Manifests of the published exports in `out_dir` (temporary folders start with '.' and are skipped)."""
    return [json.loads(p.read_text()) for p in sorted(out_dir.glob(f"*/{MANIFEST_FILE}"))
            if not p.parent.name.startswith(".")]


def previous_export(out_dir: Path, segment_type: str, segment: str, destination: str) -> dict[str, Any] | None:
    """The latest published export of this segment to this destination: what the destination has now."""
    same = [m for m in read_manifests(out_dir) if m["destination"] == destination
            and (m["segment"]["segment_type"], m["segment"]["segment"]) == (segment_type, segment)]
    return max(same, key=lambda m: m["created_at"], default=None)


def _read_members(spark: SparkSession, out_dir: Path, manifest: dict[str, Any]) -> DataFrame:
    return read_export_file(spark, out_dir / manifest["export_id"] / "members", manifest["format"],
                            manifest["columns"])


def read_export_file(spark: SparkSession, path: Path, fmt: str, columns: list[str]) -> DataFrame:
    """A published data folder (`columns` of schemas/export.py's file, in `fmt`) as a DataFrame."""
    if fmt == "parquet":
        return spark.read.parquet(str(path))
    schema = T.StructType([EXPORT_FILE.column(c).field for c in columns])
    return spark.read.schema(schema).option("header", True).csv(str(path))


def _write(df: DataFrame, path: Path, fmt: str) -> None:
    # One file per folder: destinations upload a file, and a segment fits one.
    writer = df.coalesce(1).write.mode("error")
    if fmt == "csv":
        # Values leave as they are (Spark's CSV writer trims them by default).
        writer.options(header=True, ignoreLeadingWhiteSpace=False, ignoreTrailingWhiteSpace=False).csv(str(path))
    else:
        writer.parquet(str(path))
    for marker in [*path.glob("_*"), *path.glob(".*.crc")]:  # Hadoop's markers and checksums stay home
        marker.unlink()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entries(export_dir: Path, folder: str) -> list[dict[str, str]]:
    return [{"path": str(p.relative_to(export_dir)), "sha256": sha256_file(p)}
            for p in sorted((export_dir / folder).iterdir())]


def write_manifest(export_dir: Path, manifest: dict[str, Any]) -> None:
    (export_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str) + "\n")


def publish(out_dir: Path, export_id: str, frames: Mapping[str, DataFrame], fmt: str, manifest: dict[str, Any],
            more: Callable[[dict[str, int]], dict[str, Any]] = lambda counts: {}) -> dict[str, Any]:
    """Write each frame into its folder of a new export `out_dir/export_id`, with `manifest.json`: `manifest`,
    the rows and the SHA-256 of every file, and what `more` adds given the rows. Everything is written into a
    hidden temporary folder first and renamed into place (atomic on one file system): a reader sees the
    whole export or none, and a failure leaves nothing behind. Returns the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{export_id}-", dir=out_dir))
    try:
        counts = {}
        for folder, frame in frames.items():
            _write(frame, staging / folder, fmt)
            counts[folder] = frame.count()
        manifest = {**manifest, "rows": counts, **more(counts),
                    "files": {folder: file_entries(staging, folder) for folder in frames}}
        write_manifest(staging, manifest)
        staging.rename(out_dir / export_id)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def export_segment(spark: SparkSession, settings: Settings, segment_type: str, segment: str, as_of: date | None,
                   destination: str, fmt: str, out_dir: Path, erased: DataFrame | None = None,
                   created_at: datetime | None = None,
                   read: Callable[[Table], DataFrame] | None = None) -> dict[str, Any]:
    """Export the consenting members of a segment as of `as_of` (default: the latest membership) for
    `destination` into a new folder of `out_dir`; returns the manifest, with the export's `path`.

    `erased` (customer_id) is the hook for erasure requests: those customers never leave, whatever
    their consent. Empty by default, until an erasure table exists. `read` opens a table (the daily
    export stage passes its run's reader, which opens only what the stage declares).
    """
    read = read or (lambda table: spark.table(table.name))
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; use one of {FORMATS}")
    policy = ExportPolicy.from_conf(settings.export.destinations, destination)
    membership = read(SEGMENT_MEMBERSHIP)
    as_of = as_of or latest_membership_date(membership)
    check_segment(membership, segment_type, segment, as_of)
    created_at = created_at or datetime.now(UTC)
    erased = empty_erasures(spark) if erased is None else erased

    members = segment_members(membership, segment_type, segment, as_of).persist()
    allowed = consenting(members, read(CUSTOMER_PROFILE), policy.consent, erased).persist()
    with_contacts = contact_points(allowed, read(IDENTITY_GRAPH), read(PII_VAULT),
                                   pii.pii_keys(settings).encryption_key)
    rows = export_rows(with_contacts, policy, settings.cleanse.default_phone_region)
    # Neutralised before the comparison with the previous export, which was written (and is read) so.
    rows = (neutralise_formulas(rows) if fmt == "csv" else rows).persist()
    previous = previous_export(out_dir, segment_type, segment, destination)
    before = (_read_members(spark, out_dir, previous) if previous
              else spark.createDataFrame([], T.StructType([EXPORT_FILE.column(c).field for c in policy.columns])))
    added, removed = changes(rows, before, ["customer_id", *policy.contact_columns])

    export_id = "-".join([destination, _slug(segment_type), _slug(segment), as_of.isoformat(),
                          created_at.strftime("%Y%m%dT%H%M%S%fZ")])
    try:
        n_members, n_allowed = members.count(), allowed.count()
        n_erased = members.join(erased.select("customer_id"), "customer_id", "left_semi").count()
        manifest = publish(out_dir, export_id, dict(zip(DATA_FOLDERS, (rows, added, removed))), fmt, {
            "export_id": export_id,
            "created_at": created_at.isoformat(),
            "as_of_date": as_of.isoformat(),
            "segment": {"table": SEGMENT_MEMBERSHIP.name, "segment_type": segment_type, "segment": segment},
            "destination": destination,
            "policy": asdict(policy),
            "format": fmt,
            "columns": policy.columns,
            "previous_export": previous["export_id"] if previous else None,
        }, lambda counts: {
            # An erased member is counted as erased, whatever their consent.
            "excluded": {"no_consent": n_members - n_erased - n_allowed, "erased": n_erased,
                         "no_contact": n_allowed - counts["members"]}})
    finally:
        for frame in (members, allowed, rows):
            frame.unpersist()
    return {**manifest, "path": str(out_dir / export_id)}
