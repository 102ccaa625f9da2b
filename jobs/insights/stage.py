"""The insights stage: KPIs by period and segment, association rules and cross-sell, feedback
sentiment, as of the date; after the segments stage, whose membership the KPIs are broken down by."""

from __future__ import annotations

from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.identity.graph import attach_customer, customer_transactions
from jobs.insights import baskets, kpis, sentiment
from jobs.platform.context import RunContext
from schemas import gold, silver


def run_insights(ctx: RunContext) -> dict[str, object]:
    """Compute the four insight tables for the date; stage, gate and publish them."""
    conf = ctx.settings.insights
    tables = ctx.silver_sources()
    graph = ctx.read(gold.IDENTITY_GRAPH)
    membership = ctx.read(gold.SEGMENT_MEMBERSHIP).where(F.col("as_of_date") == F.lit(ctx.as_of))
    if membership.isEmpty():
        raise ValueError(f"gold.segment_membership has no rows for {ctx.as_of}: run the segments stage for it first")
    resolved = {name: attach_customer(tables[name], name, graph)
                for name in ("tickets", "surveys", "campaign_events", "referrals")}
    feedback = sentiment.score_texts(sentiment.feedback(resolved["tickets"], resolved["surveys"])) \
        .where(F.col("customer_id").isNotNull()).localCheckpoint()
    transactions = customer_transactions(graph, tables).where(F.to_date("ts") <= F.lit(ctx.as_of)).localCheckpoint()
    stamp = F.lit(ctx.as_of).alias("as_of_date")

    values = ctx.read(gold.CUSTOMER_VALUE).where(F.col("as_of_date") <= F.lit(ctx.as_of))
    staged = {gold.KPI: kpis.kpis(
        transactions, ctx.read(gold.CUSTOMER_PROFILE).select("customer_id", "signup_channel", "first_seen"),
        membership, ctx.read(silver.MARKETING_SPEND), resolved["campaign_events"], resolved["tickets"],
        resolved["surveys"], resolved["referrals"].withColumnRenamed("customer_id", "referrer_customer_id"),
        feedback, values, ctx.as_of, dict(conf.kpi.periods), conf.kpi.attribution_days,
        complaint_at_most=sentiment.NEGATIVE_AT_MOST)}

    rules, suggestions = [], []
    order_lines = ctx.read(silver.ORDER_LINES)
    for level, mining in conf.baskets.levels.items():
        level_baskets = baskets.baskets(order_lines, transactions, level).localCheckpoint()
        level_rules = baskets.association_rules(level_baskets, level, mining.min_support, mining.min_confidence,
                                                mining.max_rules)
        rules.append(level_rules.localCheckpoint())
        suggestions.append(baskets.cross_sell(level_baskets, rules[-1], conf.baskets.cross_sell_top_n,
                                              conf.baskets.min_lift))
    staged[gold.ASSOCIATION_RULES] = reduce(DataFrame.unionByName, rules).select(stamp, "*")
    staged[gold.CROSS_SELL] = reduce(DataFrame.unionByName, suggestions).select(stamp, "*")
    staged[gold.CUSTOMER_SENTIMENT] = sentiment.customer_sentiment(feedback, ctx.as_of).select(stamp, "*")
    staged = {table: ctx.stage_slice(frame, table, ctx.as_of_slice) for table, frame in staged.items()}
    ctx.gate(staged)
    ctx.publish()
    return {table.name: frame.count() for table, frame in staged.items()}
