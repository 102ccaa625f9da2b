"""`cdp cluster start|stop|status`: a Spark standalone cluster on this machine, from the PySpark distribution.

A master and N workers (`spark-class ...deploy.master.Master` / `...deploy.worker.Worker`, what
Spark's sbin scripts run, which the pip distribution does not ship), as background processes
whose pids and logs are kept under <paths.bench>/standalone. The `standalone` profile points the
pipeline at it; nothing else changes. Real clusters (YARN, Kubernetes, managed Spark) are set up
by their operators; see the README.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from jobs.platform.settings import ClusterConfig

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


@dataclass(frozen=True)
class Standalone:
    state: Path                    # pids.json and the daemons' logs
    host: str = "127.0.0.1"
    port: int = 7077
    ui_port: int = 8080
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "6g"

    @classmethod
    def from_conf(cls, state: Path, conf: ClusterConfig) -> Standalone:
        """The cluster of conf `cluster`, its pids and logs under `state`."""
        return cls(state, **conf.model_dump())

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    def status(self) -> dict | None:
        """The master's JSON status (alive workers, applications), or None when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.ui_port}/json/", timeout=2) as response:
                return json.load(response)
        except OSError:
            return None

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        import pyspark

        home = Path(pyspark.__file__).parent       # the pip distribution is a SPARK_HOME: bin/, jars/
        env = dict(os.environ, SPARK_HOME=str(home), SPARK_LOG_DIR=str(self.state),
                   SPARK_WORKER_DIR=str(self.state / "work"))
        with (self.state / f"{name}.log").open("ab") as log:
            return subprocess.Popen([str(home / "bin" / "spark-class"), *args], stdout=log, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)

    def start(self, timeout: float = 90.0) -> dict:
        """Start the master and the workers; returns once all workers are registered."""
        if self.status() is not None:
            raise RuntimeError(f"a Spark master already answers on {self.host}:{self.ui_port}: stop it first")
        self.state.mkdir(parents=True, exist_ok=True)
        daemons = {"master": self._spawn("master", MASTER_CLASS, "--host", self.host, "--port", str(self.port),
                                         "--webui-port", str(self.ui_port))}
        self._save(daemons)
        deadline = time.monotonic() + timeout
        while self.status() is None:
            self._wait(deadline, daemons, "the master")
        for i in range(self.workers):
            daemons[f"worker-{i + 1}"] = self._spawn(
                f"worker-{i + 1}", WORKER_CLASS, "--host", self.host, "--cores", str(self.worker_cores),
                "--memory", self.worker_memory, "--webui-port", str(self.ui_port + 1 + i), self.master_url)
        self._save(daemons)
        while len([w for w in (self.status() or {}).get("workers", []) if w.get("state") == "ALIVE"]) < self.workers:
            self._wait(deadline, daemons, f"{self.workers} workers to register")
        return self.status() or {}

    def _save(self, daemons: dict[str, subprocess.Popen]) -> None:
        (self.state / "pids.json").write_text(json.dumps({name: p.pid for name, p in daemons.items()}))

    def _wait(self, deadline: float, daemons: dict[str, subprocess.Popen], what: str) -> None:
        exited = [name for name, p in daemons.items() if p.poll() is not None]
        if exited or time.monotonic() > deadline:
            self.stop()
            why = f"{', '.join(exited)} exited" if exited else "timed out"
            raise RuntimeError(f"{why} while waiting for {what}; logs in {self.state}")
        time.sleep(0.5)

    def stop(self) -> list[str]:
        """Stop every daemon started by `start` (workers first); returns their names."""
        pid_file = self.state / "pids.json"
        if not pid_file.exists():
            return []
        pids = json.loads(pid_file.read_text())
        for name in sorted(pids, key=lambda n: n == "master"):
            try:
                os.killpg(pids[name], signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        while self.status() is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        pid_file.unlink()
        return list(pids)
