"""Column-wise text for the generator: ids, timestamps, amounts and whole CSV or JSON lines built
as Arrow string arrays, so a chunk's hundreds of thousands of records never become Python strings.

Every array here is a `pa.StringArray` without nulls: an empty field is "" (a JSON line writes it
as null, as the per-record writer did).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.raw import RawSource

HEX = np.array([f"{b:02x}" for b in range(256)], dtype="S2")


def strings(values: Sequence[str] | np.ndarray) -> pa.StringArray:
    return pa.array(values, type=pa.string())


def concat(*parts: pa.Array | str) -> pa.StringArray:
    """Element-wise concatenation of arrays and constants (neighbouring constants are merged first)."""
    merged: list[pa.Array | str] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    return pc.binary_join_element_wise(*merged, "")


def pick(values: Sequence[str], index: np.ndarray) -> pa.StringArray:
    """values[index] for a short list of choices."""
    return strings(values).take(pa.array(np.asarray(index, dtype=np.int64)))


def number(values: np.ndarray, width: int = 0) -> pa.StringArray:
    """Integers as text, zero-padded to `width`."""
    text = pa.array(np.asarray(values, dtype=np.int64)).cast(pa.string())
    return pc.utf8_lpad(text, width=width, padding="0") if width else text


def fixed(values: np.ndarray, decimals: int) -> pa.StringArray:
    """Non-negative numbers with `decimals` decimals, as f"{x:.{decimals}f}" writes them."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * 10**decimals).astype(np.int64)
    return concat(number(scaled // 10**decimals), ".", number(scaled % 10**decimals, decimals))


def money(values: np.ndarray) -> pa.StringArray:
    return fixed(values, 2)


def new_ids(rng: np.random.Generator, prefix: str, n: int) -> pa.StringArray:
    """`prefix-` and the first 20 hex digits of a random (version 4) UUID, per record."""
    raw = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16)[:, :10].copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    digits = HEX[raw].view("S20").ravel()
    return concat(f"{prefix}-", pa.array(digits, type=pa.binary()).cast(pa.string()))


class Clock:
    """Maps days since the start of history (float arrays) to timestamps as text."""

    def __init__(self, start: datetime):
        self.start = start
        self._start_s = int(start.timestamp())

    def _utc(self, days: np.ndarray) -> pa.TimestampArray:
        seconds = self._start_s + np.floor(np.asarray(days, dtype=np.float64) * 86400).astype(np.int64)
        return pa.array(seconds, type=pa.timestamp("s"))

    # Arrow's strftime is slow; its cast of a timestamp to text ("2025-01-31 08:00:00") is not.
    def iso(self, days: np.ndarray) -> pa.StringArray:
        return concat(pc.utf8_replace_slice(self._utc(days).cast(pa.string()), 10, 11, "T"), "Z")

    def berlin_local(self, days: np.ndarray) -> pa.StringArray:
        local = pc.local_timestamp(self._utc(days).cast(pa.timestamp("s", tz="Europe/Berlin")))
        return local.cast(pa.string())

    def date(self, days: np.ndarray) -> pa.StringArray:
        return self._utc(days).cast(pa.date32()).cast(pa.string())


def where(mask: np.ndarray, yes: pa.Array | str, no: pa.Array | str) -> pa.StringArray:
    return pc.if_else(pa.array(np.asarray(mask, dtype=bool)), yes, no)


def csv_field(values: pa.StringArray) -> pa.StringArray:
    """Quoted where needed, as csv.writer's minimal quoting does."""
    data = values.buffers()[2]
    raw = data.to_pybytes() if data is not None else b""
    if all(raw.find(char) < 0 for char in (b'"', b",", b"\r", b"\n")):
        return values
    needs = pc.match_substring_regex(values, '[",\r\n]')
    quoted = concat('"', pc.replace_substring(values, '"', '""'), '"')
    return pc.if_else(needs, quoted, values)


def _json_escaped(values: pa.StringArray) -> pa.StringArray:
    """Quotes, backslashes and control characters escaped (ensure_ascii=False writes the rest as is)."""
    data = values.buffers()[2]
    raw = data.to_pybytes() if data is not None else b""
    # A scan of the bytes for the characters to escape is much cheaper than a regular expression.
    if any(raw.find(char) >= 0 for char in (b"\\", b'"', b"\n", b"\r", b"\t")):
        for char, escape in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
            values = pc.replace_substring(values, char, escape)
    return values


def lines(source: RawSource, fields: dict[str, pa.StringArray],
          raw_json: frozenset[str] = frozenset()) -> pa.StringArray:
    """One serialized line per record, ending in a newline, in the source's column order. `raw_json` names fields that
    already hold JSON text (an order's lines), written as they are. An empty field is null in JSON."""
    if source.format != "jsonl":
        return csv_lines([fields[name] for name in source.column_names])
    parts: list[pa.Array | str] = []
    for k, name in enumerate(source.column_names):
        value = fields[name]
        parts.append(("{" if k == 0 else ",") + f'"{name}":')
        empty = pc.equal(value, "")
        has_empty = pc.any(empty).as_py()
        if name not in raw_json:
            value = concat('"', _json_escaped(value), '"')
        parts.append(pc.if_else(empty, "null", value) if has_empty else value)
    return concat(*parts, "}\n")


def csv_lines(columns: Sequence[pa.StringArray]) -> pa.StringArray:
    fields = [csv_field(c) for c in columns]
    return pc.binary_join_element_wise(*fields[:-1], concat(fields[-1], "\n"), ",")


def body(lines: pa.StringArray, header: str | None = None) -> bytes:
    """A file's text: the header line, if any, then the lines (each ends in a newline)."""
    head = f"{header}\n".encode() if header is not None else b""
    if not len(lines):
        return head
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    start, end = offsets[lines.offset], offsets[lines.offset + len(lines)]
    data = lines.buffers()[2]
    return head + data[start:end].to_pybytes()


def choose(which: np.ndarray, options: Sequence[pa.Array | str]) -> pa.StringArray:
    """options[which[i]][i] for each record."""
    return pc.choose(pa.array(np.asarray(which, dtype=np.int64)), *options)


def replace(values: pa.StringArray, mask: np.ndarray, replacements: pa.StringArray) -> pa.StringArray:
    """`values` with the masked records replaced, in order, by `replacements` (one per masked record)."""
    return pc.replace_with_mask(values, pa.array(np.asarray(mask, dtype=bool)), replacements)


def dates(values: np.ndarray) -> pa.StringArray:
    """datetime64[D] values as ISO dates."""
    return pa.array(np.asarray(values, dtype="datetime64[D]")).cast(pa.string())


def constant(value: str, n: int) -> pa.StringArray:
    return pa.repeat(pa.scalar(value, pa.string()), n)
