"""The benchmark's baselines, each run on the same data as our implementation.

- CLV (raw transactions to per-customer CLV: summary, BG/NBD and Gamma-Gamma fits, CLV) against
  `lifetimes`, on transactions simulated from known BTYD parameters, so both are also checked
  against the truth.
- RFM scoring against plain pandas on the same transactions.
- Identity resolution of CRM contact records against Splink (DuckDB backend), scored on the
  generator's ground truth.
"""

from __future__ import annotations

import logging
import multiprocessing
import shutil
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession

from jobs.segments import segmentation as segments
from jobs.value import btyd, clv

CLV_PARAMETERS = ("r", "alpha", "a", "b", "p", "q", "gamma")


# -- simulated transactions ----------------------------------------------------------------------
def simulate_transactions(path: Path, customers: int, bg: btyd.BetaGeo, gg: btyd.GammaGamma, end: date,
                          history_days: int, seed: int, batch: int = 2_000_000) -> int:
    """Write (customer_id, ts, amount) Parquet for `customers` acquired uniformly over the history, buying
    by BG/NBD and spending by Gamma-Gamma (day units); returns the rows written. Vectorised, in batches of
    customers, so ten million customers take a minute and bounded memory."""
    rng = np.random.default_rng(seed)
    start = np.datetime64(end - timedelta(days=history_days - 1), "s")
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with pq.ParquetWriter(str(path), pa.schema([("customer_id", pa.int64()), ("ts", pa.timestamp("s", tz="UTC")),
                                               ("amount", pa.float64())])) as writer:
        for first in range(0, customers, batch):
            n = min(batch, customers - first)
            lam = rng.gamma(bg.r, 1.0 / bg.alpha, n)
            p_drop = rng.beta(bg.a, bg.b, n)
            nu = rng.gamma(gg.q, 1.0 / gg.gamma, n)
            current = rng.uniform(0, history_days - 1, n)
            ids, times = [np.arange(n)], [current.copy()]
            active = np.ones(n, dtype=bool)
            while active.any():
                who = np.flatnonzero(active)
                nxt = current[who] + rng.exponential(1.0 / lam[who])
                within = nxt < history_days
                ids.append(who[within])
                times.append(nxt[within])
                current[who] = nxt
                active[who[~within | (rng.random(len(who)) < p_drop[who])]] = False
            who, at = np.concatenate(ids), np.concatenate(times)
            amount = np.round(rng.gamma(gg.p, 1.0 / nu[who]), 2)
            ts = start + (at * 86400).astype("timedelta64[s]")
            writer.write_table(pa.table({"customer_id": who + first, "ts": pa.array(ts, pa.timestamp("s", tz="UTC")),
                                         "amount": amount}))
            rows += len(who)
    return rows


def _transactions(spark: SparkSession, path: Path) -> DataFrame:
    """The simulated file as `cdp clv` reads it: integer customer ids stay integers, as in the baselines."""
    return spark.read.parquet(str(path))


# -- CLV ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClvRun:
    seconds: float
    parameters: dict[str, float]    # r, alpha, a, b (BG/NBD, days), p, q, gamma (Gamma-Gamma)
    customers: int
    phases: dict[str, float] | None = None    # seconds per step, where measured


def clv_spark(spark: SparkSession, path: Path, as_of: date, value: clv.ValueSettings, out: Path) -> ClvRun:
    """Ours: the steps of `cdp clv` (`clv.fit_and_score_file` without its model.json), from the Parquet file
    to per-customer CLV written as Parquet, timed one by one."""
    clock = [time.monotonic()]

    def lap() -> None:
        clock.append(time.monotonic())

    summary = clv.customer_summary(clv.daily_transactions(_transactions(spark, path)), as_of,
                                   value.unit).localCheckpoint()
    lap()
    points = clv.fit_points(summary)
    models = clv.fit_models(points)
    lap()
    clv.score(summary, models.purchases, models.spend, value, points.purchases).write.mode("overwrite") \
        .parquet(str(out / "customers"))
    lap()
    phases = dict(zip(("summary", "fits", "score and write"),
                      (round(b - a, 1) for a, b in pairwise(clock))))
    return ClvRun(clock[-1] - clock[0], asdict(models.purchases) | asdict(models.spend), summary.count(), phases)


def clv_lifetimes(path: Path, as_of: date, value: clv.ValueSettings) -> ClvRun:
    """`lifetimes` doing the same: summary from transactions, BG/NBD and Gamma-Gamma fits, CLV of everyone."""
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import summary_data_from_transaction_data

    started = time.monotonic()
    transactions = pd.read_parquet(path)
    transactions["date"] = transactions["ts"].dt.tz_localize(None).dt.normalize()
    freq = {"day": "D", "week": "W"}[value.unit]
    summary = summary_data_from_transaction_data(transactions, "customer_id", "date", monetary_value_col="amount",
                                                 observation_period_end=pd.Timestamp(as_of), freq=freq)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bgf = BetaGeoFitter().fit(summary["frequency"], summary["recency"], summary["T"])
        repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
        ggf = GammaGammaFitter().fit(repeat["frequency"], repeat["monetary_value"])
        months = int(np.ceil(value.clv_horizon_days / value.period_days))
        ggf.customer_lifetime_value(bgf, summary["frequency"], summary["recency"], summary["T"],
                                    summary["monetary_value"], time=months,
                                    discount_rate=(1 + value.annual_discount_rate) ** (1 / 12) - 1, freq=freq)
    seconds = time.monotonic() - started
    parameters = {k: float(bgf.params_[k]) for k in ("r", "alpha", "a", "b")} | \
        {"p": float(ggf.params_["p"]), "q": float(ggf.params_["q"]), "gamma": float(ggf.params_["v"])}
    return ClvRun(seconds, parameters, len(summary))


def relative_differences(ours: dict[str, float], reference: dict[str, float]) -> dict[str, float]:
    return {k: abs(ours[k] - reference[k]) / abs(reference[k]) for k in reference}


def true_parameters(bg: btyd.BetaGeo, gg: btyd.GammaGamma) -> dict[str, float]:
    return asdict(bg) | asdict(gg)


# -- RFM ---------------------------------------------------------------------------------------------
def rfm_spark(spark: SparkSession, path: Path, as_of: date, quantile_error: float) -> tuple[float, DataFrame]:
    """Ours: daily transactions, purchase summary and quintile scores, materialised."""
    started = time.monotonic()
    daily = clv.daily_transactions(_transactions(spark, path))
    scored = segments.rfm_scores(segments.purchase_summary(daily, as_of).localCheckpoint(), quantile_error) \
        .select("customer_id", "r_score", "f_score", "m_score").localCheckpoint()
    return time.monotonic() - started, scored


def _quintile(values: pd.Series, higher_is_better: bool) -> pd.Series:
    bounds = values.quantile([0.2, 0.4, 0.6, 0.8], interpolation="lower").to_numpy()
    above = (values.to_numpy()[:, None] > bounds[None, :]).sum(axis=1)
    return pd.Series(1 + above if higher_is_better else 5 - above, index=values.index)


def rfm_pandas(path: Path, as_of: date) -> tuple[float, pd.DataFrame]:
    """The same scores in plain pandas: the baseline a data scientist would write."""
    started = time.monotonic()
    transactions = pd.read_parquet(path)
    transactions["txn_date"] = transactions["ts"].dt.tz_localize(None).dt.normalize()
    transactions = transactions[transactions["txn_date"] <= pd.Timestamp(as_of)]
    daily = transactions.groupby(["customer_id", "txn_date"], sort=False)["amount"].sum().reset_index()
    summary = daily.groupby("customer_id").agg(last=("txn_date", "max"), frequency=("txn_date", "size"),
                                               monetary=("amount", "sum"))
    summary["recency_days"] = (pd.Timestamp(as_of) - summary["last"]).dt.days
    scores = pd.DataFrame({"r_score": _quintile(summary["recency_days"], higher_is_better=False),
                           "f_score": _quintile(summary["frequency"], higher_is_better=True),
                           "m_score": _quintile(summary["monetary"], higher_is_better=True)})
    return time.monotonic() - started, scores.reset_index()


def score_agreement(ours: pd.DataFrame, reference: pd.DataFrame) -> float:
    """Share of customers given the same (r, f, m) scores by both."""
    both = ours.astype({"customer_id": str}).merge(reference.astype({"customer_id": str}), on="customer_id",
                                                   suffixes=("", "_ref"))
    same = np.ones(len(both), dtype=bool)
    for score in ("r_score", "f_score", "m_score"):
        same &= both[score].to_numpy() == both[f"{score}_ref"].to_numpy()
    return float(same.mean()) if len(both) else 0.0


# -- identity resolution -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PairwiseF1:
    precision: float
    recall: float
    f1: float

    @classmethod
    def of(cls, clusters: pd.Series, truth: pd.Series) -> PairwiseF1:
        """Pairwise scores of `clusters` (record -> cluster) against `truth` (record -> person)."""
        both = pd.DataFrame({"cluster": clusters}).join(truth.rename("person"), how="inner")

        def pairs(counts: pd.Series) -> float:
            n = counts.to_numpy(dtype="float64")
            return float((n * (n - 1) / 2).sum())

        true_positive = pairs(both.groupby(["cluster", "person"]).size())
        predicted, actual = pairs(both.groupby("cluster").size()), pairs(both.groupby("person").size())
        precision = true_positive / predicted if predicted else 1.0
        recall = true_positive / actual if actual else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return cls(precision, recall, f1)


def splink_records(records: DataFrame) -> pd.DataFrame:
    """Match-form records as Splink input through Arrow: the columns our matcher compares and blocks on
    (DuckDB has no soundex, so the block keys come as plain columns and both matchers block alike)."""
    from jobs.identity.matching import splink_input

    return splink_input(records).toPandas()


def splink_clusters_apart(records: pd.DataFrame, blocking_rules: list[list[str]], threshold: float,
                          threads: int, memory: str, spill: Path) -> tuple[float, pd.Series]:
    """`splink_clusters` in a child process: at 1M records DuckDB's memory beside the Spark driver's heap
    got the Spark JVM killed. The child is the one the kernel kills first, and DuckDB spills past
    `memory` to `spill`."""
    spill.mkdir(parents=True, exist_ok=True)
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_first_to_kill) as child:
            return child.submit(splink_clusters, records, blocking_rules, threshold, threads, memory,
                                str(spill)).result()
    except BrokenProcessPool as exc:
        raise RuntimeError(f"the Splink baseline's process was killed (out of memory?) on {len(records):,} "
                           f"records; lower bench.identity_memory (now {memory})") from exc
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def _first_to_kill() -> None:
    Path("/proc/self/oom_score_adj").write_text("1000")


def splink_clusters(records: pd.DataFrame, blocking_rules: list[list[str]], threshold: float,
                    threads: int, memory: str | None = None, spill: str | None = None) -> tuple[float, pd.Series]:
    """Splink 5 on DuckDB as its documentation sets up a person dedupe: its stock comparisons (Jaro-Winkler
    names and street, its date-of-birth comparison, exact postcode, e-mail and phone), our blocking rules,
    u by random sampling, m by EM, links at `threshold`, connected components."""
    import duckdb
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    started = time.monotonic()
    config: dict[str, str | int] = {"threads": threads}
    if memory:
        config |= {"memory_limit": memory, "temp_directory": spill or ""}
    db = DuckDBAPI(connection=duckdb.connect(":memory:", config=config))
    settings = SettingsCreator(
        link_type="dedupe_only", unique_id_column_name="unique_id",
        comparisons=[
            cl.JaroWinklerAtThresholds("given_name", [0.92, 0.8]),
            cl.JaroWinklerAtThresholds("family_name", [0.92, 0.8]),
            cl.DateOfBirthComparison("birth_date", input_is_string=True),
            cl.JaroWinklerAtThresholds("street", [0.9]),
            cl.ExactMatch("postcode"),
            cl.ExactMatch("email_key"),
            cl.ExactMatch("phone_key"),
            # Not gender or loyalty number: matches never disagree on them in this data, so EM drives
            # their m probabilities to zero and Splink 5 refuses the underflow (ValueError at 1e-300).
        ],
        blocking_rules_to_generate_predictions=[block_on(*rule) for rule in blocking_rules],
        retain_intermediate_calculation_columns=False,
    )
    linker = Linker(db.register(records, dataset_display_name="contacts"), settings, log_level=logging.WARNING)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("email_key"), block_on("phone_key"), block_on("given_name", "family_name", "birth_date")],
        recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=5e6, seed=1)
    # EM blocked on who the person is (given name, birth date), then on e-mail: blocked on family name and
    # postcode instead, EM learns "same household" as the match class and precision halves.
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("given_soundex", "birth_date"))
    if records["email_key"].notna().any():
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("email_key"))
    predictions = linker.inference.predict(threshold_match_probability=threshold)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=threshold).as_pandas_dataframe()
    return time.monotonic() - started, clusters.set_index("unique_id")["cluster_id"]
