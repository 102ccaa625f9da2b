"""CLV: the BTYD fits recover known parameters, agree with lifetimes, and Spark follows the conventions."""

from __future__ import annotations

import warnings
from dataclasses import asdict
from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession

from jobs.value import btyd, clv
from jobs.value.registry import promotion

TRUE_BG = btyd.BetaGeo(r=0.25, alpha=4.0, a=0.8, b=2.5)       # CDNOW-like, in weeks
TRUE_GG = btyd.GammaGamma(p=6.0, q=4.0, gamma=15.0)


def simulate_bgnbd(rng: np.random.Generator, model: btyd.BetaGeo, n: int) -> tuple[np.ndarray, ...]:
    """(x, t_x, T) in weeks for `n` customers acquired on whole days over a year and a half."""
    T = rng.integers(70, 560, n) / 7.0
    lam = rng.gamma(model.r, 1.0 / model.alpha, n)
    p = rng.beta(model.a, model.b, n)
    x, t_x, now = np.zeros(n), np.zeros(n), np.zeros(n)
    active = np.ones(n, dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        nxt = now[idx] + rng.exponential(1.0 / lam[idx])
        within = nxt < T[idx]
        bought = idx[within]
        x[bought] += 1
        # Purchases land on whole days, like transactions grouped per day.
        t_x[bought] = np.floor(nxt[within] * 7) / 7
        now[idx] = nxt
        drops = rng.random(len(idx)) < p[idx]
        active[idx[~within | drops]] = False
    return x, np.minimum(t_x, T), T


def simulate_gamma_gamma(rng: np.random.Generator, model: btyd.GammaGamma, n: int) -> tuple[np.ndarray, ...]:
    x = 1 + rng.poisson(3, n)
    nu = rng.gamma(model.q, 1.0 / model.gamma, n)
    # The sum of x Gamma(p, nu) values is Gamma(x p, nu).
    means = rng.gamma(model.p * x, 1.0 / nu) / x
    return x.astype(float), means


def _points(*columns: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct rows with counts: the form the pipeline fits on."""
    rows, counts = np.unique(np.column_stack(columns), axis=0, return_counts=True)
    return [rows[:, i] for i in range(rows.shape[1])], counts


def test_bgnbd_recovers_the_parameters_it_was_simulated_from() -> None:
    x, t_x, T = simulate_bgnbd(np.random.default_rng(3), TRUE_BG, 200_000)
    (px, pt, pT), counts = _points(x, t_x, T)

    fitted, report = btyd.fit_bgnbd(px, pt, pT, counts)

    # 200,000 customers: r and alpha come back within about 2 %, a and b (the dropout, seen only
    # through who stops buying) within about 3 %; the bounds leave room for other seeds.
    assert report.customers == 200_000 and report.distinct_points < 100_000
    for name, tolerance in (("r", 0.05), ("alpha", 0.05), ("a", 0.06), ("b", 0.06)):
        assert getattr(fitted, name) == pytest.approx(getattr(TRUE_BG, name), rel=tolerance), name


def test_weighted_distinct_points_give_the_same_fit_as_every_customer() -> None:
    x, t_x, T = simulate_bgnbd(np.random.default_rng(4), TRUE_BG, 5_000)
    (px, pt, pT), counts = _points(x, t_x, T)
    weighted, w_report = btyd.fit_bgnbd(px, pt, pT, counts)
    every, e_report = btyd.fit_bgnbd(x, t_x, T)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(weighted, name) == pytest.approx(getattr(every, name), rel=1e-4)
    assert w_report.log_likelihood == pytest.approx(e_report.log_likelihood, rel=1e-9)


def test_gamma_gamma_recovers_the_parameters_it_was_simulated_from() -> None:
    x, means = simulate_gamma_gamma(np.random.default_rng(5), TRUE_GG, 200_000)
    fitted, _ = btyd.fit_gamma_gamma(x, means)
    # Within about 1 % on 200,000 customers; the bounds leave room for other seeds.
    for name in ("p", "q", "gamma"):
        assert getattr(fitted, name) == pytest.approx(getattr(TRUE_GG, name), rel=0.04), name


def _central_differences(f, at: np.ndarray, step: float = 1e-5) -> np.ndarray:
    return np.array([(f(at + step * e) - f(at - step * e)) / (2 * step) for e in np.eye(len(at))])


def test_analytic_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(11)
    x, t_x, T = simulate_bgnbd(rng, TRUE_BG, 3_000)
    (px, pt, pT), counts = _points(x, t_x, T)
    data = btyd.PurchaseData.of(px, pt, pT, counts)
    for log_params in (np.log([0.7, 30.0, 0.9, 5.0]), np.log([2.0, 3.0, 0.3, 0.8])):
        value, gradient = btyd.bgnbd_gradient(log_params, data)
        # The factored sum is the per-point likelihood, summed.
        assert value == pytest.approx(np.sum(counts * btyd.bgnbd_log_likelihood(log_params, px, pt, pT)), rel=1e-12)
        numeric = _central_differences(lambda v: btyd.bgnbd_gradient(v, data)[0], log_params)
        np.testing.assert_allclose(gradient, numeric, rtol=1e-6, atol=1e-4)
    gx, means = simulate_gamma_gamma(rng, TRUE_GG, 3_000)
    weights = rng.integers(1, 4, len(gx)).astype(float)
    spend = btyd.SpendData.of(gx, means, weights)
    for log_params in (np.log([4.0, 3.0, 10.0]), np.log([6.0, 4.0, 15.0])):
        value, gradient = btyd.gamma_gamma_gradient(log_params, spend)
        assert value == pytest.approx(weights @ btyd.gamma_gamma_log_likelihood(log_params, gx, means), rel=1e-12)
        numeric = _central_differences(lambda v: btyd.gamma_gamma_gradient(v, spend)[0], log_params)
        np.testing.assert_allclose(gradient, numeric, rtol=1e-6, atol=1e-4)


def test_fits_and_predictions_agree_with_lifetimes() -> None:
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    x, t_x, T = simulate_bgnbd(np.random.default_rng(6), TRUE_BG, 4_000)
    ours, _ = btyd.fit_bgnbd(x, t_x, T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = BetaGeoFitter().fit(x, t_x, T)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(ours, name) == pytest.approx(reference.params_[name], rel=0.01), name
    np.testing.assert_allclose(ours.p_alive(x, t_x, T),
                               reference.conditional_probability_alive(x, t_x, T), rtol=0.01)
    np.testing.assert_allclose(
        ours.expected_purchases(26.0, x, t_x, T),
        reference.conditional_expected_number_of_purchases_up_to_time(26.0, x, t_x, T), rtol=0.01)

    gx, means = simulate_gamma_gamma(np.random.default_rng(7), TRUE_GG, 3_000)
    gg, _ = btyd.fit_gamma_gamma(gx, means)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gg_reference = GammaGammaFitter().fit(gx, means)
    for ours_name, ref_name in (("p", "p"), ("q", "q"), ("gamma", "v")):
        assert getattr(gg, ours_name) == pytest.approx(gg_reference.params_[ref_name], rel=0.01), ours_name
    np.testing.assert_allclose(gg.expected_spend(gx, means),
                               gg_reference.conditional_expected_average_profit(gx, means), rtol=0.01)


def test_a_fit_that_cannot_converge_is_an_error() -> None:
    with pytest.raises(ValueError, match="t_x <= T"):
        btyd.fit_bgnbd(np.array([1.0]), np.array([5.0]), np.array([2.0]))
    with pytest.raises(ValueError, match="repeat purchases"):
        btyd.fit_bgnbd(np.zeros(50), np.zeros(50), np.full(50, 10.0))   # nobody bought twice
    x, t_x, T = simulate_bgnbd(np.random.default_rng(8), TRUE_BG, 2_000)
    with pytest.raises(btyd.FitDidNotConverge, match="did not converge"):
        btyd.fit_bgnbd(x, t_x, T, max_iterations=2)


def test_summary_follows_the_literature_conventions(spark: SparkSession) -> None:
    transactions = spark.createDataFrame([
        ("c1", datetime(2026, 1, 1, 9), 10.0),
        ("c1", datetime(2026, 1, 1, 18), 5.0),      # same day: one transaction of 15
        ("c1", datetime(2026, 1, 8, 12), 20.0),
        ("c1", datetime(2026, 1, 22, 12), 40.0),
        ("c1", datetime(2026, 3, 1, 12), 99.0),     # after the calibration end
        ("c2", datetime(2026, 1, 15, 12), 7.0),     # one transaction only
    ], "customer_id string, ts timestamp, amount double")
    daily = clv.daily_transactions(transactions)

    rows = {r.customer_id: r for r in clv.customer_summary(daily, date(2026, 1, 29), "week").collect()}
    holdout = {r.customer_id: r.holdout_frequency
               for r in clv.holdout_purchases(daily, date(2026, 1, 29), date(2026, 3, 31)).collect()}

    c1 = rows["c1"]
    assert (c1.frequency, c1.recency, c1.T) == (2, pytest.approx(21 / 7), pytest.approx(28 / 7))
    assert c1.monetary_value == pytest.approx(30.0)         # mean of the repeats (20, 40), not the first
    assert (rows["c2"].frequency, rows["c2"].recency, rows["c2"].monetary_value) == (0, 0.0, 0.0)
    assert rows["c2"].T == pytest.approx(14 / 7)            # not rounded to whole weeks
    assert holdout == {"c1": 1}
    in_days = clv.customer_summary(daily, date(2026, 1, 29), "day").where("customer_id = 'c1'").first()
    assert (in_days.recency, in_days.T) == (21.0, 28.0)


def test_scores_follow_from_the_model(spark: SparkSession) -> None:
    summary = pd.DataFrame({"customer_id": ["a", "b"], "frequency": [0, 4], "recency": [0.0, 30.0],
                            "T": [40.0, 40.0], "monetary_value": [0.0, 50.0]})
    value = clv.ValueSettings("week", (30, 365), 365, 30, 0.1, 0.3)
    scored = clv.score_frame(summary, TRUE_BG, TRUE_GG, value)
    assert scored.loc[0, "p_alive"] == 1.0                  # no repeat yet: BG/NBD says alive
    assert 0 < scored.loc[1, "p_alive"] < 1
    assert (scored["expected_purchases_30d"] < scored["expected_purchases_365d"]).all()
    assert scored.loc[0, "expected_spend"] == pytest.approx(TRUE_GG.p * TRUE_GG.gamma / (TRUE_GG.q - 1))
    # Discounting: current value is below undiscounted expected margin over the horizon.
    undiscounted = scored["expected_purchases"] * scored["expected_spend"] * 0.3
    assert (scored["current_value"] < undiscounted).all() and (scored["current_value"] > 0.9 * undiscounted).all()


def test_spark_scores_equal_the_point_by_point_numpy_ones(spark: SparkSession) -> None:
    # Weeks on whole days, as the pipeline's summary has them; many customers share (x, T).
    x, t_x, T = simulate_bgnbd(np.random.default_rng(12), TRUE_BG, 3_000)
    rng = np.random.default_rng(13)
    spend = np.where(x > 0, rng.gamma(6.0, 5.0, len(x)), 0.0)
    summary = pd.DataFrame({"customer_id": [f"c{i}" for i in range(len(x))], "frequency": x.astype("int64"),
                            "recency": t_x, "T": T, "monetary_value": spend})
    value = clv.ValueSettings("week", (30, 90, 365), 365, 30, 0.1, 0.3)
    frame = spark.createDataFrame(summary)

    scored = clv.score(frame, TRUE_BG, TRUE_GG, value).toPandas().set_index("customer_id").loc[summary["customer_id"]]
    reference = clv.score_frame(summary, TRUE_BG, TRUE_GG, value).set_index("customer_id")
    assert len(scored) == len(summary) and (summary["frequency"] > 0).any() and (summary["frequency"] == 0).any()
    for column in reference.columns:
        np.testing.assert_allclose(scored[column].to_numpy(), reference[column].to_numpy(), rtol=1e-9, err_msg=column)

    actual = spark.createDataFrame([("c0", 2), ("c1", 1)], "customer_id string, holdout_frequency long")
    predictions = clv.holdout_predictions(frame, actual, TRUE_BG, 13.0).toPandas().set_index("customer_id") \
        .loc[summary["customer_id"]]
    np.testing.assert_allclose(predictions["predicted"].to_numpy(), TRUE_BG.expected_purchases(13.0, x, t_x, T),
                               rtol=1e-9)
    assert predictions["actual"].sum() == 3.0 and predictions.loc["c0", "actual"] == 2.0


def test_a_refit_that_validates_worse_is_refused() -> None:
    # The in-force model's MAE on the candidate's window decides, not the one recorded when it was fitted.
    current = {"model_version": "clv-old", "holdout_mae": 9.0}
    assert promotion(1.0, current, 1.0, 0.0)[0] is True                 # as good: promoted
    promoted, decision = promotion(1.0001, current, 1.0, 0.0)          # any worse, with zero tolerance: refused
    assert promoted is False and "clv-old keeps scoring" in decision and "1.0000 on the same holdout" in decision
    assert promotion(1.05, current, 1.0, 0.1)[0] is True
    assert promotion(1.2, current, 1.0, 0.1)[0] is False
    assert promotion(5.0, None, None, 0.0) == (True, "first model")


def test_a_model_in_force_is_evaluated_in_the_refits_time_unit() -> None:
    from jobs.value.registry import in_unit

    weekly = {"time_unit": "week", **asdict(TRUE_BG)}
    daily = in_unit(weekly, "day")
    x, t_x, T = simulate_bgnbd(np.random.default_rng(14), TRUE_BG, 500)
    # The same customers in days: the same P(alive) and the same purchases over the same 13 weeks.
    np.testing.assert_allclose(daily.p_alive(x, t_x * 7, T * 7), TRUE_BG.p_alive(x, t_x, T), rtol=1e-12)
    np.testing.assert_allclose(daily.expected_purchases(91.0, x, t_x * 7, T * 7),
                               TRUE_BG.expected_purchases(13.0, x, t_x, T), rtol=1e-9)


def _transactions_csv(path, rng: np.random.Generator, customers: int = 400) -> None:
    """Daily purchases of customers drawn from the true BG/NBD, written as a plain transactions file."""
    rows = []
    for c in range(customers):
        start = int(rng.integers(0, 300))
        lam, p = rng.gamma(TRUE_BG.r, 1.0 / TRUE_BG.alpha) / 7, rng.beta(TRUE_BG.a, TRUE_BG.b)
        day = start
        while day < 540:
            rows.append((f"cust-{c}", str(date.fromordinal(date(2025, 1, 1).toordinal() + int(day))),
                         round(float(rng.gamma(6.0, 5.0)), 2)))
            day += max(1.0, rng.exponential(1.0 / max(lam, 1e-6)))
            if rng.random() < p:
                break
    pd.DataFrame(rows, columns=["customer", "order_date", "amount"]).to_csv(path, index=False)


def test_cdp_clv_fits_any_transactions_file(spark: SparkSession, tmp_path) -> None:
    import json

    from jobs.cli import main

    _transactions_csv(tmp_path / "tx.csv", np.random.default_rng(9))
    main(["clv", "--transactions", str(tmp_path / "tx.csv"), "--calibration-end", "2026-01-31",
          "--holdout-end", "2026-06-24", "--time-unit", "week", "--out", str(tmp_path / "out"),
          "--customer-column", "customer"])

    model = json.loads((tmp_path / "out" / "model.json").read_text())
    assert set(model["bgnbd"]) >= {"r", "alpha", "a", "b", "log_likelihood"}
    assert set(model["gamma_gamma"]) >= {"p", "q", "gamma", "log_likelihood"}
    assert model["holdout"]["mae"] >= 0 and (tmp_path / "out" / "holdout.png").is_file()
    customers = spark.read.parquet(str(tmp_path / "out" / "customers"))
    assert customers.count() == model["bgnbd"]["customers"] + customers.where("T = 0").count()
    assert customers.where("p_alive < 0 OR p_alive > 1 OR expected_spend <= 0").count() == 0
    # The fitted parameters are lifetimes' on the same summary (the file's customers as of the calibration end).
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    # In customer order: lifetimes' Gamma-Gamma fit on this flat ridge converges or not with the order it sums in.
    summary = customers.where("T > 0").orderBy("customer_id") \
        .select("frequency", "recency", "T", "monetary_value", "expected_spend").toPandas()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bg = BetaGeoFitter().fit(summary["frequency"], summary["recency"], summary["T"])
        repeat = summary[summary["frequency"] > 0]
        gg = GammaGammaFitter().fit(repeat["frequency"], repeat["monetary_value"])
    for name in ("r", "alpha", "a", "b"):
        assert model["bgnbd"][name] == pytest.approx(bg.params_[name], rel=0.01), name
    # Spend in this file has no heterogeneity between customers, so q and gamma lie on a flat ridge (both
    # large, their ratio fixed): compare what is identified, the mean spend p gamma / (q - 1) and each
    # customer's expected spend.
    ours_gg, theirs = model["gamma_gamma"], gg.params_
    assert ours_gg["p"] * ours_gg["gamma"] / (ours_gg["q"] - 1) == pytest.approx(
        theirs["p"] * theirs["v"] / (theirs["q"] - 1), rel=0.01)
    np.testing.assert_allclose(repeat["expected_spend"], gg.conditional_expected_average_profit(
        repeat["frequency"], repeat["monetary_value"]), rtol=0.01)


def test_cdp_clv_names_what_is_wrong_with_a_file(spark: SparkSession, tmp_path) -> None:
    (tmp_path / "cols.csv").write_text("who,order_date,amount\na,2026-01-01,10\n")
    with pytest.raises(clv.TransactionsError, match=r"\['customer_id'\] not found"):
        clv.read_transactions(spark, tmp_path / "cols.csv")
    (tmp_path / "bad.csv").write_text("customer_id,order_date,amount\na,2026-01-01,10\na,01/02/2026x,5\n"
                                      "b,2026-01-03,-4\n")
    with pytest.raises(clv.TransactionsError, match=r"1 unparseable order_date.*'01/02/2026x'.*1 negative amount"):
        clv.read_transactions(spark, tmp_path / "bad.csv")


def test_cdp_clv_reads_parquet_with_nanosecond_timestamps(spark: SparkSession, tmp_path) -> None:
    # pandas' default to_parquet keeps datetime64[ns]; Spark alone rejects that type (PARQUET_TYPE_ILLEGAL).
    stamps = ["2026-01-01 10:00:00.123456789", "2026-01-05 00:00:00", "2026-01-02 00:00:00"]
    frame = pd.DataFrame({"customer_id": ["a", "a", "b"], "amount": [10.0, 5.5, 7.0],
                          "order_ts": pd.to_datetime(stamps, format="ISO8601")})
    frame.to_parquet(tmp_path / "tx.parquet")
    import pyarrow.parquet as pq

    assert pq.read_schema(tmp_path / "tx.parquet").field("order_ts").type.unit == "ns"
    rows = clv.read_transactions(spark, tmp_path / "tx.parquet").orderBy("ts").collect()
    assert [(r.customer_id, r.ts.isoformat(), r.amount) for r in rows] == [
        ("a", "2026-01-01T10:00:00.123456", 10.0), ("b", "2026-01-02T00:00:00", 7.0), ("a", "2026-01-05T00:00:00", 5.5)]
    # Integer customer ids stay integers; any other type is read as text.
    frame.assign(customer_id=[7, 7, 9]).to_parquet(tmp_path / "ids.parquet")
    frame.assign(customer_id=[1.5, 1.5, 2.0]).to_parquet(tmp_path / "odd.parquet")
    assert sorted({r.customer_id for r in clv.read_transactions(spark, tmp_path / "ids.parquet").collect()}) == [7, 9]
    assert sorted({r.customer_id for r in clv.read_transactions(spark, tmp_path / "odd.parquet").collect()}) == \
        ["1.5", "2.0"]
