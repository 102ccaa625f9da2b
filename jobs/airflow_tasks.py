"""The bridge from Airflow tasks to stage entry points: settings from the environment, the
logical date as the as-of date, and a short summary as the task's return value (XCom)."""

from __future__ import annotations

import json
from datetime import date

from jobs.config import load_settings
from jobs.ingest import ContractViolation
from jobs.pipeline import run_stage
from jobs.quality import QualityGateFailed


def run_stage_task(stage: str, ds: str, run_id: str) -> str:
    from airflow.sdk.exceptions import AirflowFailException

    try:
        result = run_stage(stage, load_settings(), date.fromisoformat(ds), run_id)
    except (QualityGateFailed, ContractViolation) as exc:
        # Bad data does not get better by retrying: fail now, with the gate's summary.
        raise AirflowFailException(str(exc)) from exc
    return json.dumps(result, default=lambda o: getattr(o, "__dict__", str(o)))
