"""`cdp docs`: render `docs/tables.md` from `schemas/`, so people read what code uses."""

from __future__ import annotations

from pathlib import Path

from schemas import Column, Table, audience, bronze, export, gold, ops, silver
from schemas.raw import CONTACT_LIST, DIALECTS, SOURCES


def _column_rows(columns: tuple[Column, ...], required_word: str) -> list[str]:
    rows = ["| column | type | " + required_word + " | meaning |", "|---|---|---|---|"]
    for c in columns:
        flag = "" if c.nullable else "yes"
        valid = "; ".join(f"{f'`{r.field}` ' if r.field else ''}{r.describe()}" for r in c.ranges)
        meaning = "; ".join(p for p in (c.doc, f"valid: {valid}" if valid else "") if p)
        rows.append(f"| `{c.name}` | `{c.type}` | {flag} | {meaning} |")
    return rows


def _table_section(table: Table) -> list[str]:
    grain = ", ".join(f"`{k}`" for k in table.keys) or "—"
    parts = [f"### `{table.name}`", "", table.doc, "", f"Grain: {grain}."]
    if table.partition_by:
        parts[-1] += " Partitioned by " + ", ".join(f"`{p}`" for p in table.partition_by) + "."
    return [*parts, "", *_column_rows(table.columns, "not null"), ""]


def render_tables_doc() -> str:
    lines = ["# Tables", "", "Generated from `schemas/` by `cdp docs`; do not edit by hand.", "",
             "## Raw sources (landing contracts)", ""]
    for source in SOURCES.values():
        lines += [f"### `{source.name}` ({source.format})", "", source.doc, "",
                  f"Record key `{source.record_id}`, dated by `{source.timestamp}` ({source.timezone}).", "",
                  f"Dialect: {DIALECTS[source.format]}", "",
                  *_column_rows(source.columns, "required"), ""]
    lines += ["## Contact lists (`cdp resolve`)", "", f"### `{CONTACT_LIST.name}` ({CONTACT_LIST.format})", "",
              CONTACT_LIST.doc, "", *_column_rows(CONTACT_LIST.columns, "required"), ""]
    lines += ["## Bronze", "", "Every raw source, as landed: its contract's columns plus "
              + ", ".join(f"`{c.name}`" for c in bronze.METADATA) + ".", ""]
    lines += _table_section(bronze.TABLES["orders"])
    for title, tables in (("Silver", silver.TABLES), ("Gold", gold.TABLES), ("Operations", ops.TABLES)):
        lines += [f"## {title}", ""]
        for table in tables:
            lines += _table_section(table)
    lines += ["## Marketing exports (`cdp export`)", "", export.__doc__.split("\n\n", 1)[1].strip(), "",
              *_table_section(export.EXPORT_FILE), "#### `manifest.json`", "",
              *_column_rows(export.MANIFEST, "always"), ""]
    lines += ["## Audience view", "", audience.__doc__.split("\n\n", 1)[1].strip(), "",
              *_table_section(audience.AUDIENCE_VIEW)]
    return "\n".join(lines).rstrip() + "\n"


def write_tables_doc(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_tables_doc(), encoding="utf-8")
    return path
