"""
### CDP erasure (right to be forgotten)

On demand: trigger with one of `customer_id`, `email` or `phone`. The person is removed from
bronze, silver, gold, the quarantine and the identity graph; every table touched is vacuumed
so the old files are gone; `ops.erasures` records the request (with a keyed hash of the
identifier, never the value), and exports leave the customer out from then on. A request that
names nobody fails at once, without retries.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from jobs.platform.orchestration import DAG_ARGS, StageOperator

with DAG(
    dag_id="cdp_erasure",
    schedule=None,
    params={name: Param(None, type=["null", "string"]) for name in ("customer_id", "email", "phone")},
    tags=["cdp", "privacy"],
    doc_md=__doc__,
    **DAG_ARGS,
):
    StageOperator(stage="erase", stage_args=[
        arg for name in ("customer_id", "email", "phone")
        for arg in (f"--{name.replace('_', '-')}", f"{{{{ params.{name} or '' }}}}")])
