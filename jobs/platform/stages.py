"""The stage registry: every stage declared once, with the tables it reads and writes, the suites
its gate runs and the function that runs it.

The CLI (`cdp run --stage`), the DAGs (tasks and Airflow assets), the run log (`rows_in`,
`rows_out`, Delta versions), `cdp rebuild` and the docs all read this one list, and a stage can
read only what it declares (`RunContext.read` refuses the rest). No Spark import, so the DAG
files that read it still parse in well under a second: the function is named, and imported only
when the stage runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas import Table, gold, silver
from schemas.bronze import TABLES as BRONZE
from schemas.ops import (
    AUDIENCE_EXPORTS,
    AUDIENCE_SYNCS,
    BATCH_RELEASES,
    CHURN_MODELS,
    CLV_HOLDOUT,
    CLV_MODELS,
    DQ_RESULTS,
    ERASED_SUBJECTS,
    ERASURES,
    INGEST_ACCOUNTING,
    INTENT_MODELS,
    QUARANTINE,
    RESOLUTION_CHECKS,
    RESOLUTION_RUNS,
    SILVER_ACCOUNTING,
)

# Silver tables by the source names identity resolution and the profile use.
IDENTITY_SOURCES = {source: silver.OF_SOURCE[source] for source in (
    "contacts", "orders", "pos", "tickets", "surveys", "campaign_events", "events", "referrals")}
_SOURCES = tuple(IDENTITY_SOURCES.values())


class UnknownStage(ValueError):
    """A stage name that the registry does not hold."""


@dataclass(frozen=True)
class Stage:
    name: str
    doc: str
    run: str                                  # "module:function", imported when the stage runs
    reads: tuple[Table, ...]                  # besides its own outputs, which hold its earlier state
    writes: tuple[Table, ...]
    suites: tuple[Table, ...] = ()            # tables its gate validates (expectations/<table>.json)
    dag: str = "cdp_daily"
    files: str | None = None                  # what it writes outside the warehouse

    @property
    def tables(self) -> tuple[Table, ...]:
        """Every table the stage may open: what it reads and what it writes."""
        return tuple(dict.fromkeys((*self.reads, *self.writes)))

    def function(self) -> Callable[[Any], Any]:
        module, name = self.run.split(":")
        return getattr(importlib.import_module(module), name)


_SEGMENTS = (gold.CUSTOMER_SEGMENTS, gold.CLUSTER_PROFILES, gold.VALUE_MATRIX, gold.LIFECYCLE_HISTORY,
             gold.SEGMENT_MEMBERSHIP)
_INSIGHTS = (gold.KPI, gold.ASSOCIATION_RULES, gold.CROSS_SELL, gold.CUSTOMER_SENTIMENT)

REGISTRY: tuple[Stage, ...] = (
    Stage("ingest", "raw landing files -> bronze, quarantine and accounting; batches done once their gate passes",
          "jobs.ingest.stage:run_ingest", reads=(BATCH_RELEASES,),
          writes=(*BRONZE.values(), QUARANTINE, INGEST_ACCOUNTING),
          suites=(*BRONZE.values(), INGEST_ACCOUNTING)),
    Stage("cleanse", "bronze as of the date -> silver and the PII vault, every bronze row accounted for",
          "jobs.cleanse.stage:run_cleanse", reads=(*BRONZE.values(), ERASED_SUBJECTS),
          writes=(*silver.TABLES, SILVER_ACCOUNTING),
          suites=(*silver.TABLES, SILVER_ACCOUNTING)),
    Stage("resolve", "silver -> the identity graph and the id history, published when the guards pass",
          "jobs.identity.stage:run_resolve", reads=_SOURCES,
          writes=(gold.IDENTITY_GRAPH, gold.IDENTITY_LINKS, gold.CUSTOMER_ID_HISTORY, RESOLUTION_CHECKS,
                  RESOLUTION_RUNS),
          suites=(RESOLUTION_CHECKS, gold.IDENTITY_GRAPH, gold.IDENTITY_LINKS, gold.CUSTOMER_ID_HISTORY)),
    Stage("profile", "identity graph + silver -> the customer profile (golden record)",
          "jobs.profile.stage:run_profile", reads=(gold.IDENTITY_GRAPH, *_SOURCES),
          writes=(gold.CUSTOMER_PROFILE,), suites=(gold.CUSTOMER_PROFILE,)),
    Stage("value", "CLV with the model in force (the first fitted when none), churn classifier",
          "jobs.value.stage:run_value", reads=(gold.IDENTITY_GRAPH, gold.CUSTOMER_PROFILE, *_SOURCES),
          writes=(gold.CUSTOMER_VALUE, gold.CUSTOMER_FORECAST, CLV_MODELS, CLV_HOLDOUT, CHURN_MODELS,
                  INTENT_MODELS),
          suites=(gold.CUSTOMER_VALUE, gold.CUSTOMER_FORECAST, CLV_MODELS), files="reports/clv/<model>.png"),
    Stage("segments", "RFM, clusters, value tiers and matrix, lifecycle stages and history, membership",
          "jobs.segments.stage:run_segments",
          reads=(gold.IDENTITY_GRAPH, gold.CUSTOMER_PROFILE, gold.CUSTOMER_VALUE, silver.ORDER_LINES, *_SOURCES),
          writes=_SEGMENTS, suites=_SEGMENTS),
    Stage("insights", "KPIs by period and segment, association rules, cross-sell, sentiment",
          "jobs.insights.stage:run_insights",
          reads=(gold.IDENTITY_GRAPH, gold.CUSTOMER_PROFILE, gold.CUSTOMER_VALUE, gold.SEGMENT_MEMBERSHIP,
                 silver.ORDER_LINES, silver.MARKETING_SPEND, *_SOURCES),
          writes=_INSIGHTS, suites=_INSIGHTS),
    Stage("export", "the audiences due on the date: membership MERGEd, entries and exits since each "
          "destination's acknowledged version published (files in <paths.exports>)",
          "jobs.delivery.stage:run_export",
          reads=(gold.CUSTOMER_PROFILE, gold.CUSTOMER_VALUE, gold.CUSTOMER_SEGMENTS, gold.IDENTITY_GRAPH,
                 silver.PII_VAULT, ERASURES),
          writes=(gold.AUDIENCE_MEMBERSHIP, AUDIENCE_SYNCS, AUDIENCE_EXPORTS), suites=(gold.AUDIENCE_MEMBERSHIP,),
          files="<paths.exports>/<audience>/<export>/"),
    Stage("report", "the run's HTML report", "jobs.delivery.stage:run_report",
          reads=(gold.SEGMENT_MEMBERSHIP, gold.CUSTOMER_SEGMENTS, gold.LIFECYCLE_HISTORY, gold.VALUE_MATRIX,
                 gold.CUSTOMER_VALUE, gold.KPI, gold.IDENTITY_GRAPH, gold.IDENTITY_LINKS, RESOLUTION_RUNS, CLV_HOLDOUT,
                 DQ_RESULTS, INGEST_ACCOUNTING, QUARANTINE),
          writes=(), files="reports/run/<date>/index.html"),
    Stage("refit", "a new CLV model as of the date, promoted only if it validates", "jobs.value.stage:run_refit",
          reads=(gold.IDENTITY_GRAPH, *_SOURCES), writes=(CLV_MODELS, CLV_HOLDOUT), suites=(CLV_MODELS,),
          dag="cdp_refit", files="reports/clv/<model>.png"),
)
STAGES = {s.name: s for s in REGISTRY}
# The daily DAG, in order.
DAILY = tuple(s.name for s in REGISTRY if s.dag == "cdp_daily")


def stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise UnknownStage(f"unknown stage {name!r}; stages are {', '.join(STAGES)}") from None
