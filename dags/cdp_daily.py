"""
### CDP daily pipeline

Ingest every raw source into bronze (quarantine + row accounting), cleanse into silver,
resolve identities into customers (the identity graph, published only when its guards
pass), build `gold.customer_profile`, fit and validate the CLV models and score customers
(`gold.customer_value`), then segment them: RFM, clusters, value tiers and matrix, lifecycle
stages with history (`gold.customer_segments`, `gold.segment_membership`,
`gold.lifecycle_history`). Every stage ends with its Great Expectations
gate: a critical failure fails the task, so nothing downstream runs or is published.
The logical date is the as-of date of every stage; reruns of a date are no-ops.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

DEFAULT_ARGS = {
    "owner": "cdp",
    "retries": 1,
    "retry_delay": pendulum.duration(minutes=1),
    "execution_timeout": pendulum.duration(hours=2),
}


def _run(stage: str, context: dict) -> str:
    # Imported inside the task so that parsing the DAG file stays cheap (no Spark import).
    from jobs.airflow_tasks import run_stage_task

    return run_stage_task(stage, context["ds"], context["run_id"])


@dag(
    dag_id="cdp_daily",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["cdp", "daily"],
    doc_md=__doc__,
)
def cdp_daily() -> None:
    @task
    def ingest(**context) -> str:
        return _run("ingest", context)

    @task
    def cleanse(**context) -> str:
        return _run("cleanse", context)

    @task
    def resolve(**context) -> str:
        return _run("resolve", context)

    @task
    def profile(**context) -> str:
        return _run("profile", context)

    @task
    def value(**context) -> str:
        return _run("value", context)

    @task
    def segments(**context) -> str:
        return _run("segments", context)

    ingest() >> cleanse() >> resolve() >> profile() >> value() >> segments()


cdp_daily()
