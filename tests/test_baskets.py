"""Baskets: a planted co-purchase rule is found with exact support, confidence and lift; cross-sell
suggests what a customer lacks, over all their transactions, from the best applicable rule."""

from __future__ import annotations

import pytest
from pyspark.sql import DataFrame, SparkSession

from jobs.insights import baskets
from schemas.gold import ASSOCIATION_RULES, CROSS_SELL

LINES = ("source string, transaction_id string, line_no int, sku string, category string, quantity int, "
         "unit_price double, line_amount_reporting double, is_net boolean")
SKUS = {"shoes": "SKU-01", "socks": "SKU-02", "books": "SKU-03", "toys": "SKU-04"}


def _columns(frame: DataFrame) -> list:
    return [(f.name, f.dataType) for f in frame.schema.fields]


def _expected(table) -> list:
    return [(c.name, c.data_type) for c in table.columns if c.name != "as_of_date"]


def _planted(spark: SparkSession) -> tuple[DataFrame, DataFrame]:
    """20 counted transactions: shoes and socks together in 8 of them, each alone in 2 more, noise beside.
    By hand: support(shoes, socks) = 8/20 = 0.4, confidence = 8/10 = 0.8 both ways, lift = 0.8 / (10/20) = 1.6."""
    contents = {f"t{i:02d}": ["shoes", "socks"] for i in range(1, 7)}
    contents |= {"t07": ["shoes", "socks", "books"], "t08": ["shoes", "socks", "books"],
                 "t09": ["shoes"], "t10": ["shoes"], "t11": ["socks", "toys"], "t12": ["socks", "toys"]}
    contents |= {f"t{i:02d}": ["books"] for i in range(13, 17)} | {f"t{i:02d}": ["toys"] for i in range(17, 21)}
    customers = {"t01": "b", "t09": "a", "t10": "c", "t11": "c", "t12": "d"}   # the rest: one customer each
    lines, transactions = [], []
    for n, (txn, items) in enumerate(contents.items()):
        source = "orders" if n % 2 else "pos"
        transactions.append((source, txn, customers.get(txn, f"x{txn}")))
        lines += [(source, txn, k + 1, SKUS[c], c, 1, 5.0, 5.0, True) for k, c in enumerate(items)]
    lines += [("pos", "t01", 3, "SKU-11", "shoes", 1, 5.0, 5.0, True),       # a second pair: one item still
              ("orders", "t14", 2, "SKU-99", None, 1, 5.0, 5.0, True),       # no category: left out
              # Not counted: a's cancelled order and an anonymous store purchase (not in `transactions`).
              ("orders", "cancelled", 1, "SKU-01", "shoes", 1, 5.0, 5.0, False),
              ("orders", "cancelled", 2, "SKU-02", "socks", 1, 5.0, 5.0, False),
              ("pos", "anonymous", 1, "SKU-01", "shoes", 1, 5.0, 5.0, True),
              ("pos", "anonymous", 2, "SKU-02", "socks", 1, 5.0, 5.0, True)]
    transactions.append(("orders", "cancelled", "a"))   # even if the caller let it through, is_net keeps it out
    return (spark.createDataFrame(lines, LINES),
            spark.createDataFrame(transactions, "source string, transaction_id string, customer_id string"))


def test_planted_rule_is_found_with_exact_measures_and_suggested(spark: SparkSession) -> None:
    order_lines, transactions = _planted(spark)
    category = baskets.baskets(order_lines, transactions, "category").cache()

    rules = baskets.association_rules(category, "category", min_support=0.2, min_confidence=0.5, max_rules=10)
    found = [tuple(r) for r in rules.orderBy("rank").collect()]
    suggestions = baskets.cross_sell(category, rules, top_n=3)
    suggested = [tuple(r) for r in suggestions.orderBy("customer_id", "item").collect()]
    products = {r.transaction_id: r.items for r in baskets.baskets(order_lines, transactions, "product").collect()}
    best = baskets.association_rules(category, "category", 0.2, 0.5, max_rules=1).collect()

    assert _columns(rules) == _expected(ASSOCIATION_RULES)
    assert _columns(suggestions) == _expected(CROSS_SELL)
    # Only the planted pair clears 20 % support (c's shoes and socks came in separate baskets).
    assert found == [("category", ["shoes"], ["socks"], pytest.approx(0.4), pytest.approx(0.8), pytest.approx(1.6), 1),
                     ("category", ["socks"], ["shoes"], pytest.approx(0.4), pytest.approx(0.8), pytest.approx(1.6), 2)]
    assert [(r.antecedent, r.rank) for r in best] == [(["shoes"], 1)]
    # a bought shoes only, d socks only; b bought both together and c both in separate transactions.
    assert suggested == [("a", "category", "socks", pytest.approx(0.8), pytest.approx(1.6), 1),
                         ("d", "category", "shoes", pytest.approx(0.8), pytest.approx(1.6), 1)]
    assert products["t01"] == ["SKU-01", "SKU-02", "SKU-11"]
    assert set(products) == {f"t{i:02d}" for i in range(1, 21)}
    category.unpersist()


def test_cross_sell_uses_the_best_applicable_rule_per_item(spark: SparkSession) -> None:
    owned = spark.createDataFrame(
        [("a", "t1", ["shoes"]), ("a", "t2", ["hats"]), ("b", "t3", ["shoes"]), ("b", "t4", ["socks"]),
         ("e", "t5", ["books"])], "customer_id string, transaction_id string, items array<string>")
    rules = spark.createDataFrame(
        [("category", ["shoes", "socks"], ["laces"], 0.1, 0.9, 3.0, 1),
         ("category", ["hats"], ["socks"], 0.1, 0.6, 2.5, 2),       # loses to shoes -> socks: lower confidence
         ("category", ["hats"], ["gloves"], 0.1, 0.7, 2.0, 3),
         ("category", ["shoes"], ["socks"], 0.1, 0.8, 1.6, 4),
         ("category", ["shoes"], ["polish"], 0.1, 0.7, 1.4, 5),     # same confidence as gloves, lower lift
         ("category", ["books"], ["toys"], 0.1, 0.5, 0.8, 6)],      # lift < 1: not a reason to suggest toys
        "basket_level string, antecedent array<string>, consequent array<string>, support double, "
        "confidence double, lift double, rank int")

    suggested = {tuple(r) for r in baskets.cross_sell(owned, rules, top_n=2).collect()}

    # a: laces needs socks too; polish is third. b: both laces antecedents, in two transactions; owns socks.
    assert suggested == {("a", "category", "socks", 0.8, 1.6, 1), ("a", "category", "gloves", 0.7, 2.0, 2),
                         ("b", "category", "laces", 0.9, 3.0, 1), ("b", "category", "polish", 0.7, 1.4, 2)}
