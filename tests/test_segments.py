"""Segments: hand-computed RFM, tiers and quadrants; membership carried over; planted clusters recovered,
the driver's K-means against MLlib's on the same points (lifecycle: tests/test_lifecycle.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import numpy as np
import pytest
from pyspark.ml.clustering import KMeans
from pyspark.ml.linalg import Vectors
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from scipy.cluster.vq import vq

from jobs.platform.config import load_settings
from jobs.platform.sampling import sample_matrix
from jobs.platform.settings import SegmentsConfig
from jobs.segments import kmeans
from jobs.segments import segmentation as segments

CONF = load_settings("test", environ={})
SETTINGS = segments.SegmentSettings.from_conf(CONF.segments)


def _rows(df: DataFrame, key: str = "customer_id") -> dict:
    return {r[key]: r.asDict() for r in df.collect()}


def test_rfm_scores_are_quintiles_and_segments_follow_the_rules(spark: SparkSession) -> None:
    # Pairs of equal values: the quintile bounds are 1, 2, 3, 4 (days: 10, 20, 30, 40) whatever the
    # quantile convention, so each pair gets its own score.
    summary = spark.createDataFrame(
        [(f"c{i}", 10 * (i // 2 + 1), i // 2 + 1, float(100 * (5 - i // 2))) for i in range(10)],
        "customer_id string, recency_days int, frequency long, monetary double")

    scored = _rows(segments.rfm_scores(summary, 0.0).withColumn("rfm_segment",
                                                                 segments.rfm_segment(SETTINGS.rfm_rules)))

    # c0/c1: most recent (10 days), fewest purchases, highest spend.
    assert [(scored[f"c{i}"]["r_score"], scored[f"c{i}"]["f_score"], scored[f"c{i}"]["m_score"])
            for i in range(0, 10, 2)] == [(5, 1, 5), (4, 2, 4), (3, 3, 3), (2, 4, 2), (1, 5, 1)]
    assert [scored[f"c{i}"]["rfm_segment"] for i in range(0, 10, 2)] == \
        ["New", "Potential loyalist", "Need attention", "At risk", "Can't lose"]


def test_rfm_rules_must_cover_every_score_pair() -> None:
    conf = CONF.segments.model_dump()
    with pytest.raises(ValueError, match=r"rfm_segments\n.*\(1, 1\)"):
        SegmentsConfig.model_validate({**conf, "rfm_segments": [r for r in conf["rfm_segments"]
                                                                 if r["name"] != "Lost"]})


def test_value_tiers_and_quadrants(spark: SparkSession) -> None:
    values = spark.createDataFrame([
        ("a", 50.0, 10.0, 5.0), ("b", 30.0, 8.0, 0.0), ("c", 10.0, 2.0, 5.0), ("d", 5.0, 1.0, 3.0),
        ("e", 5.0, 0.0, 0.0)], "customer_id string, clv double, current_value double, potential_value double")

    tiers = {k: v["value_tier"] for k, v in _rows(segments.value_tiers(values, (0.7, 0.9))).items()}
    quadrants = {k: v["value_quadrant"] for k, v in
                 _rows(segments.value_quadrants(values, (0.5, 0.5), 0.0)).items()}

    # CLV share before each customer: a 0, b 0.5, c 0.8, d 0.9, e 0.95.
    assert tiers == {"a": "high", "b": "high", "c": "medium", "d": "low", "e": "low"}
    # Medians: current 2, potential 3; high = positive and at or above the median.
    assert quadrants == {"a": "platinum", "b": "gold", "c": "platinum", "d": "iron", "e": "lead"}

    # The matrix: each quadrant's size, worth and the strategy conf gives it; shares of all five.
    placed = spark.createDataFrame(list(quadrants.items()), "customer_id string, value_quadrant string")
    matrix = _rows(segments.value_matrix(placed, values, SETTINGS.strategies), "value_quadrant")
    assert {q: (r["customers"], r["customer_share"], r["current_value"], r["potential_value"], r["clv"])
            for q, r in matrix.items()} == {"platinum": (2, 0.4, 12.0, 10.0, 60.0), "gold": (1, 0.2, 8.0, 0.0, 30.0),
                                            "iron": (1, 0.2, 1.0, 3.0, 5.0), "lead": (1, 0.2, 0.0, 0.0, 5.0)}
    assert {q: (r["investment"], r["strategy"]) for q, r in matrix.items()} == \
        {q: (s["investment"], s["strategy"]) for q, s in SETTINGS.strategies.items()}


def test_membership_keeps_the_entry_date_while_a_customer_stays(spark: SparkSession) -> None:
    previous = spark.createDataFrame([
        (date(2026, 1, 1), "value_tier", "high", "a", date(2025, 12, 1)),
        (date(2026, 1, 1), "value_tier", "high", "b", date(2026, 1, 1))],
        "as_of_date date, segment_type string, segment string, customer_id string, entered_on date")
    today = spark.createDataFrame([("a", "high"), ("b", "low"), ("c", None)], "customer_id string, value_tier string")

    rows = {(r.customer_id, r.segment): r.entered_on
            for r in segments.membership(today, ["value_tier"], previous, date(2026, 1, 2)).collect()}

    assert rows == {("a", "high"): date(2025, 12, 1), ("b", "low"): date(2026, 1, 2)}


def test_kmeans_recovers_planted_groups_and_chooses_their_number(spark: SparkSession) -> None:
    rng = np.random.default_rng(5)
    # Three kinds of customer: lapsed one-off online buyers, frequent broad online buyers, store regulars.
    groups = {"one_off": (300, 1, 30, 2, 0.95, 1, 0), "frequent": (20, 12, 900, 40, 0.9, 6, 1),
              "store": (60, 6, 300, 1, 0.05, 3, 3)}
    rows = []
    for name, centre in groups.items():
        for i in range(150):
            noisy = [max(0.0, v * rng.lognormal(0, 0.15)) for v in centre]
            noisy[4] = float(np.clip(centre[4] + rng.normal(0, 0.05), 0, 1))
            rows.append((f"{name}-{i}", *noisy))
    features = spark.createDataFrame(rows, "customer_id string, " + ", ".join(
        f"{f} double" for f in segments.CLUSTER_FEATURES))
    settings = replace(SETTINGS, quantile_error=0.0, k_range=(2, 6), cluster_sample=10_000, seed=7)

    clustering = segments.cluster_customers(features, settings)

    assert clustering.k == 3 and clustering.silhouette > 0.7
    found = clustering.assignments.withColumn("group", F.split("customer_id", "-")[0]) \
        .groupBy("group").agg(F.countDistinct("cluster").alias("clusters"), F.count("*").alias("n")).collect()
    assert {r.group: (r.clusters, r.n) for r in found} == {g: (1, 150) for g in groups}
    labels = _rows(clustering.profiles, "cluster")
    store_cluster = clustering.assignments.where(F.col("customer_id") == "store-0").first().cluster
    assert "in store" in labels[store_cluster]["cluster_label"]
    assert labels[store_cluster]["centroid"]["online_share"] == pytest.approx(0.05, abs=0.02)


def test_the_driver_kmeans_finds_mllibs_partition_and_centroids_on_the_same_points(spark: SparkSession) -> None:
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 1.0], [0.0, 5.0, -1.0], [3.0, 4.0, 3.0]])
    points = np.concatenate([c + rng.normal(0, 0.6, (100, 3)) for c in centres])
    frame = spark.createDataFrame([(Vectors.dense(p),) for p in points], ["features"])

    ours = kmeans.fit(points, 4, seed=3)
    # The reference: MLlib's K-means on the same points, the best of as many seeds as our restarts (one
    # seed alone can settle in a local optimum: seed 3 merges two of these groups).
    mllib = min((KMeans(k=4, seed=s, maxIter=100, tol=1e-9).fit(frame) for s in range(kmeans.RESTARTS)),
                key=lambda m: m.summary.trainingCost)
    theirs = np.array([r.prediction for r in mllib.transform(frame).select("prediction").collect()])

    # One partition up to the clusters' names, with the same centroids.
    pairs = set(zip(ours.labels.tolist(), theirs.tolist(), strict=True))
    assert len(pairs) == 4 and len({a for a, _ in pairs}) == 4 and len({b for _, b in pairs}) == 4
    for a, b in pairs:
        assert ours.centroids[a] == pytest.approx(mllib.clusterCenters()[b], abs=1e-9)
    assert ours.inertia == pytest.approx(mllib.summary.trainingCost, rel=1e-9)


def test_silhouettes_agree_with_their_definition_point_by_point() -> None:
    rng = np.random.default_rng(4)
    points = np.concatenate([rng.normal(c, 1.0, (20, 2)) for c in (0.0, 3.0, 6.0)])
    fits = {k: kmeans.fit(points, k, seed=1) for k in (2, 3, 4)}

    def brute(labels: np.ndarray) -> float:
        # Rousseeuw (1987): a = mean distance to the rest of one's cluster, b = the least mean distance
        # to another cluster, s = (b - a) / max(a, b); 0 for a point alone in its cluster.
        values = []
        for i, p in enumerate(points):
            distance = np.linalg.norm(points - p, axis=1)
            own = (labels == labels[i]) & (np.arange(len(points)) != i)
            if not own.any():
                values.append(0.0)
                continue
            a = distance[own].mean()
            b = min(distance[labels == c].mean() for c in set(labels.tolist()) - {labels[i]})
            values.append((b - a) / max(a, b))
        return float(np.mean(values))

    assert kmeans.silhouettes(points, fits, seed=0) == pytest.approx(
        {k: brute(f.labels) for k, f in fits.items()}, abs=1e-9)


def test_fewer_distinct_customers_than_k_give_fewer_clusters_and_a_finite_silhouette() -> None:
    points = np.concatenate([np.ones((30, 3)), np.zeros((30, 3))])
    fits = {k: kmeans.fit(points, k, seed=2) for k in (2, 3)}

    assert len(fits[3].centroids) == 2 and set(fits[3].labels.tolist()) == {0, 1}
    assert kmeans.silhouettes(points, fits, seed=0) == {2: 1.0, 3: 1.0}
    alike = {1: kmeans.fit(np.ones((10, 3)), 2, seed=2)}
    assert len(alike[1].centroids) == 1 and kmeans.silhouettes(np.ones((10, 3)), alike, seed=0) == {1: 0.0}


def test_the_nearest_centroid_column_is_scipys_assignment(spark: SparkSession) -> None:
    rng = np.random.default_rng(8)
    points, centroids = rng.normal(0, 1, (300, 3)), rng.normal(0, 1, (5, 3))
    frame = spark.createDataFrame([(i, *map(float, p)) for i, p in enumerate(points)],
                                  "i int, a double, b double, c double")

    assigned = {r.i: r.cluster for r in frame.select("i", kmeans.nearest_centroid(centroids, ["a", "b", "c"])
                                                      .alias("cluster")).collect()}

    assert [assigned[i] for i in range(len(points))] == vq(points, centroids)[0].tolist()


def test_a_fit_sample_is_bounded_and_the_same_customers_whatever_the_partitioning(spark: SparkSession) -> None:
    frame = spark.createDataFrame([(f"c{i}", float(i)) for i in range(4000)], "customer_id string, x double")

    drawn = sample_matrix(frame, "customer_id", ["x"], 4000, 1000)
    again = sample_matrix(frame.repartition(7, "x"), "customer_id", ["x"], 4000, 1000)

    assert 850 < len(drawn) < 1150 and np.array_equal(drawn, again)
    assert len(sample_matrix(frame, "customer_id", ["x"], 4000, 5000)) == 4000


def test_purchase_intent_bands(spark: SparkSession) -> None:
    scores = spark.createDataFrame([("a", 0.7), ("b", 0.5), ("c", 0.3), ("d", 0.1), ("e", None)],
                                   "customer_id string, purchase_probability double")
    bands = {r.customer_id: r.band for r in scores.select("customer_id", segments.purchase_intent((0.5, 0.2))
                                                                  .alias("band")).collect()}
    assert bands == {"a": "high", "b": "high", "c": "medium", "d": "low", "e": None}
