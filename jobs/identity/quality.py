"""Pairwise precision, recall and F1 of a resolution against known truth, computed in Spark.

Two records form a pair when they share a cluster. Counting is by cluster sizes, never by
listing pairs: predicted pairs are the sum of n(n-1)/2 over customers, true pairs the same
over true persons, and true positives the same over (customer, person) cells.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F


@dataclass(frozen=True)
class PairwiseScores:
    records: int
    persons: int
    customers: int
    true_pairs: int
    predicted_pairs: int
    true_positive_pairs: int

    @property
    def precision(self) -> float:
        return self.true_positive_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.true_positive_pairs / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def line(self, label: str) -> str:
        return (f"{label:<22} records {self.records:>8}  persons {self.persons:>7}  customers {self.customers:>7}  "
                f"precision {self.precision:.4f}  recall {self.recall:.4f}  F1 {self.f1:.4f}")


def _pairs(n: Column) -> Column:
    return n * (n - 1) / 2


def pairwise_scores(resolved: DataFrame, truth: DataFrame) -> PairwiseScores:
    """`resolved` (record, customer_id) against `truth` (record, person_id), over records in both."""
    both = resolved.join(truth, "record")
    cells = both.groupBy("customer_id", "person_id").agg(F.count("*").alias("n"))
    by_customer = cells.groupBy("customer_id").agg(F.sum("n").alias("n"))
    by_person = cells.groupBy("person_id").agg(F.sum("n").alias("n"))
    tp = cells.agg(F.sum(_pairs(F.col("n"))).alias("pairs"), F.sum("n").alias("records")).first()
    predicted = by_customer.agg(F.sum(_pairs(F.col("n"))).alias("pairs"), F.count("*").alias("k")).first()
    true = by_person.agg(F.sum(_pairs(F.col("n"))).alias("pairs"), F.count("*").alias("k")).first()
    return PairwiseScores(records=int(tp["records"] or 0), persons=int(true["k"]), customers=int(predicted["k"]),
                          true_pairs=int(true["pairs"] or 0), predicted_pairs=int(predicted["pairs"] or 0),
                          true_positive_pairs=int(tp["pairs"] or 0))
