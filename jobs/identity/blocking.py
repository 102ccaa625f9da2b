"""Blocking: which pairs of records the matcher compares, bounded so that work grows with the records.

A rule (columns of `matching.splink_input`) pairs the records that agree on all its columns. Its
blocks are the groups of records sharing one key. Two bounds, each counted and reported:

- a block of more than `max_block_records` records (every "John Smith" of a city, every Nguyen born
  in 1980) is left out of its rule: it holds few duplicates per pair and most of the pairs, and its
  duplicates agree on a more specific rule too;
- a rule still comparing more than `max_pairs_per_record` pairs per record is skipped.

All rules are counted in one aggregation. The rules Splink sees block on one key column per rule
(`block_<i>`), null for a record in an oversized block, so oversized blocks make no pairs at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

SEPARATOR = "\x1f"  # between the parts of a block key: never in a name, date or key


def rule_name(rule: tuple[str, ...]) -> str:
    return "+".join(rule)


def key_column(index: int) -> str:
    return f"block_{index}"


def rule_key(rule: tuple[str, ...]) -> Column:
    """The rule's block key of a record; null when any of its columns is (nulls never agree)."""
    present = reduce(lambda a, b: a & b, [F.col(c).isNotNull() for c in rule])
    return F.when(present, F.concat_ws(SEPARATOR, *[F.col(c).cast("string") for c in rule]))


@dataclass(frozen=True)
class Blocking:
    records: DataFrame                 # the input with one key column per kept rule (null: no pairs)
    rules: dict[str, str]              # kept rule name -> its key column
    pairs: dict[str, int]              # every rule's pairs in blocks under the size cap
    oversized_blocks: dict[str, int]   # every rule's blocks left out for their size
    skipped_rules: list[str]           # rules over the pair cap, not compared

    @property
    def candidate_pairs(self) -> int:
        """Pairs compared: an upper bound, as rules overlap."""
        return sum(self.pairs[name] for name in self.rules)


def block(frame: DataFrame, rules: tuple[tuple[str, ...], ...], max_block_records: int,
          max_pairs_per_record: int) -> Blocking:
    """Key columns and counts for `rules` on `frame` (see the module docstring)."""
    keyed = frame.select("*", *[rule_key(rule).alias(key_column(i)) for i, rule in enumerate(rules)])
    blocks = keyed.select(F.explode(F.array(*[
        F.struct(F.lit(i).alias("rule"), F.col(key_column(i)).alias("key")) for i in range(len(rules))
    ])).alias("b")).select("b.*").where(F.col("key").isNotNull()).groupBy("rule", "key").agg(
        F.count("*").alias("n")).localCheckpoint()
    n = F.col("n")
    totals = {r["rule"]: r for r in blocks.groupBy("rule").agg(
        F.sum(F.when(n <= max_block_records, n * (n - 1) / 2)).alias("pairs"),
        F.count(F.when(n > max_block_records, 1)).alias("oversized")).collect()}
    names = [rule_name(rule) for rule in rules]
    pairs = {name: int((totals[i]["pairs"] or 0) if i in totals else 0) for i, name in enumerate(names)}
    oversized = {name: int(totals[i]["oversized"]) if i in totals else 0 for i, name in enumerate(names)}
    cap = max_pairs_per_record * max(frame.count(), 1)
    kept = {i: name for i, name in enumerate(names) if pairs[name] <= cap}
    # Oversized keys are few (a few per thousand records): broadcast, and null each record's key in one pass.
    big = blocks.where(n > max_block_records).select("rule", "key")
    marked = [i for i, name in kept.items() if oversized[name]]
    for i in marked:
        keyed = keyed.join(F.broadcast(big.where(F.col("rule") == i).select(
            F.col("key").alias(key_column(i)), F.lit(True).alias(f"_big_{i}"))), key_column(i), "left")
    columns = [*frame.columns, *[F.when(F.col(f"_big_{i}").isNull(), F.col(key_column(i))).alias(key_column(i))
                                 if i in marked else F.col(key_column(i)) for i in kept]]
    return Blocking(keyed.select(*columns), {name: key_column(i) for i, name in kept.items()}, pairs, oversized,
                    [name for name in names if name not in kept.values()])
