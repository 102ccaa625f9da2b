"""The daily pipeline's stages in order and the tables each reads and writes: one list for the
pipeline (its run log), the DAGs (their Airflow assets) and the docs. No Spark import, so the DAG
files that read it still parse in well under a second."""

from __future__ import annotations

from schemas import Table, gold, silver
from schemas.bronze import TABLES as BRONZE
from schemas.ops import CHURN_MODELS, CLV_HOLDOUT, CLV_MODELS, DQ_RESULTS, INGEST_ACCOUNTING, QUARANTINE

# The daily DAG, in order.
STAGES = ("ingest", "cleanse", "resolve", "profile", "value", "segments", "insights", "export", "report")

# Silver tables by the source names identity resolution and the profile use.
IDENTITY_SOURCES = {
    "contacts": silver.CONTACTS, "orders": silver.ORDERS, "pos": silver.POS_TRANSACTIONS, "tickets": silver.TICKETS,
    "surveys": silver.SURVEYS, "campaign_events": silver.CAMPAIGN_EVENTS, "events": silver.EVENTS,
    "referrals": silver.REFERRALS,
}

_SEGMENT_TABLES = (gold.CUSTOMER_SEGMENTS, gold.CLUSTER_PROFILES, gold.VALUE_MATRIX, gold.LIFECYCLE_HISTORY,
                   gold.SEGMENT_MEMBERSHIP)
# The tables each stage reads (rows_in of the run log) and writes (rows_out); ingest reads raw files.
STAGE_TABLES: dict[str, tuple[tuple[Table, ...], tuple[Table, ...]]] = {
    "ingest": ((), (*BRONZE.values(), INGEST_ACCOUNTING, QUARANTINE)),
    "cleanse": (tuple(BRONZE.values()), silver.TABLES),
    "resolve": (tuple(IDENTITY_SOURCES.values()), (gold.IDENTITY_GRAPH, gold.CUSTOMER_ID_HISTORY)),
    "profile": ((gold.IDENTITY_GRAPH, *IDENTITY_SOURCES.values()), (gold.CUSTOMER_PROFILE,)),
    "value": ((gold.IDENTITY_GRAPH, *IDENTITY_SOURCES.values()),
              (gold.CUSTOMER_VALUE, gold.CUSTOMER_FORECAST, CLV_MODELS, CLV_HOLDOUT, CHURN_MODELS)),
    "segments": ((gold.IDENTITY_GRAPH, gold.CUSTOMER_PROFILE, gold.CUSTOMER_VALUE, silver.ORDER_LINES,
                  *IDENTITY_SOURCES.values()), _SEGMENT_TABLES),
    "insights": ((gold.IDENTITY_GRAPH, gold.CUSTOMER_PROFILE, gold.SEGMENT_MEMBERSHIP, silver.ORDER_LINES,
                  silver.MARKETING_SPEND, *IDENTITY_SOURCES.values()),
                 (gold.KPI, gold.ASSOCIATION_RULES, gold.CROSS_SELL, gold.CUSTOMER_SENTIMENT)),
    # Marketing exports are files (<paths.exports>), not tables.
    "export": ((gold.SEGMENT_MEMBERSHIP, gold.CUSTOMER_PROFILE, gold.IDENTITY_GRAPH, silver.PII_VAULT), ()),
    # The run report is a file too (<warehouse>/../reports/run/<date>/index.html).
    "report": ((gold.SEGMENT_MEMBERSHIP, gold.CUSTOMER_SEGMENTS, gold.LIFECYCLE_HISTORY, gold.VALUE_MATRIX,
                gold.CUSTOMER_VALUE, gold.KPI, CLV_HOLDOUT, DQ_RESULTS, INGEST_ACCOUNTING, QUARANTINE), ()),
    # The model-refit DAG's one stage.
    "refit": ((gold.IDENTITY_GRAPH, silver.ORDERS, silver.POS_TRANSACTIONS), (CLV_MODELS, CLV_HOLDOUT)),
}
