"""
### CDP model refit

Refits the CLV models (BG/NBD + Gamma-Gamma) as of the logical date, validates the new fit on
the holdout before it and promotes it only if it converged and validates within
`clv.max_holdout_mae_increase` of the model in force; otherwise the model in force keeps
scoring and the refusal is recorded in `ops.clv_models`. The daily DAG's value stage scores
with the latest model promoted on or before its date.
"""

from __future__ import annotations

from airflow.sdk import DAG

from jobs.platform.orchestration import DAG_ARGS, StageOperator

with DAG(
    dag_id="cdp_refit",
    schedule="0 3 * * 0",    # Sundays 03:00 UTC, before that day's daily run
    tags=["cdp", "models"],
    doc_md=__doc__,
    **DAG_ARGS,
):
    StageOperator(stage="refit")
