"""
### CDP erasure (right to be forgotten)

On demand: trigger with `request_id`, the id `cdp erase-request` printed (the request holds the person's
identifier as a suppression key only; no e-mail or phone is ever a DAG param, a command line or a log line).
The person is removed from landing files, exports, the quarantine, bronze, gate samples, gold, silver and the
identity graph, and put on the suppression list so cleanse keeps them out; every table touched is vacuumed so
the old files are gone. Each step is recorded in `ops.erasures`, so a retry resumes after the last one done. A
request that is unknown or names nobody fails at once, without retries.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from jobs.platform.orchestration import DAG_ARGS, StageOperator

with DAG(
    dag_id="cdp_erasure",
    schedule=None,
    params={"request_id": Param(None, type=["null", "string"])},
    tags=["cdp", "privacy"],
    doc_md=__doc__,
    **DAG_ARGS,
):
    StageOperator(stage="erase", stage_args=["--request-id", "{{ params.request_id or '' }}"])
