"""Probabilistic record linkage (Fellegi-Sunter) for records that share no identifier.

Records are in the match form of `schemas.silver.MATCH_RECORD`. The work is:

1. Blocking: candidate pairs are records that agree on one of the configured block keys
   (e.g. family-name soundex + postcode). Each rule is an equi-join, so work grows with the
   block sizes, never with the square of the data; blocks larger than `max_block_size` are
   skipped and reported (a block key that popular says nothing about identity).
2. Comparison: every candidate pair gets a discrete agreement level per attribute
   (Jaro-Winkler on names, day/month swap on birth dates, ...); null when either side lacks it.
3. Scoring: the m- and u-probabilities of each level and the share of matches are estimated
   from the data by EM over the distinct comparison patterns (weighted by their counts, so the
   fit is tiny whatever the data size); priors act as pseudo-counts so that small lists stay
   sensible. A pair's match probability follows from Bayes' rule under the Fellegi-Sunter
   independence assumption.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import reduce

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.platform.settings import IdentityConfig
from schemas.silver import MATCH_RECORD

log = logging.getLogger(__name__)

def _birth_date_unordered() -> Column:
    # Day and month in order, so a record with them swapped lands in the same block.
    dob = F.col("birth_date")
    return F.when(dob.isNotNull(), F.concat_ws("-", F.year(dob), F.least(F.month(dob), F.dayofmonth(dob)),
                                               F.greatest(F.month(dob), F.dayofmonth(dob))))


# Block keys a blocking rule may combine (conf: identity.blocking_rules); built lazily, as Columns
# need a running Spark session.
BLOCK_KEYS: dict[str, Callable[[], Column]] = {
    "family_soundex": lambda: F.soundex("family_name"),
    "given_soundex": lambda: F.soundex("given_name"),
    "postcode": lambda: F.col("postcode"),
    "birth_date": lambda: F.col("birth_date").cast("string"),
    "birth_date_unordered": _birth_date_unordered,
    "address_tokens": lambda: F.col("address_tokens"),
    "email_key": lambda: F.col("email_key"),
    "phone_key": lambda: F.col("phone_key"),
}


@dataclass(frozen=True)
class Comparison:
    """An attribute compared at discrete levels: 0 is disagreement, the highest is exact agreement."""

    name: str
    levels: tuple[str, ...]
    m_prior: tuple[float, ...]   # P(level | match)
    u_prior: tuple[float, ...]   # P(level | non-match)


NAME_LEVELS = ("different", "jaro_winkler>=0.80_or_same_soundex", "jaro_winkler>=0.92", "exact")
COMPARISONS: tuple[Comparison, ...] = (
    Comparison("given_name", NAME_LEVELS, (0.02, 0.03, 0.10, 0.85), (0.90, 0.06, 0.02, 0.02)),
    Comparison("family_name", NAME_LEVELS, (0.02, 0.03, 0.10, 0.85), (0.90, 0.06, 0.02, 0.02)),
    Comparison("birth_date", ("different", "one_part_differs", "day_month_swapped", "exact"),
               (0.03, 0.04, 0.03, 0.90), (0.97, 0.029, 0.0005, 0.0005)),
    Comparison("address", ("different", "same_postcode", "same_number_similar_street", "exact"),
               (0.2, 0.05, 0.05, 0.70), (0.9, 0.08, 0.01, 0.01)),
    Comparison("email", ("different", "exact"), (0.3, 0.7), (0.9999, 0.0001)),
    Comparison("phone", ("different", "exact"), (0.2, 0.8), (0.999, 0.001)),
    Comparison("gender", ("different", "exact"), (0.02, 0.98), (0.5, 0.5)),
)


def block_key(names: list[str]) -> Column:
    """One blocking rule's key: the named block keys joined; null when any part is missing."""
    unknown = [n for n in names if n not in BLOCK_KEYS]
    if unknown:
        raise ValueError(f"unknown block key(s) {unknown}; known: {sorted(BLOCK_KEYS)}")
    parts = [BLOCK_KEYS[n]() for n in names]
    any_null = reduce(lambda a, b: a | b, [p.isNull() | (p == "") for p in parts])
    return F.when(~any_null, F.concat_ws("|", *parts))


@dataclass(frozen=True)
class Candidates:
    pairs: DataFrame                 # (record_id_l, record_id_r), record_id_l < record_id_r, distinct
    skipped_blocks: DataFrame        # (rule, block, records): blocks over the size limit


def candidate_pairs(records: DataFrame, rules: list[list[str]], max_block_size: int) -> Candidates:
    """Pairs of records agreeing on at least one blocking rule; equi-joins only, no cross join."""
    pairs, skipped = [], []
    for rule in rules:
        label = "+".join(rule)
        keyed = records.select("record_id", block_key(rule).alias("block")).where(F.col("block").isNotNull())
        sizes = keyed.groupBy("block").agg(F.count("*").alias("records"))
        skipped.append(sizes.where(F.col("records") > max_block_size).select(
            F.lit(label).alias("rule"), "block", "records"))
        kept = keyed.join(sizes.where(F.col("records").between(2, max_block_size)).select("block"), "block")
        left, right = kept.alias("l"), kept.alias("r")
        pairs.append(left.join(right, "block").where(F.col("l.record_id") < F.col("r.record_id")).select(
            F.col("l.record_id").alias("record_id_l"), F.col("r.record_id").alias("record_id_r")))
    union = reduce(DataFrame.unionByName, pairs).distinct()
    return Candidates(union, reduce(DataFrame.unionByName, skipped))


@F.pandas_udf(T.DoubleType())
def jaro_winkler(left: pd.Series, right: pd.Series) -> pd.Series:
    """Jaro-Winkler similarity (jellyfish); null when either side is null."""
    import jellyfish

    return pd.Series([None if a is None or b is None else jellyfish.jaro_winkler_similarity(a, b)
                      for a, b in zip(left, right)], dtype="float64")


def _both(a: Column, b: Column) -> Column:
    return a.isNotNull() & b.isNotNull()


def _name_level(a: Column, b: Column) -> Column:
    similarity = jaro_winkler(F.lower(a), F.lower(b))
    # A phonetic code catches spellings that sound alike but share few letters in order.
    return (F.when(~_both(a, b), None).when(F.lower(a) == F.lower(b), 3).when(similarity >= 0.92, 2)
            .when((similarity >= 0.80) | (F.soundex(a) == F.soundex(b)), 1).otherwise(0))


def _birth_date_level(a: Column, b: Column) -> Column:
    same_year = F.year(a) == F.year(b)
    swapped = same_year & (F.month(a) == F.dayofmonth(b)) & (F.dayofmonth(a) == F.month(b))
    one_part = (same_year & ((F.month(a) == F.month(b)) | (F.dayofmonth(a) == F.dayofmonth(b)))) | (
        (F.month(a) == F.month(b)) & (F.dayofmonth(a) == F.dayofmonth(b)))
    return F.when(~_both(a, b), None).when(a == b, 3).when(swapped, 2).when(one_part, 1).otherwise(0)


def _address_level(street_a: Column, street_b: Column, postcode_a: Column, postcode_b: Column) -> Column:
    """Street and postcode as one comparison: they are far from independent (a household shares
    both), and counting them as two pieces of evidence would double the weight of one fact."""
    known_a = street_a.isNotNull() | postcode_a.isNotNull()
    known_b = street_b.isNotNull() | postcode_b.isNotNull()
    postcode_agrees = postcode_a.isNull() | postcode_b.isNull() | (postcode_a == postcode_b)
    number = F.regexp_extract(street_a, r"^(\d+)", 1)
    similar = (number != "") & (number == F.regexp_extract(street_b, r"^(\d+)", 1)) & (
        jaro_winkler(street_a, street_b) >= 0.9)
    return (F.when(~(known_a & known_b), None)
            .when(_both(street_a, street_b) & (street_a == street_b) & postcode_agrees, 3)
            .when(_both(street_a, street_b) & similar & postcode_agrees, 2)
            .when(_both(postcode_a, postcode_b) & (postcode_a == postcode_b), 1)
            .otherwise(0))


def _exact_level(a: Column, b: Column) -> Column:
    return F.when(~_both(a, b), None).when(a == b, 1).otherwise(0)


def comparison_levels(pairs: DataFrame, records: DataFrame) -> DataFrame:
    """Pairs with one agreement level per comparison (`gamma_<name>`, null when unknown)."""
    attributes = ["given_name", "family_name", "birth_date", "address_tokens", "postcode", "email_key",
                  "phone_key", "gender"]
    left = records.select(F.col("record_id").alias("record_id_l"), *[F.col(a).alias(f"{a}_l") for a in attributes])
    right = records.select(F.col("record_id").alias("record_id_r"), *[F.col(a).alias(f"{a}_r") for a in attributes])
    joined = pairs.join(left, "record_id_l").join(right, "record_id_r")

    def lr(a: str) -> tuple[Column, Column]:
        return F.col(f"{a}_l"), F.col(f"{a}_r")

    levels = {
        "given_name": _name_level(*lr("given_name")),
        "family_name": _name_level(*lr("family_name")),
        "birth_date": _birth_date_level(*lr("birth_date")),
        "address": _address_level(*lr("address_tokens"), *lr("postcode")),
        "email": _exact_level(*lr("email_key")),
        "phone": _exact_level(*lr("phone_key")),
        "gender": _exact_level(*lr("gender")),
    }
    return joined.select("record_id_l", "record_id_r",
                         *[levels[c.name].cast("int").alias(f"gamma_{c.name}") for c in COMPARISONS])


GAMMAS = [f"gamma_{c.name}" for c in COMPARISONS]


def comparison_patterns(levels: DataFrame) -> pd.DataFrame:
    """The distinct comparison vectors with their counts: at most the product of the level counts."""
    return levels.groupBy(*GAMMAS).count().toPandas()


class EMDidNotConverge(RuntimeError):
    """The Fellegi-Sunter EM fit hit its iteration limit; its estimates are not to be used."""


@dataclass
class MatchModel:
    """Fellegi-Sunter parameters: the match share and per-comparison level probabilities."""

    match_share: float
    m: dict[str, np.ndarray]
    u: dict[str, np.ndarray]
    iterations: int = 0
    pairs: int = 0
    comparisons: tuple[Comparison, ...] = field(default=COMPARISONS)

    @classmethod
    def prior(cls, comparisons: tuple[Comparison, ...] = COMPARISONS, match_share: float = 0.05) -> MatchModel:
        return cls(match_share, {c.name: np.array(c.m_prior) for c in comparisons},
                   {c.name: np.array(c.u_prior) for c in comparisons}, comparisons=comparisons)

    def log2_bayes_factors(self, name: str) -> np.ndarray:
        return np.log2(self.m[name]) - np.log2(self.u[name])

    def match_weights(self, patterns: pd.DataFrame) -> np.ndarray:
        """log2 posterior odds of a match for each pattern row (null levels add nothing)."""
        weight = np.full(len(patterns), np.log2(self.match_share / (1 - self.match_share)))
        for c in self.comparisons:
            level = patterns[f"gamma_{c.name}"].to_numpy(dtype="float64")
            known = ~np.isnan(level)
            weight[known] += self.log2_bayes_factors(c.name)[level[known].astype(int)]
        return weight

    def table(self) -> pd.DataFrame:
        """One row per comparison level: m, u and the log2 Bayes factor (the level's match weight)."""
        rows = [(c.name, i, level, float(self.m[c.name][i]), float(self.u[c.name][i]),
                 float(self.log2_bayes_factors(c.name)[i]))
                for c in self.comparisons for i, level in enumerate(c.levels)]
        return pd.DataFrame(rows, columns=["comparison", "level", "level_name", "m", "u", "bayes_factor_log2"])


def fit_em(patterns: pd.DataFrame, start: MatchModel | None = None, prior_strength: float = 50.0,
           max_iterations: int = 1000, tolerance: float = 1e-7) -> MatchModel:
    """Estimate m, u and the match share by EM over comparison patterns (`count` column = weight).

    `prior_strength` pseudo-pairs drawn from the starting model's probabilities are added in
    each M-step (a Dirichlet prior): negligible for real data, it keeps tiny lists sensible.
    Raises EMDidNotConverge if the largest parameter change is still above `tolerance`.
    """
    model = start or MatchModel.prior()
    comparisons = model.comparisons
    counts = patterns["count"].to_numpy(dtype="float64")
    levels = {c.name: patterns[f"gamma_{c.name}"].to_numpy(dtype="float64") for c in comparisons}
    prior_m = {c.name: np.array(c.m_prior) for c in comparisons}
    prior_u = {c.name: np.array(c.u_prior) for c in comparisons}
    prior_share = model.match_share
    for iteration in range(1, max_iterations + 1):
        # E-step: posterior match probability of each pattern.
        log_m = np.zeros(len(patterns))
        log_u = np.zeros(len(patterns))
        for c in comparisons:
            known = ~np.isnan(levels[c.name])
            idx = levels[c.name][known].astype(int)
            log_m[known] += np.log(model.m[c.name][idx])
            log_u[known] += np.log(model.u[c.name][idx])
        log_odds = np.log(model.match_share) - np.log1p(-model.match_share) + log_m - log_u
        posterior = 1.0 / (1.0 + np.exp(-np.clip(log_odds, -700, 700)))
        matched, unmatched = counts * posterior, counts * (1 - posterior)
        # M-step with pseudo-counts from the prior.
        share = (matched.sum() + prior_strength * prior_share) / (counts.sum() + prior_strength)
        m, u = {}, {}
        for c in comparisons:
            lv = levels[c.name]
            m_counts = np.array([matched[lv == i].sum() for i in range(len(c.levels))])
            u_counts = np.array([unmatched[lv == i].sum() for i in range(len(c.levels))])
            m_counts = m_counts + prior_strength * prior_m[c.name]
            u_counts = u_counts + prior_strength * prior_u[c.name]
            m[c.name], u[c.name] = m_counts / m_counts.sum(), u_counts / u_counts.sum()
        change = max([abs(share - model.match_share)]
                     + [float(np.max(np.abs(m[n] - model.m[n]))) for n in m]
                     + [float(np.max(np.abs(u[n] - model.u[n]))) for n in u])
        model = MatchModel(float(share), m, u, iteration, int(counts.sum()), comparisons)
        if change < tolerance:
            return model
    raise EMDidNotConverge(f"Fellegi-Sunter EM did not converge in {max_iterations} iterations "
                           f"(last parameter change {change:.2e} > {tolerance:.0e})")


def score_pairs(levels: DataFrame, model: MatchModel, patterns: pd.DataFrame) -> DataFrame:
    """Pairs with `match_weight` (log2 odds) and `match_probability`, joined from the scored patterns."""
    scored = patterns[GAMMAS].copy()
    scored["match_weight"] = model.match_weights(patterns)
    scored["match_probability"] = 1.0 / (1.0 + np.power(2.0, -scored["match_weight"]))
    schema = T.StructType([*[T.StructField(g, T.IntegerType()) for g in GAMMAS],
                           T.StructField("match_weight", T.DoubleType()),
                           T.StructField("match_probability", T.DoubleType())])
    rows = [(*(None if pd.isna(v) else int(v) for v in r[:len(GAMMAS)]), float(r[-2]), float(r[-1]))
            for r in scored.itertuples(index=False)]
    weights = levels.sparkSession.createDataFrame(rows, schema)
    # Null-safe join on the pattern: null levels are part of it.
    condition = reduce(lambda a, b: a & b, [levels[g].eqNullSafe(weights[g]) for g in GAMMAS])
    return levels.join(F.broadcast(weights), condition).select(levels["*"], "match_weight", "match_probability")


def contact_match_records(contacts: DataFrame) -> DataFrame:
    """Silver contacts in the match form (`schemas.silver.MATCH_RECORD`); the record id is the graph node."""
    return contacts.select(F.concat(F.lit("contact:"), "contact_id").alias("record_id"),
                           *[c for c in MATCH_RECORD.column_names if c != "record_id"])


@dataclass(frozen=True)
class Linkage:
    links: DataFrame             # (src, dst, match_probability): record pairs at or above the threshold
    model: MatchModel
    candidate_pairs: int
    skipped_blocks: int


def link_records(records: DataFrame, conf: IdentityConfig) -> Linkage:
    """Block, compare, fit the model by EM and keep the pairs at or above `conf.match_threshold`."""
    candidates = candidate_pairs(records, [list(r) for r in conf.blocking_rules], conf.max_block_size)
    skipped = candidates.skipped_blocks.localCheckpoint()
    for row in skipped.orderBy(F.col("records").desc()).limit(5).collect():
        log.warning("matching: skipped block %s=%s of %d records (over max_block_size)", row.rule, row.block,
                    row.records)
    levels = comparison_levels(candidates.pairs, records).localCheckpoint()
    patterns = comparison_patterns(levels)
    if patterns.empty:
        model = MatchModel.prior()
        links = levels.sparkSession.createDataFrame([], "src string, dst string, match_probability double")
        return Linkage(links, model, 0, skipped.count())
    model = fit_em(patterns, prior_strength=conf.em_prior_strength)
    scored = score_pairs(levels, model, patterns)
    links = scored.where(F.col("match_probability") >= conf.match_threshold).select(
        F.col("record_id_l").alias("src"), F.col("record_id_r").alias("dst"), "match_probability")
    log.info("matching: %d candidate pairs, match share %.4f after %d EM iterations", model.pairs,
             model.match_share, model.iterations)
    return Linkage(links.localCheckpoint(), model, model.pairs, skipped.count())
