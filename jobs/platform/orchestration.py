"""The bridge from Airflow to the stage entry points: the operator that submits a stage to Spark,
the assets each stage updates, and the failure callback. The DAG files only wire these.

Imported when a DAG file is parsed, so nothing here imports Spark or reads data at import time.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset

from jobs.platform.stages import STAGES

log = logging.getLogger(__name__)

SPARK_CONN_ID = "cdp_spark"
# Retries with exponential back-off for what may pass on a second try (a lost executor, a busy
# metastore); data that fails its checks fails at once (AirflowFailException, no retry).
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "cdp",
    "retries": 2,
    "retry_delay": pendulum.duration(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": pendulum.duration(minutes=10),
    "execution_timeout": pendulum.duration(hours=2),
}


def table_asset(table_name: str) -> Asset:
    """The Airflow asset of a Delta table: downstream DAGs schedule on it (`schedule=[table_asset(...)]`)."""
    database, table = table_name.split(".")
    return Asset(uri=f"delta://cdp/{database}/{table}", name=table_name)


def stage_assets(stage: str) -> list[Asset]:
    """The assets of the tables a stage writes, as its registry entry declares them."""
    return [table_asset(t.name) for t in STAGES[stage].writes] if stage in STAGES else []


class StageOperator(SparkSubmitOperator):
    """One pipeline stage, run by spark-submit against the Spark connection `cdp_spark` (local mode by
    default; a cluster by pointing the connection elsewhere). The job code goes with it as a zip.

    A stage that fails its data checks exits with `jobs.submit.DATA_FAILURE`; that becomes an
    AirflowFailException carrying the gate's summary, so it is not retried."""

    template_fields = (*SparkSubmitOperator.template_fields, "stage_args")

    def __init__(self, *, stage: str, stage_args: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(task_id=stage, application="", conn_id=SPARK_CONN_ID, name=f"cdp-{stage}",
                         outlets=stage_assets(stage), **kwargs)
        self.stage = stage
        self.stage_args = stage_args or []     # templated: e.g. the erasure DAG's params

    def execute(self, context: Any) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        from jobs.platform.config import load_settings
        from jobs.platform.jars import require_jars
        from jobs.platform.packaging import build_job_package

        settings = load_settings()
        archive, entry = build_job_package(settings.root, settings.paths.jars.parent / "dist")
        self.application, self.py_files = str(entry), str(archive)
        self.jars = ",".join(str(j) for j in require_jars(settings.delta.maven_coordinates, settings.paths.jars))
        # The profile's Spark settings go on the command line: driver memory is fixed when its JVM starts.
        self.conf = {**settings.spark_conf, **(self.conf or {})}
        self.application_args = [self.stage, context["ds"], context["run_id"], *self.stage_args]
        handle, failure_file = tempfile.mkstemp(prefix=f"cdp-{self.stage}-", suffix=".txt")
        os.close(handle)
        failure = Path(failure_file)
        self.env_vars = {**(self.env_vars or {}), "CDP_FAILURE_FILE": str(failure),
                         "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable)}
        try:
            super().execute(context)
        except Exception as exc:
            reason = failure.read_text().strip()
            if reason:
                raise AirflowFailException(f"stage {self.stage} stopped by its checks: {reason}") from exc
            raise
        finally:
            failure.unlink(missing_ok=True)


def record_failure(context: dict[str, Any]) -> None:
    """on_failure_callback: append an alert record (JSON line) to <paths.alerts>/alerts.jsonl, and
    e-mail it when alerts.email_to is configured (through the Airflow SMTP connection)."""
    from jobs.platform.config import load_settings

    settings = load_settings()
    ti = context["task_instance"]
    alert = {
        "dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": context["run_id"], "logical_date": context["ds"],
        "try_number": ti.try_number, "error": str(context.get("exception") or "")[:4000],
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    alerts = settings.paths.alerts
    alerts.mkdir(parents=True, exist_ok=True)
    with (alerts / "alerts.jsonl").open("a") as out:
        out.write(json.dumps(alert) + "\n")
    recipients = list(settings.alerts.email_to)
    if recipients:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        SmtpNotifier(to=recipients, subject=f"[cdp] {ti.dag_id}.{ti.task_id} failed for {context['ds']}",
                     html_content=f"<pre>{json.dumps(alert, indent=2)}</pre>")(context)
    log.error("alert recorded: %s", alert)


# What every CDP DAG shares: policy (retries, timeouts, the alert callback), one run at a time, no catch-up.
DAG_ARGS: dict[str, Any] = {
    "start_date": pendulum.datetime(2026, 11, 1, tz="UTC"),
    "catchup": False,
    "max_active_runs": 1,
    "default_args": {**DEFAULT_ARGS, "on_failure_callback": record_failure},
}
