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
    """Element-wise concatenation of arrays and constants."""
    return pc.binary_join_element_wise(*parts, "")


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

    def _utc(self, days: np.ndarray, tz: str = "UTC") -> pa.TimestampArray:
        seconds = self._start_s + np.floor(np.asarray(days, dtype=np.float64) * 86400).astype(np.int64)
        return pa.array(seconds, type=pa.timestamp("s", tz="UTC")).cast(pa.timestamp("s", tz=tz))

    def iso(self, days: np.ndarray) -> pa.StringArray:
        return pc.strftime(self._utc(days), format="%Y-%m-%dT%H:%M:%SZ")

    def berlin_local(self, days: np.ndarray) -> pa.StringArray:
        return pc.strftime(self._utc(days, "Europe/Berlin"), format="%Y-%m-%d %H:%M:%S")

    def date(self, days: np.ndarray) -> pa.StringArray:
        return pc.strftime(self._utc(days), format="%Y-%m-%d")


def where(mask: np.ndarray, yes: pa.Array | str, no: pa.Array | str) -> pa.StringArray:
    return pc.if_else(pa.array(np.asarray(mask, dtype=bool)), yes, no)


def csv_field(values: pa.StringArray) -> pa.StringArray:
    """Quoted where needed, as csv.writer's minimal quoting does."""
    needs = pc.match_substring_regex(values, '[",\r\n]')
    if not pc.any(needs).as_py():
        return values
    quoted = concat('"', pc.replace_substring(values, '"', '""'), '"')
    return pc.if_else(needs, quoted, values)


def json_value(values: pa.StringArray) -> pa.StringArray:
    """A JSON string, or null for an empty field (ensure_ascii=False: only quotes, backslashes and
    control characters are escaped)."""
    escaped = values
    for char, escape in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        escaped = pc.replace_substring(escaped, char, escape)
    return pc.if_else(pc.equal(values, ""), "null", concat('"', escaped, '"'))


def lines(source: RawSource, fields: dict[str, pa.StringArray],
          raw_json: frozenset[str] = frozenset()) -> pa.StringArray:
    """One serialized line per record, in the source's column order. `raw_json` names fields that
    already hold JSON text (an order's lines), written as they are ("" is null)."""
    if source.format == "jsonl":
        parts: list[pa.Array | str] = []
        for k, name in enumerate(source.column_names):
            value = fields[name]
            value = pc.if_else(pc.equal(value, ""), "null", value) if name in raw_json else json_value(value)
            parts += ["{" if k == 0 else ",", f'"{name}":', value]
        return concat(*parts, "}")
    return csv_lines([fields[name] for name in source.column_names])


def csv_lines(columns: Sequence[pa.StringArray]) -> pa.StringArray:
    return pc.binary_join_element_wise(*(csv_field(c) for c in columns), ",")


def body(lines: pa.StringArray) -> bytes:
    """The lines joined into a file's text, each ending in a newline."""
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines), "\n")
    return (joined[0].as_py() + "\n").encode("utf-8") if len(lines) else b""


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
