"""K-means on a bounded sample in the driver (scipy), every customer assigned in Spark.

MLlib's K-means runs a Spark job per Lloyd iteration and its silhouette a few more, for every k tried:
about 500 small jobs for k = 3..8, most of a small run's segments stage. The sample the model is
fitted on is bounded (`segments.clusters.fit_sample` customers of a few features: megabytes), so it
comes to the driver through Arrow once, every k is fitted and scored there, and the chosen centroids
go back into the query as a column expression (the nearest centroid), with no model object and no UDF.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pyspark.sql import Column
from pyspark.sql import functions as F
from scipy.cluster.vq import kmeans, kmeans2, vq

# Restarts from fresh k-means++ seeds per k, the best (lowest within-cluster sum of squares) kept. Each
# runs Lloyd's iterations until the mean distance to the centroids stops changing (absolute change at
# most `TOLERANCE`: in practice, until no point changes cluster).
RESTARTS = 4
TOLERANCE = 1e-12
# Points the silhouette is computed on: it needs every pairwise distance (quadratic), and a few thousand
# points estimate the mean silhouette to about a hundredth.
SILHOUETTE_POINTS = 3000


@dataclass(frozen=True)
class Fit:
    centroids: np.ndarray      # clusters x features: at most k rows (see `fit`)
    labels: np.ndarray         # cluster of each sample point
    inertia: float             # within-cluster sum of squares


def fit(points: np.ndarray, k: int, seed: int) -> Fit:
    """The best of `RESTARTS` runs of Lloyd's algorithm (scipy's `kmeans`) from k-means++ seeds (`kmeans2`)."""
    rng = np.random.default_rng(seed)
    best: Fit | None = None
    for _ in range(RESTARTS):
        # kmeans2 seeds and takes one step; kmeans iterates to convergence (kmeans2 would run a fixed
        # number of steps). With fewer distinct feature vectors than k, k-means++ seeds duplicates (its draw
        # probabilities are 0/0) and kmeans drops the clusters left empty: the fit has fewer than k.
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", UserWarning)
            seeds, _ = kmeans2(points, k, iter=1, minit="++", missing="warn", rng=rng)
        centroids, _ = kmeans(points, seeds, thresh=TOLERANCE)
        labels, distances = vq(points, centroids)
        inertia = float((distances ** 2).sum())
        if best is None or inertia < best.inertia:
            best = Fit(centroids, labels, inertia)
    assert best is not None
    return best


def silhouettes(points: np.ndarray, fits: dict[int, Fit], seed: int) -> dict[int, float]:
    """Mean silhouette (Euclidean) of each fit, on one subsample of at most `SILHOUETTE_POINTS` points
    shared by every k, so that the ks are compared on the same customers."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(points), size=min(len(points), SILHOUETTE_POINTS), replace=False))
    subset = points[chosen]
    squared = (subset ** 2).sum(axis=1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * subset @ subset.T, 0.0))
    np.fill_diagonal(distances, 0.0)
    return {k: _mean_silhouette(distances, f.labels[chosen], k) for k, f in fits.items()}


def _mean_silhouette(distances: np.ndarray, labels: np.ndarray, k: int) -> float:
    members = np.eye(k)[labels]                      # n x k one-hot
    sizes = members.sum(axis=0)
    totals = distances @ members                     # each point's summed distance to each cluster
    points = np.arange(len(labels))
    own_size = sizes[labels]
    a = np.where(own_size > 1, totals[points, labels] / np.maximum(own_size - 1, 1), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        means = np.where(sizes > 0, totals / sizes, np.inf)     # an empty cluster is no neighbour
    means[points, labels] = np.inf
    b = means.min(axis=1)
    # 0 for a point alone in its cluster (Rousseeuw's convention), and where there is no other cluster.
    with np.errstate(invalid="ignore"):
        s = np.where((own_size > 1) & np.isfinite(b), (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    return float(s.mean())


def nearest_centroid(centroids: np.ndarray, columns: Sequence[str]) -> Column:
    """The index of the centroid nearest (squared Euclidean) to the row's `columns`; ties go to the lower index."""
    distances = [sum(((F.col(c) - F.lit(float(v))) ** 2 for c, v in zip(columns, centre, strict=True)),
                     F.lit(0.0)) for centre in centroids]
    return F.array_min(F.array(*[F.struct(d.alias("distance"), F.lit(i).alias("cluster"))
                                 for i, d in enumerate(distances)]))["cluster"]
