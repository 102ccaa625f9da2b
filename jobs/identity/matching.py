"""Probabilistic record linkage (Fellegi-Sunter) with Splink 5 on the pipeline's own Spark session.

Why Splink rather than our own EM: it trains the model the way the method needs (u from random
pairs and fixed during EM, m by EM on blocks that leave the compared columns free), adjusts exact
matches by term frequency (a shared "Smith" or a family phone says less than a rare name), and
compares strings with compiled Scala similarity functions instead of Python UDFs.

Records are in the match form of `schemas.silver.MATCH_RECORD`. The work is:

1. Blocking (`blocking.py`): candidate pairs agree on every column of at least one rule (conf
   identity.blocking_rules, columns of `splink_input`), outside blocks too large to hold duplicates
   worth their pairs, under rules that stay within a pair cap, so work grows with the data, never
   with its square.
2. Model: the model in force is reused (`model_json`); otherwise one is trained, when the list has
   at least `min_records_to_train` records, or the shipped default (`default_model.json`, trained
   on the generator's typo-heavy lists) is used for lists too small to learn from.
3. Scoring: each candidate pair gets a match weight, the sum of one weight per comparison; the pairs
   at or above `match_threshold` are the links, and each keeps its per-comparison weights so that a
   merge can be explained.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.identity import blocking, person
from jobs.platform.sampling import hashed_sample
from jobs.platform.settings import IdentityConfig

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default_model.json"   # package data: read through importlib.resources (spark-submit ships a zip)
TRAINED_ON = "trained_on_records"   # our keys in a stored model: the records it was trained on (a sample),
DRAWN_FROM = "drawn_from_records"   # the records that sample was drawn from,
SHIPPED_DEFAULT = "shipped_default"  # and whether it is the default (not trained on this data)

# Columns Splink reads (built by `splink_input`); blocking rules name them.
BLOCK_COLUMNS = ("given_name", "family_name", "birth_date", "birth_year", "street", "street_number", "postcode",
                 "locality", "region", "email_key", "phone_key", "given_soundex", "family_soundex")


def splink_input(records: DataFrame) -> DataFrame:
    """Match-form records as Splink compares them: lower-case names, the birth date as text (a typo'd
    impossible date still agrees on its other parts), block keys derived with Spark built-ins."""
    given, family = F.lower(F.trim("given_name")), F.lower(F.trim("family_name"))
    dob = F.col("birth_date")
    street = F.col("address_tokens")

    def blank_to_null(c: Column) -> Column:
        return F.when(F.trim(c) != "", c)

    return records.select(
        F.col("record_id").alias("unique_id"),
        blank_to_null(given).alias("given_name"), blank_to_null(family).alias("family_name"),
        dob.alias("birth_date"), F.substring(dob, 1, 4).alias("birth_year"),
        blank_to_null(street).alias("street"),
        blank_to_null(F.regexp_extract(street, r"^(\d+)", 1)).alias("street_number"),
        blank_to_null(F.upper(F.trim("postcode"))).alias("postcode"),
        blank_to_null(F.upper(F.trim("locality"))).alias("locality"),
        blank_to_null(F.upper(F.trim("region"))).alias("region"),
        "email_key", "phone_key",
        blank_to_null(F.soundex(given)).alias("given_soundex"),
        blank_to_null(F.soundex(family)).alias("family_soundex"),
    )


def _name_comparison(column: str, other: str) -> Any:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    return cl.CustomComparison(output_column_name=column, comparison_levels=[
        cll.NullLevel(column),
        cll.ExactMatchLevel(column).configure(tf_adjustment_column=column),
        # Given and family name entered the other way round.
        cll.CustomLevel(f"{column}_l = {other}_r AND {other}_l = {column}_r", "swapped with " + other),
        cll.JaroWinklerLevel(column, 0.92),
        cll.JaroWinklerLevel(column, 0.85),
        cll.DamerauLevenshteinLevel(column, 2),
        cll.JaroWinklerLevel(column, 0.7),
        cll.ElseLevel(),
    ])


def _birth_date_comparison() -> Any:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    def part(side: str, start: int, length: int) -> str:
        return f"substr(birth_date_{side}, {start}, {length})"

    year, month, day = ((part("l", 1, 4), part("r", 1, 4)), (part("l", 6, 2), part("r", 6, 2)),
                        (part("l", 9, 2), part("r", 9, 2)))
    same = [f"{a} = {b}" for a, b in (year, month, day)]
    two_of_three = " OR ".join(f"({x} AND {y})" for x, y in ((same[0], same[1]), (same[0], same[2]),
                                                              (same[1], same[2])))
    return cl.CustomComparison(output_column_name="birth_date", comparison_levels=[
        cll.NullLevel("birth_date"),
        cll.ExactMatchLevel("birth_date"),
        cll.CustomLevel(f"{same[0]} AND {month[0]} = {day[1]} AND {day[0]} = {month[1]}", "day and month swapped"),
        cll.CustomLevel(two_of_three, "one of year, month, day differs"),
        cll.DamerauLevenshteinLevel("birth_date", 2),
        cll.ElseLevel(),
    ])


def _address_comparison() -> Any:
    """Street, postcode, locality and region as one comparison: they are far from independent (a
    household shares them all), and counting them as four pieces of evidence would quadruple one fact."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    street_exact, street_close = cll.ExactMatchLevel("street"), cll.JaroWinklerLevel("street", 0.9)
    postcode_exact, postcode_close = cll.ExactMatchLevel("postcode"), cll.DamerauLevenshteinLevel("postcode", 1)
    locality_close = cll.JaroWinklerLevel("locality", 0.88)
    unknown = cll.And(*[cll.NullLevel(c) for c in ("street", "postcode", "locality", "region")])
    return cl.CustomComparison(output_column_name="address", comparison_levels=[
        unknown.configure(is_null_level=True, label_for_charts="no address part on both sides"),
        cll.And(street_exact, postcode_exact).configure(label_for_charts="same street and postcode"),
        cll.And(street_close, cll.Or(postcode_close, locality_close)).configure(
            label_for_charts="similar street, same area"),
        street_close.configure(label_for_charts="similar street, other area"),
        cll.And(postcode_exact, locality_close).configure(label_for_charts="same postcode and locality"),
        cll.Or(postcode_close, locality_close).configure(label_for_charts="similar postcode or locality"),
        cll.ExactMatchLevel("region").configure(label_for_charts="same region"),
        cll.ElseLevel(),
    ])


def comparisons() -> list[Any]:
    """The compared attributes, each at discrete levels from exact agreement down to 'else'."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    def exact_tf(column: str) -> Any:
        return cl.CustomComparison(output_column_name=column, comparison_levels=[
            cll.NullLevel(column), cll.ExactMatchLevel(column).configure(tf_adjustment_column=column),
            cll.ElseLevel()])

    return [
        _name_comparison("given_name", "family_name"),
        _name_comparison("family_name", "given_name"),
        _birth_date_comparison(),
        _address_comparison(),
        # Shared contact points (a family phone, a couple's e-mail) weigh less through their frequency.
        exact_tf("email_key"),
        exact_tf("phone_key"),
    ]


LINK_COLUMNS = ("src", "dst", "match_probability", "match_weight", "weights")
COMPARED = ("given_name", "family_name", "birth_date", "address", "email_key", "phone_key")
TF_COLUMNS = ("given_name", "family_name", "email_key", "phone_key")   # exact matches adjusted by frequency


def settings(conf: IdentityConfig, rules: list[tuple[str, ...]]) -> Any:
    from splink import SettingsCreator, block_on

    return SettingsCreator(
        link_type="dedupe_only", unique_id_column_name="unique_id", comparisons=comparisons(),
        blocking_rules_to_generate_predictions=[block_on(*rule) for rule in rules],
        retain_matching_columns=False, retain_intermediate_calculation_columns=True,
        probability_two_random_records_match=0.0001, max_iterations=conf.em_max_iterations,
    )


def check_rules(conf: IdentityConfig) -> None:
    """Configuration names only columns and comparisons this code has (else a Spark error deep in Splink)."""
    unknown = sorted({c for rule in (*conf.blocking_rules, *conf.training_blocks) for c in rule} - set(BLOCK_COLUMNS))
    if unknown:
        raise ValueError(f"identity.blocking_rules/training_blocks: unknown column(s) {unknown}; "
                         f"known: {list(BLOCK_COLUMNS)}")
    for key in ("person_evidence", "person_contradiction"):
        unknown = sorted(set(getattr(conf, key)) - set(COMPARED))
        if unknown:
            raise ValueError(f"identity.{key}: unknown comparison(s) {unknown}; known: {list(COMPARED)}")


@dataclass(frozen=True)
class Linkage:
    links: DataFrame                 # (src, dst, match_probability, match_weight, weights): at or above threshold
    model_json: str                  # the Splink model that scored them
    match_share: float               # its λ, at this list's size
    trained: bool                    # trained on this data (else the model in force or the default)
    blocking: blocking.Blocking      # the pairs compared, and what the caps left out
    scored_records: int              # records scored against the rest: all of them, or the changed ones

    @property
    def candidate_pairs(self) -> int:
        return self.blocking.candidate_pairs

    @property
    def skipped_rules(self) -> list[str]:
        return self.blocking.skipped_rules

    @property
    def model_records(self) -> int:
        """The contact records when the model was trained (its sample was drawn from them)."""
        model = json.loads(self.model_json)
        return int(model.get(DRAWN_FROM, model[TRAINED_ON]))


def default_model() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath(DEFAULT_MODEL).read_text())


def model_matches_code(model: dict[str, Any]) -> bool:
    """Whether a stored model compares what this code compares, level for level."""
    stored = [(c["output_column_name"], len(c["comparison_levels"])) for c in model.get("comparisons", [])]
    return stored == [(n, len(levels)) for n, levels in _current_levels()]


def _current_levels() -> list[tuple[str, list[Any]]]:
    return [(c.create_output_column_name(), c.create_comparison_levels()) for c in comparisons()]


def train(sample: pd.DataFrame, conf: IdentityConfig) -> dict[str, Any]:
    """A model trained on a sample of the records, in Splink's DuckDB backend (an in-process database:
    each EM iteration is a millisecond query there, seconds of query planning on Spark): λ from
    deterministic rules, u from random pairs (fixed during EM), m by EM on the training blocks."""
    import duckdb
    from splink import DuckDBAPI, Linker, block_on

    db = DuckDBAPI(connection=duckdb.connect(":memory:", config={"threads": conf.training_threads}))
    linker = Linker(db.register(sample), settings(conf, []), log_level=logging.WARNING)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("email_key"), block_on("phone_key"), block_on("given_name", "family_name", "birth_date")],
        recall=conf.deterministic_recall)
    linker.training.estimate_u_using_random_sampling(max_pairs=conf.u_sample_pairs, seed=1)
    for block in conf.training_blocks:
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on(*block), estimate_without_term_frequencies=True, max_pairs=conf.em_max_pairs)
    return {**linker.misc.save_model_to_json(), TRAINED_ON: len(sample)}


def short_list_frequencies(frame: DataFrame, column: str) -> DataFrame:
    """Term frequencies of a short list, for values on three records or more only (the others get no
    adjustment). In a list of ten, two records sharing the only phone is what a duplicate pair looks
    like, not a common phone; sixty records sharing a hotline is."""
    known = frame.where(F.col(column).isNotNull())
    total = max(known.count(), 1)
    return known.groupBy(column).agg(F.count("*").alias("n")).where(F.col("n") >= 3) \
        .select(column, (F.col("n") / F.lit(total)).alias(f"tf_{column}"))


def match_share(model: dict[str, Any], records: int) -> float:
    """λ for a list of `records`: the model's, at the same number of duplicates per record. Matches grow
    with the records and pairs with their square, so λ scales with 1/(n - 1) (a model trained on 90k
    records puts λ at 2e-5; on a list of ten the same duplicate rate is 0.2)."""
    scaled = model["probability_two_random_records_match"] * (model[TRAINED_ON] - 1) / max(records - 1, 1)
    return min(scaled, 0.5)


def spark_settings(conf: IdentityConfig, rules: list[tuple[str, ...]], model: dict[str, Any],
                   records: int) -> dict[str, Any]:
    """Settings for scoring on Spark: this code's comparisons in Spark SQL, today's blocking rules, and the
    model's trained numbers (λ, m and u per level). The stored model's SQL is DuckDB's: never parsed here."""
    spark_model = settings(conf, rules).get_settings("spark").as_dict()
    spark_model["probability_two_random_records_match"] = match_share(model, records)
    for comparison, trained in zip(spark_model["comparisons"], model["comparisons"], strict=True):
        for level, numbers in zip(comparison["comparison_levels"], trained["comparison_levels"], strict=True):
            level.update({k: numbers[k] for k in ("m_probability", "u_probability") if k in numbers})
    return spark_model


def training_sample(frame: DataFrame, records: int, size: int) -> pd.DataFrame:
    """Up to `size` records through Arrow, drawn by a hash of the record id (the same sample on every run)."""
    return hashed_sample(frame, "unique_id", records, size).toPandas()


def link_records(records: DataFrame, conf: IdentityConfig, model_json: str | None = None, refit: bool = False,
                 changed: DataFrame | None = None, kept_links: DataFrame | None = None) -> Linkage:
    """Block, score with the model in force (or train one) and keep the links at or above the threshold.

    Incremental (`changed`: the record ids new or changed since the last run, `kept_links`: that run's
    links between the other records): only pairs with a changed record are scored, and the kept links
    carried over. Blocks and term frequencies are those of all the records, as in a full run.
    """
    from splink import Linker, SparkAPI

    check_rules(conf)
    spark = records.sparkSession
    blocks = blocking.block(splink_input(records), conf.blocking_rules, conf.max_block_records,
                            conf.max_pairs_per_record)
    frame = blocks.records.localCheckpoint()
    n_records = frame.count()
    for rule in blocks.skipped_rules:
        log.warning("matching: blocking rule %s skipped: %d pairs over the cap of %d per record", rule,
                    blocks.pairs[rule], conf.max_pairs_per_record)
    rules = [(column,) for column in blocks.rules.values()]
    stored = json.loads(model_json) if model_json else None
    trained = refit or stored is None or not model_matches_code(stored)
    if trained and n_records < conf.min_records_to_train:
        stored, trained = {**default_model(), SHIPPED_DEFAULT: True}, False
    if trained:
        changed = kept_links = None   # a new model scores every pair again
    model = {**train(training_sample(frame.drop(*blocks.rules.values()), n_records, conf.training_sample_records),
                     conf), DRAWN_FROM: n_records} if trained else stored
    model_out = json.dumps(model)
    lam = match_share(model, n_records)
    new = frame if changed is None else \
        frame.join(changed.select(F.col("record_id").alias("unique_id")), "unique_id", "left_semi").localCheckpoint()
    scored_records = n_records if changed is None else new.count()
    kept = (kept_links.select(*LINK_COLUMNS) if kept_links is not None else
            spark.createDataFrame([], "src string, dst string, match_probability double, match_weight double, "
                                      "weights map<string,double>"))
    if not rules or scored_records == 0:
        return Linkage(kept, model_out, lam, trained, blocks, scored_records)
    db = SparkAPI(spark_session=spark, break_lineage_method="persist")
    scoring = spark_settings(conf, rules, model, n_records)
    linker = Linker(db.register(frame), scoring, log_level=logging.WARNING)
    for column in TF_COLUMNS:
        if n_records < conf.min_records_to_train:
            linker.table_management.register_term_frequency_lookup(
                db.register(short_list_frequencies(frame, column)), column)
        elif changed is not None:
            linker.table_management.compute_tf_table(column)   # of all records, not only the changed
    if changed is None:
        scored = linker.inference.predict(threshold_match_probability=conf.match_threshold).as_spark_dataframe()
    else:
        rest = frame.join(new.select("unique_id"), "unique_id", "left_anti")
        scored = linker.inference.predict_within(
            db.register(new), threshold_match_probability=conf.match_threshold).as_spark_dataframe().unionByName(
            linker.inference.predict_between(db.register(rest), db.register(new),
                                             threshold_match_probability=conf.match_threshold).as_spark_dataframe())
    vetoes = person.contradicting(scoring, conf.person_contradiction, conf.contradiction_max_match_share)
    one_person = person.one_person(scoring, scored.columns, conf.person_evidence, vetoes, conf.household_members_apart)
    ids = F.col("unique_id_l"), F.col("unique_id_r")
    links = scored.where(one_person).select(F.least(*ids).alias("src"), F.greatest(*ids).alias("dst"),
                                         "match_probability", "match_weight",
                                         comparison_weights(scored.columns).alias("weights"))
    log.info("matching: %d candidate pairs over %d rules (%d oversized blocks left out), %d of %d records "
             "scored, model %s, vetoed by disagreeing %s", blocks.candidate_pairs, len(rules),
             sum(blocks.oversized_blocks.values()), scored_records, n_records, "trained" if trained else "in force",
             vetoes or "nothing")
    return Linkage(kept.unionByName(links).localCheckpoint(), model_out, lam, trained, blocks, scored_records)


def comparison_weights(columns: list[str]) -> Column:
    """map<comparison, match weight (log2 Bayes factor)>: the data of a pair's waterfall chart."""
    return F.create_map(*[part for name in COMPARED
                          for part in (F.lit(name), F.round(person.weight_of(name, columns), 3))])


def fingerprint(records: DataFrame) -> Column:
    """A hash of a match-form record's compared content: a record whose fingerprint changed is scored again."""
    return F.xxhash64(F.to_json(F.struct(*[c for c in records.columns if c != "record_id"])))


def contact_match_records(contacts: DataFrame) -> DataFrame:
    """Silver contacts in the match form (`schemas.silver.MATCH_RECORD`); the record id is the graph node."""
    return contacts.select(
        F.concat(F.lit("contact:"), "contact_id").alias("record_id"), "given_name", "family_name",
        F.date_format("birth_date", "yyyy-MM-dd").alias("birth_date"), "gender", "email_key", "phone_key",
        "address_tokens", "postcode", F.upper(F.trim("city")).alias("locality"),
        F.lit(None).cast("string").alias("region"), "loyalty_number")
