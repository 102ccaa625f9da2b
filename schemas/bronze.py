"""Bronze: every raw source as landed, typed by its contract, with ingestion metadata."""

from __future__ import annotations

from schemas import C, Column, Table, is_personal
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


def sealed_columns(source: RawSource) -> dict[str, str]:
    """The personal fields of a source (name -> its contract's type), which bronze holds encrypted."""
    return {c.name: c.type for c in source.columns if is_personal(c.name)}


def _as_stored(column: Column, source: RawSource) -> Column:
    if not is_personal(column.name):
        return column
    return C(column.name, "binary", column.nullable,
             f"ENCRYPTED (AES-256-GCM, associated data '{source.name}|<{source.record_id}>|{column.name}'): "
             f"{column.doc or column.type}")


def bronze_table(source: RawSource) -> Table:
    columns: tuple[Column, ...] = tuple(_as_stored(c, source) for c in source.columns) + METADATA
    return Table(
        name=f"bronze.{source.name}",
        doc=f"{source.doc} As landed; one row per distinct raw line.",
        keys=("_content_hash",),
        partition_by=("_batch_id",),
        columns=columns,
    )


TABLES = {name: bronze_table(source) for name, source in SOURCES.items()}
