"""Files an erasure rewrites: landing files without the person's lines, exports without their rows.

Both are rewritten next to the original (a hidden file, which ingest and the export reader skip) and renamed
into place, so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Iterable
from pathlib import Path

from jobs.delivery.export import file_entries, read_manifests, write_manifest


class LandingMismatch(RuntimeError):
    """A landing file's line is not the one Spark read there: the file changed under the erasure."""


def _replace(path: Path, data: bytes) -> None:
    hidden = path.with_name(f".{path.name}.erasure")
    hidden.write_bytes(data)
    os.replace(hidden, path)


def drop_lines(path: Path, lines: dict[int, str]) -> None:
    """Rewrite a landing file (gzip or not) without `lines` (1-based number -> the text Spark read there).
    Lines end as Hadoop's reader ends them (LF, CR or CRLF), which `bytes.splitlines` follows too."""
    compressed = path.suffix == ".gz"
    raw = path.read_bytes()
    content = gzip.decompress(raw) if compressed else raw
    kept = []
    for number, line in enumerate(content.splitlines(keepends=True), start=1):
        if number not in lines:
            kept.append(line)
            continue
        text = line.rstrip(b"\r\n").decode("utf-8", "replace").removeprefix("\ufeff")
        if text != lines[number].removeprefix("\ufeff"):
            raise LandingMismatch(f"{path}: line {number} is not the line read there; rerun the erasure")
    data = b"".join(kept)
    _replace(path, gzip.compress(data, mtime=0) if compressed else data)


def _without_customers(path: Path, fmt: str, customer_ids: set[str]) -> int:
    """Rewrite one export data file without the rows of `customer_ids`; return the rows dropped."""
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        keep = pc.invert(pc.is_in(table["customer_id"], value_set=pa.array(sorted(customer_ids))))
        kept = table.filter(keep)
        if kept.num_rows == table.num_rows:
            return 0
        buffer = io.BytesIO()
        pq.write_table(kept, buffer)
        _replace(path, buffer.getvalue())
        return table.num_rows - kept.num_rows
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return 0
    column = rows[0].index("customer_id")
    kept_rows = [rows[0], *[r for r in rows[1:] if r[column] not in customer_ids]]
    if len(kept_rows) == len(rows):
        return 0
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(kept_rows)
    _replace(path, out.getvalue().encode("utf-8"))
    return len(rows) - len(kept_rows)


def purge_exports(exports: Path, customer_ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """Remove the rows of `customer_ids` from every export under `exports` (members, added and removed), and
    update each manifest's row counts and checksums. Returns (files rewritten, export ids that held a row): those
    exports may already have been delivered, and their destinations are the operator's to ask."""
    ids = set(customer_ids)
    rewritten: list[str] = []
    held: list[str] = []
    if not ids or not exports.is_dir():
        return rewritten, held
    for manifest in read_manifests(exports):
        folder = exports / manifest["export_id"]
        dropped = {}
        for data_folder, entries in manifest["files"].items():
            dropped[data_folder] = 0
            for entry in entries:
                n = _without_customers(folder / entry["path"], manifest["format"], ids)
                if n:
                    dropped[data_folder] += n
                    rewritten.append(str(folder / entry["path"]))
        if any(dropped.values()):
            held.append(manifest["export_id"])
            manifest["rows"] = {k: v - dropped.get(k, 0) for k, v in manifest["rows"].items()}
            manifest["files"] = {f: file_entries(folder, f) for f in manifest["files"]}
            write_manifest(folder, manifest)
    return rewritten, held
