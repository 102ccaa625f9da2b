"""Where a run's time went, from the Spark event log: the longest SQL executions in a time window.

Each execution is named by its top operator and the warehouse tables its plan reads or
writes, which is what a reader needs to find it in the stage's code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

START = "org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionStart"
END = "org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionEnd"
TABLE_IN_PATH = re.compile(r"/(bronze|silver|gold|ops)\.db/(\w+)")


@dataclass(frozen=True)
class Execution:
    started: float                 # seconds since the epoch
    seconds: float
    operator: str                  # the plan's top operator
    tables: tuple[str, ...]        # warehouse tables the plan touches

    def line(self) -> str:
        tables = ", ".join(self.tables) or "no warehouse table"
        return f"{self.seconds:.1f} s {self.operator} ({tables})"


def _operator(plan: str) -> str:
    lines = [ln.strip() for ln in plan.splitlines()]
    body = lines[lines.index("== Physical Plan ==") + 1:] if "== Physical Plan ==" in lines else lines
    first = next((ln for ln in body if ln), "?")
    return re.sub(r"^[*+:\- ()\d]+", "", first).split(" [")[0].split(" (")[0][:60]


def executions(event_log: Path) -> list[Execution]:
    """Top-level SQL executions (not their sub-queries) of one event log file."""
    starts: dict[int, tuple[float, str, tuple[str, ...], int | None]] = {}
    done: list[Execution] = []
    with event_log.open(encoding="utf-8") as fh:
        for line in fh:
            if START not in line[:120] and END not in line[:120]:
                continue
            event = json.loads(line)
            if event["Event"] == START:
                plan = event.get("physicalPlanDescription", "")
                tables = tuple(sorted({f"{db}.{t}" for db, t in TABLE_IN_PATH.findall(plan)}))
                starts[event["executionId"]] = (event["time"] / 1000, _operator(plan), tables,
                                                event.get("rootExecutionId"))
            elif event["executionId"] in starts:
                began, operator, tables, root = starts.pop(event["executionId"])
                if root in (None, -1, event["executionId"]):
                    done.append(Execution(began, event["time"] / 1000 - began, operator, tables))
    return done


def longest(all_executions: list[Execution], start: float, end: float, top: int = 3) -> list[Execution]:
    inside = [e for e in all_executions if start <= e.started <= end]
    return sorted(inside, key=lambda e: -e.seconds)[:top]


def event_log_file(folder: Path) -> Path | None:
    """The newest event log in `folder` (one file per application, uncompressed, not rolled)."""
    logs = sorted((p for p in folder.glob("*") if p.is_file()), key=lambda p: p.stat().st_mtime)
    return logs[-1] if logs else None
