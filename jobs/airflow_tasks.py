"""The bridge from Airflow tasks to stage entry points: settings from the environment, the
logical date as the as-of date, and a short summary as the task's return value (XCom)."""

from __future__ import annotations

import json
from datetime import date

from jobs.config import load_settings
from jobs.pipeline import run_stage


def run_stage_task(stage: str, ds: str, run_id: str) -> str:
    result = run_stage(stage, load_settings(), date.fromisoformat(ds), run_id)
    return json.dumps(result, default=lambda o: getattr(o, "__dict__", str(o)))
