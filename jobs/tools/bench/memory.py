"""Resident memory of a process tree over time, split into the roles Spark gives its processes.

Sampled from outside (psutil), so it measures what the operating system sees, the number a
machine's memory limit is about, whatever the JVM's heap settings say. Proportional set size
(PSS), not RSS: Python workers are forked from one daemon and share its pages, which RSS would
count once per worker.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil

ROLES = ("driver", "executors")


def role(process: psutil.Process) -> str:
    """Executors: executor JVMs (standalone, YARN, Kubernetes) and Python workers, which run tasks. Driver:
    the rest (the driver JVM, which also runs the tasks in local mode, and the Python driver)."""
    try:
        cmdline = " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "driver"
    if "CoarseGrainedExecutorBackend" in cmdline or "pyspark.daemon" in cmdline or "pyspark/daemon" in cmdline \
            or "pyspark.worker" in cmdline:
        return "executors"
    return "driver"


def _pss(process: psutil.Process) -> int:
    try:
        return process.memory_full_info().pss
    except (psutil.AccessDenied, AttributeError):
        return process.memory_info().rss


@dataclass
class Sample:
    at: float                      # time.time()
    rss: dict[str, int]            # bytes (PSS) per role


@dataclass
class MemorySampler:
    """Samples the resident memory of `roots` and their descendants every `interval` seconds while running."""

    roots: list[int]
    interval: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> Sample:
        rss = dict.fromkeys(ROLES, 0)
        seen: set[int] = set()
        for pid in self.roots:
            try:
                root = psutil.Process(pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for process in tree:
                if process.pid in seen:
                    continue
                seen.add(process.pid)
                try:
                    rss[role(process)] += _pss(process)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        return Sample(time.time(), rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def peak(self, start: float = 0.0, end: float = float("inf")) -> dict[str, int]:
        """Peak bytes per role, and of their sum ('total'), over samples taken in [start, end]."""
        window = [s for s in self.samples if start <= s.at <= end] or self.samples[-1:]
        peaks = {r: max((s.rss[r] for s in window), default=0) for r in ROLES}
        peaks["total"] = max((sum(s.rss.values()) for s in window), default=0)
        return peaks
