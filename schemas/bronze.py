"""Bronze: every raw source as landed, typed by its contract, with ingestion metadata."""

from __future__ import annotations

from schemas import C, Column, Table
from schemas.raw import SOURCES, RawSource

METADATA = (
    C("extra_fields", "map<string,string>", True, "fields beyond the contract (schema drift), as text"),
    C("_source_file", "string", False),
    C("_line_number", "long", False),
    C("_batch_id", "string", False, "landing folder name (the batch date)"),
    C("_run_id", "string", False),
    C("_ingested_at", "timestamp", False),
    C("_content_hash", "long", False, "xxhash64 of the raw line; exact copies share it"),
)


def bronze_table(source: RawSource) -> Table:
    columns: tuple[Column, ...] = tuple(source.columns) + METADATA
    return Table(
        name=f"bronze.{source.name}",
        doc=f"{source.doc} As landed; one row per distinct raw line.",
        keys=("_content_hash",),
        partition_by=("_batch_id",),
        columns=columns,
    )


TABLES = {name: bronze_table(source) for name, source in SOURCES.items()}
