"""One source's records of a chunk, column-wise, and how they land: late arrivals, broken lines,
exact duplicates and replays, split into batch files, with a ground-truth row per record."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from jobs.platform.settings import DirtConfig
from jobs.tools.generate import text
from schemas.raw import RawSource

# Defects recorded as one bit each, named as in the ground truth (a record can have a typo in both names).
FLAGS = ("moved_address", "duplicate_contact", "first_name_typo", "last_name_typo", "email_case_whitespace",
         "phone_format_variation", "dob_swapped", "outlier_amount", "late_arrival", "exact_duplicate",
         "replayed_event")
LABELS = {"first_name_typo": "name_typo", "last_name_typo": "name_typo"}
# Fields a record may have left empty (missing_field); -1 for none.
BLANKABLE = ("phone", "email", "birth_date", "postcode", "street", "shipping_postcode")
MALFORMED_KINDS = ("wrong_type", "impossible_date", "missing_required", "broken_json", "broken_quote")
DUPLICATED = {"contacts", "orders", "pos", "tickets", "surveys", "referrals"}
REPLAYED = {"events", "campaign_events"}
LATE = {"orders", "pos", "events", "tickets", "surveys", "campaign_events"}


@dataclass
class Records:
    """Records of one source: their fields as text and, per record, the true person (chunk index),
    when it happened (days from the start of history) and the dirt applied."""

    person: np.ndarray
    day: np.ndarray
    fields: dict[str, pa.StringArray] = field(default_factory=dict)
    defects: np.ndarray = field(init=False)     # bits of FLAGS
    missing: np.ndarray = field(init=False)     # index into BLANKABLE of the field left empty, -1 for none
    malformed: np.ndarray = field(init=False)   # index into MALFORMED_KINDS, -1 for none

    def __post_init__(self) -> None:
        self.defects = np.zeros(len(self.person), dtype=np.int64)
        self.missing = np.full(len(self.person), -1, dtype=np.int8)
        self.malformed = np.full(len(self.person), -1, dtype=np.int8)

    def __len__(self) -> int:
        return len(self.person)

    def flag(self, name: str, mask: np.ndarray) -> None:
        self.defects |= np.asarray(mask, dtype=np.int64) << FLAGS.index(name)

    def unflag(self, name: str, mask: np.ndarray) -> None:
        self.defects &= ~(np.asarray(mask, dtype=np.int64) << FLAGS.index(name))

    def blank_one(self, rng: np.random.Generator, rate: float, optional: list[str]) -> None:
        """At `rate`, one of the `optional` fields left empty."""
        mask = rng.random(len(self)) < rate
        which = rng.integers(0, len(optional), len(self))
        for k, name in enumerate(optional):
            blank = mask & (which == k)
            self.fields[name] = text.where(blank, "", self.fields[name])
            self.missing[blank] = BLANKABLE.index(name)

    def subset(self, keep: np.ndarray) -> Records:
        index = np.flatnonzero(keep)
        out = Records(self.person[index], self.day[index], {k: v.take(pa.array(index)) for k, v in self.fields.items()})
        out.defects, out.missing, out.malformed = self.defects[index], self.missing[index], self.malformed[index]
        return out

    @staticmethod
    def concat(parts: list[Records], order_by_person: bool = True) -> Records:
        person = np.concatenate([p.person for p in parts])
        order = np.argsort(person, kind="stable") if order_by_person else np.arange(len(person))
        take = pa.array(order)
        out = Records(person[order], np.concatenate([p.day for p in parts])[order],
                      {k: pa.concat_arrays([p.fields[k] for p in parts]).take(take) for k in parts[0].fields})
        out.defects = np.concatenate([p.defects for p in parts])[order]
        out.missing = np.concatenate([p.missing for p in parts])[order]
        out.malformed = np.concatenate([p.malformed for p in parts])[order]
        return out

    def defect_labels(self) -> pa.StringArray:
        """Each record's defects as the ground truth writes them, ';'-separated."""
        # Few distinct combinations: label each once.
        key = (self.defects * 64 + self.missing + 1) * 8 + self.malformed + 1
        unique, inverse = np.unique(key, return_inverse=True)
        labels = []
        for k in unique.tolist():
            bits, missing, malformed = k // 512, k // 8 % 64 - 1, k % 8 - 1
            names = [LABELS.get(f, f) for b, f in enumerate(FLAGS) if bits >> b & 1]
            names += [f"missing_field:{BLANKABLE[missing]}"] if missing >= 0 else []
            names += [f"malformed_row:{MALFORMED_KINDS[malformed]}"] if malformed >= 0 else []
            labels.append(";".join(names))
        return text.pick(labels, inverse)

    def counts(self) -> Counter:
        """Records and each kind of defect (a record with two typos counts two)."""
        counts: Counter = Counter()
        for bit, name in enumerate(FLAGS):
            counts[LABELS.get(name, name)] += int(((self.defects >> bit) & 1).sum())
        counts["missing_field"] += int((self.missing >= 0).sum())
        counts["malformed_row"] += int((self.malformed >= 0).sum())
        counts = +counts    # only the defects that occur
        counts["records"] = len(self)
        return counts


def _malform(rng: np.random.Generator, source: RawSource, recs: Records, mask: np.ndarray) -> None:
    """Break the masked records' fields the way a faulty exporter would; the broken JSON and quotes
    are made on the serialized lines (`_break_lines`)."""
    line_break = 3 if source.format == "jsonl" else 4
    kind = rng.integers(0, 4, len(recs))
    recs.malformed[mask] = np.where(kind[mask] == 3, line_break, kind[mask])
    ts = [c.name for c in source.columns if c.type in ("timestamp", "timestamp_ntz", "date")]
    # Text where a number, flag or list belongs; a source without such columns gets it in a
    # timestamp (not date-like, so a type mismatch, unlike an impossible date), so every
    # source, events included, plants wrong types at the same share of its broken rows.
    typed = [c.name for c in source.columns if c.type in ("int", "double", "boolean") or c.type.startswith("array")]
    typed = typed or ts
    impossible = {"date": "2025-02-30", "timestamp": "2025-02-30T25:61:00Z", "timestamp_ntz": "2025-02-30 25:61:00"}
    required = source.required[1:] or source.required   # never the record id, unless it is all there is
    for kind_no, columns, value in ((0, typed, lambda c: "n/a"), (1, ts, lambda c: impossible[source.column(c).type]),
                                    (2, required, lambda c: "")):
        which = rng.integers(0, len(columns), len(recs))
        for k, name in enumerate(columns):
            hit = mask & (kind == kind_no) & (which == k)
            if hit.any():
                recs.fields[name] = text.where(hit, _as_field(source, name, value(name)), recs.fields[name])


def _as_field(source: RawSource, name: str, value: str) -> str:
    """A replacement value as the field's text (a JSON array field holds JSON: text there is quoted)."""
    if source.format == "jsonl" and source.column(name).type.startswith("array") and value:
        return f'"{value}"'
    return value


def _break_lines(lines: pa.StringArray, kinds: np.ndarray) -> pa.StringArray:
    for kind, broken in (("broken_json", lambda line: line[: max(5, (len(line) - 1) // 2)] + "\n"),
                         ("broken_quote", lambda line: '"' + line)):
        mask = kinds == MALFORMED_KINDS.index(kind)
        if mask.any():
            chosen = lines.filter(pa.array(mask)).to_pylist()
            lines = text.replace(lines, mask, text.strings([broken(line) for line in chosen]))
    return lines


@dataclass
class Landed:
    """Where a chunk's records of one source landed."""

    files: dict[str, bytes]             # batch date -> file body
    truth: pa.StringArray               # a CSV line per record: source, record_id, person_id, defects, batch
    counts: Counter


def land(rng: np.random.Generator, source: RawSource, recs: Records, rates: DirtConfig,
         batch_of: Callable[[np.ndarray], np.ndarray], batch_dates: list[str], person_ids: pa.StringArray,
         raw_json: frozenset[str] = frozenset()) -> Landed:
    """Serialize records into batches, applying late arrival, breaks, duplicates and replays.

    `batch_of` maps days to batch numbers (indices into `batch_dates`, in date order).
    """
    n = len(recs)
    day = recs.day.copy()
    if source.name in LATE:
        late = rng.random(n) < rates.late_arrival
        day[late] += rng.integers(1, 6, int(late.sum()))
        recs.flag("late_arrival", late)
    batch = batch_of(day)
    broken = rng.random(n) < rates.malformed_row
    _malform(rng, source, recs, broken)
    lines = _break_lines(text.lines(source, recs.fields, raw_json), recs.malformed)
    # Each landed copy: (batch, record); a duplicate lands in the same file, a replay in the next day's.
    copies = [(batch, np.arange(n))]
    if source.name in DUPLICATED:
        dup = rng.random(n) < rates.exact_duplicate
        recs.flag("exact_duplicate", dup)
        copies.append((batch[dup], np.flatnonzero(dup)))
    if source.name in REPLAYED:
        replay = rng.random(n) < rates.replayed_event
        recs.flag("replayed_event", replay)
        copies.append((batch_of(day[replay] + 1), np.flatnonzero(replay)))
    batches = np.concatenate([b for b, _ in copies])
    records = np.concatenate([r for _, r in copies])
    order = np.lexsort((records, batches))
    batches, records = batches[order], records[order]
    bounds = np.flatnonzero(np.diff(batches)) + 1
    header = ",".join(source.column_names) if source.format == "csv" else None
    files = {batch_dates[part_batches[0]]: text.body(lines.take(pa.array(part)), header)
             for part_batches, part in zip(np.split(batches, bounds), np.split(records, bounds)) if len(part)}
    truth = text.concat(source.name, ",", recs.fields[source.record_id], ",", person_ids.take(pa.array(recs.person)),
                        ",", recs.defect_labels(), ",", text.pick(batch_dates, batch), "\n")
    return Landed(files, truth, recs.counts())


def write_files(folder: Path, name: str, files: dict[str, bytes]) -> None:
    """Each batch's file under folder/<batch date>/."""
    for batch, data in files.items():
        (folder / batch).mkdir(parents=True, exist_ok=True)
        (folder / batch / name).write_bytes(data)
