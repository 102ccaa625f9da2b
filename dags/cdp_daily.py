"""
### CDP daily pipeline

Ingest every raw source into bronze (quarantine + row accounting), cleanse into silver,
resolve identities into customers (the identity graph, published only when its guards
pass), build `gold.customer_profile`, fit and validate the CLV models and score customers
(`gold.customer_value`), then segment them: RFM, clusters, value tiers and matrix, lifecycle
stages with history (`gold.customer_segments`, `gold.segment_membership`,
`gold.lifecycle_history`), and report KPIs by period and segment, association rules with
cross-sell suggestions and feedback sentiment (`gold.kpi`, `gold.association_rules`,
`gold.cross_sell`, `gold.customer_sentiment`), sync the audiences due on the date
(`conf/audiences.yaml`: who entered and exited since each destination's acknowledged sync,
consent enforced, from `gold.audience_membership`'s change feed) into `paths.exports`, and write
the run's HTML report (`data/reports/run/<date>/index.html`).

Each stage is a spark-submit of `jobs/submit.py` against the `cdp_spark` connection. A stage
stages its outputs, runs its Great Expectations gate on them and publishes them only if it
passes (write-audit-publish): a critical failure fails the task at once (no retry) and leaves
every published table as it was, so nothing downstream runs or reads unchecked rows. The tasks,
their order and their assets come from the stage registry (`jobs/platform/stages.py`). The
logical date is the as-of date of every stage; reruns of a date are no-ops, and a date before
the latest published one is refused (see `cdp rebuild`).
"""

from __future__ import annotations

from airflow.sdk import DAG, chain

from jobs.platform.orchestration import DAG_ARGS, StageOperator
from jobs.platform.stages import DAILY

with DAG(
    dag_id="cdp_daily",
    schedule="@daily",
    tags=["cdp", "daily"],
    doc_md=__doc__,
    **DAG_ARGS,
):
    chain(*[StageOperator(stage=stage) for stage in DAILY])
