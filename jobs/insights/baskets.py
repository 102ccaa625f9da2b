"""Market-basket analysis: FP-Growth association rules over transactions, and per-customer cross-sell.

A basket is one completed order or store purchase, at the level of categories or of products
(SKUs). Rules are mined from baskets with Spark MLlib's FP-Growth, so support, confidence and
lift describe items bought *together*. Cross-sell looks at a customer's items over all their
transactions: a rule applies when the customer has bought every item of its antecedent, and
suggests its consequent if they have not bought it yet.
"""

from __future__ import annotations

from pyspark.ml.fpm import FPGrowth
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

LEVELS = {"category": "category", "product": "sku"}  # basket level -> order_lines column
RULE_COLUMNS = ("basket_level", "antecedent", "consequent", "support", "confidence", "lift", "rank")
CROSS_SELL_COLUMNS = ("customer_id", "basket_level", "item", "confidence", "lift", "rank")


def _item_column(level: str) -> str:
    if level not in LEVELS:
        raise ValueError(f"basket level must be one of {sorted(LEVELS)}, not {level!r}")
    return LEVELS[level]


def baskets(order_lines: DataFrame, transactions: DataFrame, level: str) -> DataFrame:
    """(customer_id, transaction_id, items): the distinct categories or SKUs of each transaction in
    `transactions` (source, transaction_id, customer_id), sorted; lines without an item are left out."""
    item = _item_column(level)
    # The inner join keeps only the transactions the caller counts (completed orders, store purchases);
    # is_net is checked as well so that lines of a returned or cancelled order never enter a basket.
    lines = order_lines.where(F.col("is_net") & F.col(item).isNotNull()) \
        .select("source", "transaction_id", F.col(item).alias("item"))
    joined = lines.join(transactions.select("source", "transaction_id", "customer_id"),
                        ["source", "transaction_id"])
    return joined.groupBy("source", "transaction_id", "customer_id") \
        .agg(F.array_sort(F.collect_set("item")).alias("items")) \
        .select("customer_id", "transaction_id", "items")


def association_rules(baskets: DataFrame, level: str, min_support: float, min_confidence: float,
                      max_rules: int) -> DataFrame:
    """Rules antecedent -> consequent mined by FP-Growth from the baskets' items, with support (share of
    baskets holding both sides), confidence and lift; the best `max_rules` by lift, then confidence,
    ranked from 1. Columns and types as gold.association_rules without as_of_date."""
    _item_column(level)
    fp = FPGrowth(itemsCol="items", minSupport=min_support, minConfidence=min_confidence)
    model = fp.fit(baskets.select("items"))
    # Support and confidence break ties of lift; the item arrays make the order total, so a rerun
    # keeps the same rules when several tie at the max_rules cut.
    order = [F.desc("lift"), F.desc("confidence"), F.desc("support"), "antecedent", "consequent"]
    rules = model.associationRules.select(F.array_sort("antecedent").alias("antecedent"),
                                          F.array_sort("consequent").alias("consequent"),
                                          "support", "confidence", "lift")
    # Top-k per partition first (rules can be many at low support), then rank the few left in one partition.
    best = rules.orderBy(*order).limit(max_rules)
    ranked = best.withColumn("rank", F.row_number().over(Window.orderBy(*order)))
    return ranked.select(F.lit(level).alias("basket_level"),
                         F.col("antecedent").cast("array<string>"), F.col("consequent").cast("array<string>"),
                         F.col("support").cast("double"), F.col("confidence").cast("double"),
                         F.col("lift").cast("double"), F.col("rank").cast("int"))

def cross_sell(baskets: DataFrame, rules: DataFrame, top_n: int, min_lift: float = 1.0) -> DataFrame:
    """Per customer and basket level, up to `top_n` items they have not bought, each suggested by the best
    rule (confidence, then lift) whose antecedent items the customer has all bought, in any of their
    transactions; ranked from 1. Rules with lift <= `min_lift` are not used: at lift 1 the antecedent
    says nothing about the consequent, below it makes it less likely. Columns as gold.cross_sell
    without as_of_date."""
    owned = baskets.select("customer_id", F.explode("items").alias("item")).distinct()
    rule = ["basket_level", "antecedent", "consequent", "confidence", "lift"]
    antecedent_items = rules.where(F.col("lift") > F.lit(min_lift)).select(
        *rule, F.size("antecedent").alias("needed"), F.explode("antecedent").alias("item"))
    # A rule applies when every antecedent item is among the customer's items: join on each item and
    # count the matches, so work follows (customer items x rules holding them), never customers x rules.
    applies = owned.join(antecedent_items, "item").groupBy("customer_id", *rule, "needed") \
        .agg(F.count("*").alias("matched")).where(F.col("matched") == F.col("needed"))
    suggested = applies.select("customer_id", "basket_level", F.explode("consequent").alias("item"),
                               "confidence", "lift")
    new = suggested.join(owned, ["customer_id", "item"], "left_anti")
    best_rule = Window.partitionBy("customer_id", "basket_level", "item").orderBy(
        F.desc("confidence"), F.desc("lift"))
    best = new.withColumn("_n", F.row_number().over(best_rule)).where(F.col("_n") == 1)
    per_customer = Window.partitionBy("customer_id", "basket_level").orderBy(
        F.desc("confidence"), F.desc("lift"), "item")
    ranked = best.withColumn("rank", F.row_number().over(per_customer)).where(F.col("rank") <= top_n)
    return ranked.select("customer_id", "basket_level", "item", F.col("confidence").cast("double"),
                         F.col("lift").cast("double"), F.col("rank").cast("int"))
