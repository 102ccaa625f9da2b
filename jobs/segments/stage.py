"""The segments stage: RFM, clusters, value tiers and matrix, attribute segments and lifecycle stages
as of the date; the stage history and segment membership carried forward from the previous run.
Everything is staged, gated, then published."""

from __future__ import annotations

from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.identity.graph import attach_customer, customer_transactions
from jobs.platform.context import RunContext
from jobs.segments import lifecycle
from jobs.segments import segmentation as seg
from jobs.value import clv
from schemas import gold, silver


def customer_activity(profile: DataFrame, tables: dict[str, DataFrame], graph: DataFrame,
                      transactions: DataFrame, as_of: date) -> DataFrame:
    """(customer_id, events_90d, online_share, category_breadth, tickets): engagement, channel mix,
    breadth of categories bought and service contacts, the clustering features beyond RFM."""
    events = attach_customer(tables["events"], "events", graph).where(
        F.col("customer_id").isNotNull() & (F.col("event_date") > F.lit(as_of - timedelta(days=90)))
        & (F.col("event_date") <= F.lit(as_of))).groupBy("customer_id").agg(F.count("*").alias("events_90d"))
    breadth = transactions.where(F.to_date("ts") <= F.lit(as_of)).join(
        tables["order_lines"], ["source", "transaction_id"]).groupBy("customer_id").agg(
        F.countDistinct("category").alias("category_breadth"))
    purchases = F.col("order_count") + F.col("store_transactions")
    channels = profile.select("customer_id", F.when(purchases > 0, F.col("order_count") / purchases)
                              .alias("online_share"), "tickets")
    return channels.join(events, "customer_id", "left").join(breadth, "customer_id", "left")


def run_segments(ctx: RunContext) -> dict[str, object]:
    """Segment every customer as of the date; stage, gate and publish the five segment tables."""
    settings = seg.SegmentSettings.from_conf(ctx.settings.segments)
    stages = lifecycle.LifecycleSettings.from_conf(ctx.settings.lifecycle)
    tables = {**ctx.silver_sources(), "order_lines": ctx.read(silver.ORDER_LINES)}
    graph, profile = ctx.read(gold.IDENTITY_GRAPH), ctx.read(gold.CUSTOMER_PROFILE)
    values = ctx.read(gold.CUSTOMER_VALUE).where(F.col("as_of_date") == F.lit(ctx.as_of)).localCheckpoint()
    if values.isEmpty():
        raise ValueError(f"gold.customer_value has no scores for {ctx.as_of}: run the value stage for it first")
    transactions = customer_transactions(graph, tables)
    daily = clv.daily_transactions(transactions).localCheckpoint()
    summary = seg.purchase_summary(daily, ctx.as_of).localCheckpoint()
    history = ctx.read(gold.LIFECYCLE_HISTORY)
    previous = lifecycle.open_stages(history, ctx.as_of).where(F.col("model") == "lifecycle").drop("model")
    rfm = seg.rfm_scores(summary, settings.quantile_error).withColumn("rfm_segment",
                                                                      seg.rfm_segment(settings.rfm_rules))
    activity = customer_activity(profile, tables, graph, transactions, ctx.as_of)
    clustering = seg.cluster_customers(seg.cluster_features(summary, activity), settings)
    worth = values.select("customer_id", "clv", "current_value", "potential_value")
    wide = (profile.select("customer_id", "age_band", F.col("country").alias("region"),
                           seg.preferred_channel().alias("preferred_channel"),
                           seg.consent_status().alias("consent_status"))
            .join(rfm, "customer_id", "left")
            .join(clustering.assignments, "customer_id", "left")
            .join(seg.value_tiers(worth.select("customer_id", "clv"), settings.tier_shares), "customer_id", "left")
            .join(seg.value_quadrants(worth, settings.matrix_quantiles, settings.quantile_error),
                  "customer_id", "left")
            .join(values.select("customer_id", "p_alive", "churn_probability", "purchase_probability"),
                  "customer_id", "left")
            .join(lifecycle.relationship_signals(daily, ctx.as_of, stages.trend_days), "customer_id", "left")
            .join(previous, "customer_id", "left")
            .fillna({"frequency": 0, "monetary": 0.0}))
    assessed = wide.select("*", lifecycle.next_stage(stages).alias("_lifecycle"),
                           lifecycle.relationship_stage(stages).alias("_relationship")).select(
        "*", F.col("_lifecycle.stage").alias("lifecycle_stage"),
        F.col("_relationship.stage").alias("relationship_stage"),
        seg.purchase_intent(settings.intent_bands).alias("purchase_intent"))
    assessed = assessed.select(
        "*", lifecycle.stage_action(stages, F.col("lifecycle_stage")).alias("lifecycle_action"),
        lifecycle.lifecycle_pattern(stages, F.col("lifecycle_stage")).alias("lifecycle_pattern")).localCheckpoint()
    stamp = F.lit(ctx.as_of).alias("as_of_date")
    customer_segments = ctx.stage_slice(assessed.select(stamp, "*"), gold.CUSTOMER_SEGMENTS, ctx.as_of_slice)
    profiles = ctx.stage_slice(clustering.profiles.select(
        stamp, "*", F.lit(clustering.k).alias("k"), F.lit(clustering.silhouette).alias("silhouette"),
        F.create_map(*[F.lit(x) for k, v in sorted(clustering.silhouette_by_k.items()) for x in (k, v)])
        .alias("silhouette_by_k")), gold.CLUSTER_PROFILES, ctx.as_of_slice)
    matrix = ctx.stage_slice(seg.value_matrix(customer_segments, worth, settings.strategies).select(stamp, "*"),
                             gold.VALUE_MATRIX, ctx.as_of_slice)

    today = assessed.select("customer_id", F.explode(F.array(
        *[F.struct(F.lit(m).alias("model"), F.col(f"{c}.stage").alias("stage"), F.col(f"{c}.reason").alias("reason"))
          for m, c in (("lifecycle", "_lifecycle"), ("relationship", "_relationship"))])).alias("s")) \
        .select("s.model", "customer_id", "s.stage", "s.reason")
    history = ctx.stage_overwrite(lifecycle.advance_history(history, today, ctx.as_of), gold.LIFECYCLE_HISTORY)
    previous = seg.previous_slice(ctx.read(gold.SEGMENT_MEMBERSHIP), ctx.as_of)
    membership = ctx.stage_slice(seg.membership(customer_segments, seg.SEGMENT_COLUMNS, previous, ctx.as_of),
                                 gold.SEGMENT_MEMBERSHIP, ctx.as_of_slice)
    ctx.gate({gold.CUSTOMER_SEGMENTS: customer_segments, gold.SEGMENT_MEMBERSHIP: membership,
              gold.CLUSTER_PROFILES: profiles, gold.VALUE_MATRIX: matrix, gold.LIFECYCLE_HISTORY: history})
    ctx.publish()
    counts = customer_segments.groupBy("lifecycle_stage").count().collect()
    patterns = customer_segments.groupBy("lifecycle_pattern").count().where(F.col("lifecycle_pattern").isNotNull())
    return {"customers": customer_segments.count(), "clusters": clustering.k,
            "silhouette": round(clustering.silhouette, 3),
            "lifecycle": {r.lifecycle_stage: r["count"] for r in counts},
            "patterns": {r.lifecycle_pattern: r["count"] for r in patterns.collect()}}
