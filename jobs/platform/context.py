"""What a stage run is handed: settings, the logical date, the run id, the Spark session, and the
three things a stage does with tables: read what it declares, stage what it will write, and gate
the staged rows before they are published (write-audit-publish).

A stage never writes a published table directly: `stage_slice`, `stage_overwrite` and
`stage_merge` materialise the conformed rows (a local checkpoint: computed once, so the gate and
the write see the same rows) and queue the write; `gate` validates the staged frames with the
stage's suites; only `publish` then writes, one Delta commit per table. A failing gate raises
before `publish`, so every published table stays as it was, and readers (the next stage, the
`bi` views, exports) only ever see rows that passed.
"""

from __future__ import annotations

import getpass
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from functools import cached_property, partial

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.platform import quality
from jobs.platform.config import Settings
from jobs.platform.runtime import spark_session
from jobs.platform.stages import IDENTITY_SOURCES, Stage
from jobs.platform.tables import (
    concurrently,
    conform,
    ensure_table,
    location,
    merge_by_key,
    merge_changes,
    overwrite,
    replace_slice,
    sql_literal,
    table_exists,
)
from schemas import Table

log = logging.getLogger(__name__)


class UndeclaredTable(RuntimeError):
    """A stage opened a table that its registry entry does not declare."""


@dataclass(frozen=True)
class RunContext:
    settings: Settings
    as_of: date
    run_id: str
    started_at: datetime
    requested_by: str = ""                   # airflow:<dag>/<run id>, or user:<OS user>: exports audit it
    stage: Stage | None = None
    _pending: list[tuple[Table, Callable[[], None]]] = field(default_factory=list, repr=False, compare=False)
    _gate_seconds: list[float] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def create(cls, settings: Settings, as_of: date, run_id: str | None = None,
               requested_by: str | None = None) -> RunContext:
        now = datetime.now(UTC).replace(microsecond=0)
        return cls(settings, as_of, run_id or f"manual__{as_of.isoformat()}__{now:%Y%m%dT%H%M%S}", now,
                   requested_by or f"user:{getpass.getuser()}")

    def for_stage(self, stage: Stage) -> RunContext:
        """This run, for one stage: its declaration bounds what it may read and write."""
        ctx = replace(self, stage=stage, _pending=[], _gate_seconds=[])
        if "spark" in self.__dict__:
            ctx.__dict__["spark"] = self.__dict__["spark"]
        return ctx

    @cached_property
    def spark(self) -> SparkSession:
        return spark_session(self.settings)

    @property
    def as_of_slice(self) -> str:
        """The predicate of the rows a date-sliced table holds for this run's date."""
        return f"as_of_date = DATE {sql_literal(self.as_of.isoformat())}"

    # -- reading ----------------------------------------------------------------------------------------
    def _declared(self, table: Table, verb: str) -> None:
        if self.stage is None or table not in (self.stage.tables if verb == "reads" else self.stage.writes):
            raise UndeclaredTable(f"stage {self.stage.name if self.stage else '?'} {verb} {table.name}, which its "
                                  "entry in jobs/platform/stages.py does not declare")

    def read(self, table: Table) -> DataFrame:
        """A declared table as published; an empty frame of its schema before anything was published."""
        self._declared(table, "reads")
        if not table_exists(self.spark, table.name):
            return self.spark.createDataFrame([], table.struct)
        # By its location, not its name: a table created by writing an empty frame (before `ensure_table` used
        # CREATE TABLE) has that write's size, a few hundred bytes, as its statistics in the metastore, so read by
        # name every join with it was planned as a broadcast (at a million customers, a 5.6M-node identity graph
        # built into a hash table in the driver until its heap was full). By location it is its files' size.
        published = self.spark.read.format("delta").load(location(self.spark, table))
        # A column the schema added since the table was last written reads null until a write adds it.
        missing = {c.name: F.lit(None).cast(c.data_type) for c in table.columns if c.name not in published.columns}
        return published.withColumns(missing) if missing else published

    def silver_sources(self) -> dict[str, DataFrame]:
        """Silver by the source names identity resolution, the profile and the value stages use."""
        return {source: self.read(table) for source, table in IDENTITY_SOURCES.items()}

    # -- write, audit, publish -------------------------------------------------------------------------
    def _stage(self, df: DataFrame, table: Table, write: Callable[[DataFrame], None]) -> DataFrame:
        self._declared(table, "writes")
        staged = conform(df, table).localCheckpoint()
        self._pending.append((table, lambda: write(staged)))
        return staged

    def stage_slice(self, df: DataFrame, table: Table, predicate: str) -> DataFrame:
        """Stage the replacement of the rows of `table` matching `predicate`; return the staged rows."""
        return self._stage(df, table, lambda staged: replace_slice(staged, table, predicate))

    def stage_overwrite(self, df: DataFrame, table: Table) -> DataFrame:
        """Stage `df` as the whole of `table`; return the staged rows."""
        return self._stage(df, table, lambda staged: overwrite(staged, table))

    def stage_merge(self, df: DataFrame, table: Table, **merge: object) -> DataFrame:
        """Stage a Delta MERGE of `df` into `table` (see `tables.merge_by_key`); return the staged rows."""
        return self._stage(df, table, lambda staged: merge_by_key(staged, table, **merge))

    def stage_changes(self, upserts: DataFrame, deletes: DataFrame, table: Table) -> DataFrame:
        """Stage one MERGE of `upserts` and the keys in `deletes` into `table` (`tables.merge_changes`); return
        the staged upserts (the rows the gate checks: the others are published already)."""
        staged_deletes = deletes.select(*table.keys).localCheckpoint()
        return self._stage(upserts, table, lambda staged: merge_changes(staged, staged_deletes, table))

    def record(self, df: DataFrame, table: Table, predicate: str) -> None:
        """Write an operational record now, gate or no gate (what a run did is kept even when it fails)."""
        self._declared(table, "writes")
        replace_slice(df, table, predicate)

    def gate(self, frames: dict[Table, DataFrame], *, stage_name: str | None = None,
             enforce: bool = True) -> list[quality.Outcome]:
        """Validate staged frames with the stage's suites (a suite it does not declare is an error)."""
        undeclared = sorted(t.name for t in frames if t not in self.stage.suites)
        if undeclared:
            raise UndeclaredTable(f"stage {self.stage.name} gates {undeclared}, which its entry in "
                                  "jobs/platform/stages.py does not list among its suites")
        name = stage_name or self.stage.name
        # One Data Docs site per gate: a site is rebuilt from the validations of one gate call.
        docs = self.settings.paths.gx / "data_docs" / name if self.settings.quality.build_data_docs else None
        clock = time.monotonic()
        try:
            return quality.gate(self.spark, name, {t.name: df for t, df in frames.items()},
                                self.settings.root / "expectations", self.run_id, self.started_at, docs,
                                enforce=enforce)
        finally:
            self._gate_seconds.append(time.monotonic() - clock)

    @property
    def gate_seconds(self) -> float:
        """The time this stage's gates took so far (the run log reports their share of the stage)."""
        return sum(self._gate_seconds, 0.0)

    def publish(self, *, last: tuple[Table, ...] = ()) -> None:
        """Write every staged output (after the gate passed). Each table is a Delta commit of its own, so
        the tables are written concurrently, each one's writes in the order staged; the tables in `last`
        follow once all the others are written, in that order. A table that marks work as done (a
        batch's accounting, a model's registry row) goes there: it must never be published before
        what it vouches for, or a crash in between would lose the rest."""
        concurrently(partial(ensure_table, self.spark, table) for table in self.stage.writes)
        writes: dict[Table, list[Callable[[], None]]] = {}
        for table, write in self._pending:
            writes.setdefault(table, []).append(write)
        self._pending.clear()
        concurrently(partial(_in_order, w) for table, w in writes.items() if table not in last)
        for table in last:
            _in_order(writes.get(table, []))


def _in_order(writes: list[Callable[[], None]]) -> None:
    for write in writes:
        write()
