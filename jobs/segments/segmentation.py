"""Segments as of a date: RFM, behavioural clusters, value tiers and the value matrix, attributes.

Every function takes and returns DataFrames; thresholds come from conf `segments:` through
`SegmentSettings`. Quantiles are computed with Spark's approximate quantiles (a handful of
numbers reach the driver, never the customers); K-means is fitted on a bounded sample of feature
vectors, without ids (`jobs.segments.kmeans`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.platform.sampling import sample_matrix
from jobs.platform.settings import SegmentsConfig
from jobs.segments import kmeans

RFM_SEGMENT_NAMES = ("Champions", "Loyal", "Potential loyalist", "New", "Promising", "Need attention",
                     "About to sleep", "At risk", "Can't lose", "Hibernating", "Lost")

# Clustering features and the words that describe a cluster far above / below the mean on each.
CLUSTER_FEATURES = {
    "recency_days": ("lapsed", "recent"),
    "frequency": ("frequent", "occasional"),
    "monetary": ("high spend", "low spend"),
    "events_90d": ("active online", "quiet online"),
    "online_share": ("online", "in store"),
    "category_breadth": ("broad baskets", "narrow baskets"),
    "tickets": ("many service contacts", "few service contacts"),
}
# Skewed counts and amounts are compared on a log scale, so a few big spenders do not form
# clusters of their own.
LOG_FEATURES = ("recency_days", "frequency", "monetary", "events_90d", "category_breadth", "tickets")

QUADRANTS = ("platinum", "gold", "iron", "lead")

# The segment types of gold.segment_membership: the columns of gold.customer_segments stacked into rows.
SEGMENT_COLUMNS = ["rfm_segment", "cluster_label", "value_tier", "value_quadrant", "age_band", "region",
                   "preferred_channel", "consent_status", "lifecycle_stage", "lifecycle_action", "lifecycle_pattern",
                   "relationship_stage", "purchase_intent"]


@dataclass(frozen=True)
class RfmRule:
    name: str
    r: tuple[int, int]   # inclusive score ranges
    f: tuple[int, int]


@dataclass(frozen=True)
class SegmentSettings:
    rfm_rules: tuple[RfmRule, ...]
    quantile_error: float                  # relative error of the approximate quantiles
    k_range: tuple[int, int]               # K-means: k tried, inclusive
    cluster_sample: int                    # fit on at most this many customers, assign all
    seed: int
    tier_shares: tuple[float, float]       # cumulative CLV share closing the high and the medium tier
    matrix_quantiles: tuple[float, float]  # current, potential: at or above this quantile is "high"
    strategies: dict[str, dict[str, str]]  # quadrant -> investment, strategy
    intent_bands: tuple[float, float]      # purchase probability at least: high, medium

    @classmethod
    def from_conf(cls, conf: SegmentsConfig) -> SegmentSettings:
        # SegmentsConfig has checked that the rules cover every score pair, the tiers are ordered
        # and every quadrant has a strategy.
        tiers, matrix = conf.value_tiers, conf.value_matrix
        return cls(tuple(RfmRule(r.name, r.r, r.f) for r in conf.rfm_segments), conf.quantile_error,
                   conf.clusters.k_range, conf.clusters.fit_sample, conf.clusters.seed,
                   (tiers.high_share, tiers.medium_share), (matrix.current_quantile, matrix.potential_quantile),
                   {q: getattr(matrix.strategies, q).model_dump() for q in QUADRANTS},
                   (conf.intent_bands.high, conf.intent_bands.medium))


def purchase_summary(daily: DataFrame, as_of: date) -> DataFrame:
    """(customer_id, recency_days, tenure_days, frequency, monetary) from one-row-per-customer-and-day transactions
    (`clv.daily_transactions`) up to `as_of`."""
    return daily.where(F.col("txn_date") <= F.lit(as_of)).groupBy("customer_id").agg(
        F.datediff(F.lit(as_of), F.max("txn_date")).alias("recency_days"),
        F.datediff(F.lit(as_of), F.min("txn_date")).alias("tenure_days"),
        F.count("*").alias("frequency"),
        F.sum("value").alias("monetary"))


def _quintile_score(column: str, bounds: list[float], higher_is_better: bool) -> Column:
    """1-5: how many quintile bounds the value exceeds (reversed when lower is better); ties share a score."""
    above = sum((F.col(column) > F.lit(b)).cast("int") for b in bounds)
    return (F.lit(1) + above) if higher_is_better else (F.lit(5) - above)


def rfm_scores(summary: DataFrame, quantile_error: float) -> DataFrame:
    """Adds r_score, f_score, m_score: quintiles over the customers of `summary` (5 = best)."""
    columns = ["recency_days", "frequency", "monetary"]
    bounds = summary.select(*[F.col(c).cast("double") for c in columns]).approxQuantile(
        columns, [0.2, 0.4, 0.6, 0.8], quantile_error)
    return summary.select(
        "*", _quintile_score("recency_days", bounds[0], higher_is_better=False).alias("r_score"),
        _quintile_score("frequency", bounds[1], higher_is_better=True).alias("f_score"),
        _quintile_score("monetary", bounds[2], higher_is_better=True).alias("m_score"))


def rfm_segment(rules: tuple[RfmRule, ...]) -> Column:
    """The name of the first rule whose R and F score ranges hold the customer's scores."""
    segment = F.lit(None).cast("string")
    for rule in reversed(rules):
        holds = F.col("r_score").between(*rule.r) & F.col("f_score").between(*rule.f)
        segment = F.when(holds, F.lit(rule.name)).otherwise(segment)
    return segment


def cluster_features(summary: DataFrame, activity: DataFrame) -> DataFrame:
    """The clustering features per buying customer, in original units (nulls as 0).
    `activity`: (customer_id, events_90d, online_share, category_breadth, tickets)."""
    joined = summary.join(activity, "customer_id", "left")
    return joined.select("customer_id", *[F.coalesce(F.col(f).cast("double"), F.lit(0.0)).alias(f)
                                          for f in CLUSTER_FEATURES])


def _standardised(features: DataFrame) -> tuple[DataFrame, int]:
    """customer_id and each clustering feature, log-scaled where skewed, centred and divided by its sample
    standard deviation (a constant feature is 0 everywhere), and the number of customers: one aggregation."""
    names = list(CLUSTER_FEATURES)
    logged = features.select("customer_id", *[
        (F.log1p(F.greatest(F.col(f), F.lit(0.0))) if f in LOG_FEATURES else F.col(f)).alias(f) for f in names])
    stats = logged.agg(F.count("*").alias("customers"), *[F.avg(f).alias(f"mean_{f}") for f in names],
                       *[F.stddev_samp(f).alias(f"sd_{f}") for f in names]).first()
    return logged.select("customer_id", *[
        ((F.col(f) - F.lit(stats[f"mean_{f}"])) / F.lit(stats[f"sd_{f}"])).alias(f) if stats[f"sd_{f}"]
        else F.lit(0.0).alias(f) for f in names]), stats["customers"]


@dataclass(frozen=True)
class Clustering:
    assignments: DataFrame          # (customer_id, cluster, cluster_label)
    profiles: DataFrame             # (cluster, cluster_label, customers, centroid map)
    k: int
    silhouette: float
    silhouette_by_k: dict[int, float]


def cluster_customers(features: DataFrame, settings: SegmentSettings) -> Clustering:
    """K-means on standardised (log-scaled where skewed) features, k chosen by silhouette over the
    configured range, fitted on a sample of at most `cluster_sample` customers in the driver
    (`jobs.segments.kmeans`); every customer is then assigned to the nearest centroid in Spark."""
    names = list(CLUSTER_FEATURES)
    scaled, total = _standardised(features)
    if total == 0:
        raise ValueError("no buying customer to cluster")
    scaled = scaled.localCheckpoint()
    points = sample_matrix(scaled, "customer_id", names, total, settings.cluster_sample)
    low, high = settings.k_range
    fits = {k: kmeans.fit(points, k, settings.seed) for k in range(low, min(high, max(len(points) - 1, low)) + 1)}
    silhouettes = kmeans.silhouettes(points, fits, settings.seed)
    best = max(silhouettes, key=lambda k: (silhouettes[k], -k))
    centroids = fits[best].centroids
    assigned = scaled.select("customer_id", kmeans.nearest_centroid(centroids, names).alias("cluster")) \
        .localCheckpoint()
    labels = cluster_labels(features.join(assigned, "customer_id"))
    assignments = assigned.join(labels.select("cluster", "cluster_label"), "cluster")
    # The clusters found: fewer than the k tried when the customers have fewer distinct feature vectors.
    return Clustering(assignments.select("customer_id", "cluster", "cluster_label"), labels, len(centroids),
                      silhouettes[best], silhouettes)


def cluster_labels(features: DataFrame) -> DataFrame:
    """(cluster, cluster_label, customers, centroid): the centroid in original units and a label from the
    two features on which the cluster sits furthest from the population (in standard deviations)."""
    names = list(CLUSTER_FEATURES)
    population = features.agg(*[F.avg(f).alias(f"mean_{f}") for f in names],
                               *[F.stddev_pop(f).alias(f"sd_{f}") for f in names])
    centroids = features.groupBy("cluster").agg(F.count("*").alias("customers"),
                                                *[F.avg(f).alias(f) for f in names])
    z = {f: F.coalesce((F.col(f) - F.col(f"mean_{f}")) / F.nullif(F.col(f"sd_{f}"), F.lit(0.0)), F.lit(0.0))
         for f in names}
    ranked = F.sort_array(F.array(*[F.struct(F.abs(z[f]).alias("distance"),
                                             F.when(z[f] > 0, F.lit(CLUSTER_FEATURES[f][0]))
                                             .otherwise(F.lit(CLUSTER_FEATURES[f][1])).alias("word"))
                                    for f in names]), asc=False)
    label = F.concat_ws(", ", ranked[0]["word"], ranked[1]["word"])
    # Two clusters may read alike: the cluster id keeps labels unique.
    return centroids.crossJoin(population).select(
        F.col("cluster").cast("int"),
        F.concat(label, F.lit(" (#"), F.col("cluster"), F.lit(")")).alias("cluster_label"),
        "customers",
        F.create_map(*[x for f in names for x in (F.lit(f), F.col(f))]).alias("centroid"))


def value_tiers(values: DataFrame, shares: tuple[float, float]) -> DataFrame:
    """(customer_id, value_tier): customers by CLV, best first; 'high' while the CLV share of those before
    them is below shares[0], then 'medium' below shares[1], then 'low'."""
    # One ordered pass over two narrow columns; fine for millions of customers.
    ordered = Window.orderBy(F.col("clv").desc(), "customer_id").rowsBetween(Window.unboundedPreceding, -1)
    total = values.agg(F.sum("clv")).first()[0] or 0.0
    before = F.coalesce(F.sum("clv").over(ordered), F.lit(0.0)) / F.lit(total if total > 0 else 1.0)
    return values.select("customer_id", F.when(before < shares[0], "high").when(before < shares[1], "medium")
                         .otherwise("low").alias("value_tier"))


def value_quadrants(values: DataFrame, quantiles: tuple[float, float], quantile_error: float) -> DataFrame:
    """(customer_id, value_quadrant): high current value (positive and at or above its quantile) and
    high potential value (likewise) give platinum; high current only gold; high potential only iron;
    neither lead."""
    bounds = values.approxQuantile(["current_value", "potential_value"], list(quantiles), quantile_error)
    current_bound, potential_bound = bounds[0][0], bounds[1][1]
    high_current = (F.col("current_value") > 0) & (F.col("current_value") >= F.lit(current_bound))
    high_potential = (F.col("potential_value") > 0) & (F.col("potential_value") >= F.lit(potential_bound))
    return values.select("customer_id", F.when(high_current & high_potential, "platinum")
                         .when(high_current, "gold").when(high_potential, "iron").otherwise("lead")
                         .alias("value_quadrant"))


def value_matrix(segments: DataFrame, values: DataFrame, strategies: dict[str, dict[str, str]]) -> DataFrame:
    """(value_quadrant, customers, customer_share, current_value, potential_value, clv, investment,
    strategy): the size and worth of each quadrant and what to do with it."""
    total = segments.where(F.col("value_quadrant").isNotNull()).count()
    sized = segments.where(F.col("value_quadrant").isNotNull()).join(values, "customer_id").groupBy(
        "value_quadrant").agg(F.count("*").alias("customers"), F.sum("current_value").alias("current_value"),
                              F.sum("potential_value").alias("potential_value"), F.sum("clv").alias("clv"))
    spark = segments.sparkSession
    plans = spark.createDataFrame([(q, s["investment"], s["strategy"]) for q, s in strategies.items()],
                                  "value_quadrant string, investment string, strategy string")
    return plans.join(sized, "value_quadrant", "left").select(
        "value_quadrant", F.coalesce("customers", F.lit(0)).alias("customers"),
        (F.coalesce("customers", F.lit(0)) / F.lit(max(total, 1))).alias("customer_share"),
        *[F.coalesce(c, F.lit(0.0)).alias(c) for c in ("current_value", "potential_value", "clv")],
        "investment", "strategy")


def purchase_intent(bands: tuple[float, float]) -> Column:
    """high, medium or low by `purchase_probability` (null without a score)."""
    probability = F.col("purchase_probability")
    return F.when(probability >= bands[0], "high").when(probability >= bands[1], "medium") \
        .when(probability.isNotNull(), "low")


def consent_status() -> Column:
    """E-mail marketing consent of a profile row: opted_in, opted_out (also after an unsubscribe) or unknown."""
    return (F.when(F.col("unsubscribed") | ~F.col("email_opt_in"), "opted_out")
            .when(F.col("email_opt_in"), "opted_in").otherwise("unknown"))


def preferred_channel() -> Column:
    """online or store by number of purchases (ties go online); none for prospects."""
    online, store = F.coalesce("order_count", F.lit(0)), F.coalesce("store_transactions", F.lit(0))
    return F.when((online == 0) & (store == 0), "none").when(online >= store, "online").otherwise("store")


def membership(segments: DataFrame, segment_types: list[str], previous: DataFrame, as_of: date) -> DataFrame:
    """gold.segment_membership rows for `as_of`: one per customer per non-null segment of each type
    (the wide gold.customer_segments row stacked), with entered_on carried over from the previous
    as-of date's membership when the customer was already in the segment."""
    stacked = segments.select("customer_id", F.explode(F.array(*[
        F.struct(F.lit(t).alias("segment_type"), F.col(t).cast("string").alias("segment")) for t in segment_types
    ])).alias("m")).select("customer_id", "m.segment_type", "m.segment").where(F.col("segment").isNotNull())
    carried = previous.select("customer_id", "segment_type", "segment", F.col("entered_on").alias("_entered"))
    return stacked.join(carried, ["customer_id", "segment_type", "segment"], "left").select(
        F.lit(as_of).alias("as_of_date"), "segment_type", "segment", "customer_id",
        F.coalesce(F.col("_entered"), F.lit(as_of)).alias("entered_on"))


def previous_slice(table: DataFrame, as_of: date) -> DataFrame:
    """The rows of the latest as_of_date before `as_of` (empty when there is none)."""
    latest = table.where(F.col("as_of_date") < F.lit(as_of)).agg(F.max("as_of_date")).first()[0]
    return table.where(F.col("as_of_date") == F.lit(latest)) if latest else table.limit(0)
