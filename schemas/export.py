"""Marketing exports (`cdp export`, audience syncs): the columns of the exported files and the keys of their manifest.

A segment export (`cdp export`) is a folder `<out>/<export_id>/` with `manifest.json` and the data folders
`members/` (every exported member), `added/` and `removed/` (the change since the previous export of the
same segment to the same destination), each one file in the export's format. An audience sync (the daily
export stage) is a folder `<paths.exports>/<audience>/<export_id>/` with `entered/` and `exited/` (the
change since the destination's last acknowledged sync: `entered/` as `members/`, `exited/` as `removed/`,
with the contact points the destination was sent) and `members/`; its manifest names the audience (its
condition and schedule) instead of a segment, and the membership versions sent (`versions`:
`after`, `up_to`) instead of a previous export.
"""

from __future__ import annotations

from schemas import C, Column, Table

EXPORT_FILE = Table(
    name="export.members",
    doc="Consenting members of one segment as of one date, for one destination. The contact columns are "
        "those of the destination's policy (conf export.destinations): raw for owned channels, hashed for "
        "ad-platform audiences. added/ and removed/ hold customer_id and the contact columns only.",
    keys=("customer_id",),
    columns=(
        C("customer_id", "string", False, "gold customer id (gold.identity_graph)"),
        C("entered_on", "date", False, "first as-of date of the current uninterrupted membership"),
        C("email", "string", doc="raw policy: standardised e-mail, decrypted from silver.pii_vault"),
        C("phone", "string", doc="raw policy: E.164 phone, decrypted from silver.pii_vault"),
        C("email_sha256", "string", doc="hashed policy: SHA-256 hex of the e-mail, trimmed and lower-cased"),
        C("phone_sha256", "string", doc="hashed policy: SHA-256 hex of the phone in E.164"),
    ),
)

MANIFEST: tuple[Column, ...] = (
    C("export_id", "string", False, "<destination>-<segment type>-<segment>-<as-of>-<created at>, the folder name"),
    C("created_at", "timestamp", False, "UTC, ISO 8601"),
    C("as_of_date", "date", False, "membership date exported"),
    C("segment", "struct", False, "definition: source table, segment_type, segment"),
    C("destination", "string", False),
    C("policy", "struct", False, "the destination's contact, fields and consent, as configured"),
    C("format", "string", False, "csv (with header) or parquet"),
    C("columns", "array<string>", False, "columns of members/"),
    C("previous_export", "string", doc="export_id the delta files compare with; null for the first"),
    C("rows", "map<string,long>", False, "rows of members, added and removed"),
    C("excluded", "map<string,long>", False, "segment members not exported: no_consent, erased, no_contact"),
    C("files", "map<string,array<struct>>", False, "per data folder: each file's relative path and SHA-256"),
)
