"""Probabilistic matching (Splink): training recovers known parameters; hand-made matches and non-matches;
households; the typo-heavy generator; blocking under a pair cap."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.identity import blocking, matching, person
from jobs.identity.contact_list import ContactListError, match_records, read_contact_list, resolve_contact_list
from jobs.platform.config import Settings
from jobs.platform.pii import pii_keys
from jobs.platform.settings import IdentityConfig
from jobs.tools.bench.baselines import PairwiseF1
from jobs.tools.generate.contact_list import generate_contact_list
from schemas.raw import CONTACT_LIST
from schemas.silver import MATCH_RECORD


def test_training_recovers_known_u_probabilities_and_duplicate_share(spark: SparkSession, settings: Settings,
                                                                      tmp_path: Path) -> None:
    """u from random pairs against the generator's known distributions; λ against the true duplicate pairs."""
    counts = generate_contact_list(tmp_path, 3000, seed=5, household_share=0.0, duplicate_rate=0.5, max_defects=1)
    records = match_records(read_contact_list(spark, tmp_path / "list.csv"), "US", pii_keys(settings).hmac_key)
    frame = matching.splink_input(records)
    # One defect per duplicate cannot break e-mail, phone and name + birth date at once: the
    # deterministic rules find every duplicate, so their recall is 1.
    conf = settings.identity.model_copy(update={"deterministic_recall": 1.0})
    model = matching.train(matching.training_sample(frame, counts["records"], 10**6), conf)
    u = {c["output_column_name"]: {level.get("label_for_charts"): level.get("u_probability")
                                   for level in c["comparison_levels"]} for c in model["comparisons"]}
    listed = pd.read_csv(tmp_path / "list.csv", dtype=str)

    def share_of_pairs_agreeing(values: pd.Series) -> float:
        """The reference: of all pairs of records with the value on both sides, the share that agree."""
        n = values.value_counts()
        return float((n * (n - 1)).sum() / (n.sum() * (n.sum() - 1)))

    # Birth dates uniform over 65 years (about 1/(65 * 365)), plus the duplicates' own agreement.
    assert u["birth_date"]["Exact match on birth_date"] == pytest.approx(
        share_of_pairs_agreeing(listed["dob"].dropna()), rel=0.25)
    assert u["given_name"]["Exact match on given_name"] == pytest.approx(
        share_of_pairs_agreeing(listed["first_name"].str.lower()), rel=0.15)
    truth = pd.read_csv(tmp_path / "truth.csv")["person_id"].value_counts()
    true_pairs = float((truth * (truth - 1) / 2).sum())
    all_pairs = counts["records"] * (counts["records"] - 1) / 2
    assert model["probability_two_random_records_match"] == pytest.approx(true_pairs / all_pairs, rel=0.1)
    assert model[matching.TRAINED_ON] == counts["records"]


def test_typo_heavy_list_resolves_with_high_precision_and_recall(spark: SparkSession, settings: Settings,
                                                                 tmp_path: Path) -> None:
    """A trained model on the typo-heavy generator (households, several defects per duplicate)."""
    counts = generate_contact_list(tmp_path / "in", 2500, seed=11)
    resolve_contact_list(spark, tmp_path / "in" / "list.csv", tmp_path / "out", "parquet", "US",
                         pii_keys(settings).hmac_key, settings.identity)
    resolved = spark.read.parquet(str(tmp_path / "out")).toPandas().set_index("source_record_id")["customer_id"]
    truth = pd.read_csv(tmp_path / "in" / "truth.csv").set_index("source_record_id")["person_id"]
    scores = PairwiseF1.of(resolved, truth)
    assert counts["records"] >= settings.identity.min_records_to_train  # trained on the list, not the default
    assert scores.precision >= 0.95 and scores.recall >= 0.95, scores


HAND_MADE = [
    # source, id, first, last, email, phone, street, city, postcode, dob, gender  -> expected person
    ("crm", "1", "Jonathan", "Okafor", "", "", "12 Elm Street", "Boston", "02110", "1984-03-07", "M", "okafor"),
    ("pos", "2", "Jonathon", "Okafor", "", "", "12 Elm St", "Boston", "02110", "1984-03-07", "M", "okafor"),  # typo
    ("web", "3", "Jonathan", "Okafor", "", "", "12 Elm Street.", "Boston", "02110", "1984-07-03", "M",
     "okafor"),                                                                           # day and month swapped
    ("crm", "4", "Grace", "Okafor", "", "", "12 Elm Street", "Boston", "02110", "1987-11-21", "F",
     "grace"),                                                                            # same family and address
    ("crm", "5", "Maria", "Lopez", "maria.lopez@example.com", "", "7 Oak Avenue", "Miami", "33101", "1990-05-17",
     "F", "lopez"),
    ("app", "6", "MARÍA", "LOPEZ", " Maria.Lopez@Example.com ", "", "", "", "", "", "", "lopez"),   # same e-mail
    ("crm", "7", "Maria", "Lopez", "mlopez77@example.org", "", "400 Hill Street", "Miami", "33101", "1977-09-02",
     "F", "other-lopez"),                                                                 # same name, other person
    ("crm", "8", "Wei", "Zhang", "", "(415) 555-0134", "1 Market Street", "San Francisco", "94105", "", "",
     "zhang"),
    ("pos", "9", "Wei", "Zhang", "", "+1 415 555 0134", "", "", "", "", "", "zhang"),     # same phone, other format
]


def _write_list(path: Path, rows: list[tuple]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "source_record_id", "first_name", "last_name", "email", "phone", "street", "city",
                         "postcode", "dob", "gender"])
        writer.writerows(r[:-1] for r in rows)


def test_hand_made_matches_and_non_matches(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    _write_list(tmp_path / "list.csv", HAND_MADE)
    counts = resolve_contact_list(spark, tmp_path / "list.csv", tmp_path / "out", "csv", "US",
                                  pii_keys(settings).hmac_key, settings.identity)

    mapping = {(r.source, r.source_record_id): r.customer_id
               for r in spark.read.option("header", True).csv(str(tmp_path / "out")).collect()}
    assert counts["records"] == len(HAND_MADE) == len(mapping)
    expected: dict[str, set[str]] = {}
    for row in HAND_MADE:
        expected.setdefault(row[-1], set()).add(mapping[(row[0], row[1])])
    assert all(len(ids) == 1 for ids in expected.values()), expected         # every true person is one customer
    assert len({next(iter(ids)) for ids in expected.values()}) == len(expected)  # and no two share one
    assert counts["customers"] == len(expected)


# Slow (about 40 s): the stage tier checks the pipeline's incremental resolution against a full one in `make test`.
@pytest.mark.slow
def test_resolving_a_list_twice_gives_the_same_ids_and_parquet_works(spark: SparkSession, settings: Settings,
                                                                      tmp_path: Path) -> None:
    rows = [dict(zip(["source", "source_record_id", "first_name", "last_name", "email", "phone", "street", "city",
                      "postcode", "dob", "gender"], r[:-1], strict=True)) for r in HAND_MADE]
    spark.createDataFrame(pd.DataFrame(rows)).write.parquet(str(tmp_path / "list.parquet"))
    conf, key = settings.identity, pii_keys(settings).hmac_key
    for out in ("a", "b"):
        resolve_contact_list(spark, tmp_path / "list.parquet", tmp_path / out, "parquet", "US", key, conf)
    first, second = (sorted(spark.read.parquet(str(tmp_path / o)).collect()) for o in ("a", "b"))
    assert first == second and len(first) == len(HAND_MADE)
    assert spark.read.parquet(str(tmp_path / "a")).columns == ["source", "source_record_id", "customer_id"]


def test_bad_lists_get_clear_errors(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    conf, key = settings.identity, pii_keys(settings).hmac_key
    (tmp_path / "no_id.csv").write_text("source,first_name\ncrm,Ann\n")
    with pytest.raises(ContactListError, match="source_record_id"):
        resolve_contact_list(spark, tmp_path / "no_id.csv", tmp_path / "o1", "csv", "US", key, conf)
    (tmp_path / "dup.csv").write_text("source,source_record_id,first_name\ncrm,1,Ann\ncrm,1,Bob\n")
    with pytest.raises(ContactListError, match="unique"):
        resolve_contact_list(spark, tmp_path / "dup.csv", tmp_path / "o2", "csv", "US", key, conf)
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    (tmp_path / "ok.csv").write_text("source,source_record_id,first_name\ncrm,1,Ann\n")
    with pytest.raises(ContactListError, match="not overwriting"):
        resolve_contact_list(spark, tmp_path / "ok.csv", tmp_path / "keep", "csv", "US", key, conf)
    assert (tmp_path / "keep" / "notes.txt").read_text() == "mine"


def test_names_only_lists_resolve_without_email_or_phone(spark: SparkSession, settings: Settings,
                                                         tmp_path: Path) -> None:
    no_contact_points = [(*r[:4], "", "", *r[6:]) for r in HAND_MADE if r[-1] in ("okafor", "grace", "other-lopez")]
    _write_list(tmp_path / "names.csv", no_contact_points)
    resolve_contact_list(spark, tmp_path / "names.csv", tmp_path / "out", "csv", "US", pii_keys(settings).hmac_key,
                         settings.identity)
    ids = {r.source_record_id: r.customer_id for r in spark.read.option("header", True).csv(str(tmp_path / "out"))
           .collect()}
    assert ids["1"] == ids["2"] == ids["3"]
    assert len({ids["1"], ids["4"], ids["7"]}) == 3


def test_a_model_trained_without_email_or_phone_still_links_and_keeps_people_apart(
        spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    """A list with no e-mail or phone (FEBRL's shape) trains none of their levels: the model has no m
    probability there and Splink scores them with its default. The person-evidence rules read the same
    weights (they once failed on such a model with a KeyError)."""
    model = matching.default_model()
    for comparison in model["comparisons"]:
        if comparison["output_column_name"] in ("email_key", "phone_key"):
            for level in comparison["comparison_levels"]:
                level.pop("m_probability", None)
    assert math.isfinite(person.level_weight(model, "phone_key", person.ELSE_LEVEL))
    no_contact_points = [(*r[:4], "", "", *r[6:]) for r in HAND_MADE if r[-1] in ("okafor", "grace", "other-lopez")]
    _write_list(tmp_path / "names.csv", no_contact_points)
    records = match_records(read_contact_list(spark, tmp_path / "names.csv"), "US", pii_keys(settings).hmac_key)
    links = matching.link_records(records, settings.identity, model_json=json.dumps(model)).links
    linked = {frozenset((r.src.split(":")[-1], r.dst.split(":")[-1])) for r in links.collect()}
    assert linked and all(pair <= {"1", "2", "3"} for pair in linked)     # the Okafors, and no one else
    assert set().union(*linked) == {"1", "2", "3"}


def test_blocking_leaves_out_oversized_blocks_and_skips_rules_over_the_pair_cap(
        spark: SparkSession, settings: Settings) -> None:
    records = spark.createDataFrame(
        [(f"r{i}", "Ann", f"Fam{i % 7}", None, "F", None, None, f"{i % 10} Main St", f"0{i % 3}", "TOWN", None, None)
         for i in range(60)] +
        # Forty Bo Lees: one block of the full-name rule, over the size cap, so none of its 780 pairs.
        [(f"b{i}", "Bo", "Lee", None, "M", None, None, None, None, None, None, None) for i in range(40)],
        ",".join(f"{c.name} {c.type}" for c in MATCH_RECORD.columns))
    conf = settings.identity.model_copy(update={"max_pairs_per_record": 2, "max_block_records": 30})
    blocks = blocking.block(matching.splink_input(records), conf.blocking_rules, conf.max_block_records,
                            conf.max_pairs_per_record)
    full_name = "given_name+family_name"
    # The Anns are seven families of 8 or 9: 228 pairs, over 2 per record (200); the Bo Lees are left out.
    assert blocks.pairs[full_name] == sum(n * (n - 1) // 2 for n in (9, 9, 9, 9, 8, 8, 8))
    assert blocks.oversized_blocks[full_name] == 1 and full_name in blocks.skipped_rules
    assert "email_key" not in blocks.skipped_rules and blocks.pairs["email_key"] == 0  # no e-mails: no pairs
    kept = blocks.records.where(F.col("unique_id").startswith("b")).select(*blocks.rules.values())
    assert all(v is None for row in kept.collect() for v in row)  # no key left to pair the Bo Lees on
    assert blocks.candidate_pairs == sum(blocks.pairs[r] for r in blocks.rules) > 0
    linkage = matching.link_records(records, conf)
    assert linkage.skipped_rules == blocks.skipped_rules and linkage.candidate_pairs == blocks.candidate_pairs


# Slow (about 90 s: two resolutions of a list, each training a model); the stage tier's resolution quality
# test scores households and typos of the generated sample in `make test`.
@pytest.mark.slow
def test_a_household_is_not_merged_and_a_typo_heavy_duplicate_is(spark: SparkSession, settings: Settings,
                                                                  tmp_path: Path) -> None:
    rows = [
        # Household: same surname, street, postcode and phone; different given names and birth dates.
        ("crm", "h1", "Grace", "Okafor", "", "+1 617 555 0142", "12 Elm Street", "Boston", "02110", "1987-11-21", "F"),
        ("crm", "h2", "Daniel", "Okafor", "", "+1 617 555 0142", "12 Elm Street", "Boston", "02110", "1985-02-03", "M"),
        ("crm", "h3", "Ruth", "Okafor", "", "+1 617 555 0142", "12 Elm Street", "Boston", "02110", "2012-06-30", "F"),
        # A duplicate of Daniel with three defects: first-letter typo, day/month swapped, postcode typo.
        ("pos", "d1", "Taniel", "Okafor", "", "", "12 Elm St", "Boston", "02101", "1985-03-02", "M"),
        # Father and son of one name, address and phone: only their birth dates tell them apart.
        ("crm", "s1", "Samuel", "Okafor", "", "+1 617 555 0142", "12 Elm Street", "Boston", "02110", "1958-04-09", "M"),
        ("pos", "s2", "Samuel", "Okafor", "", "+1 617 555 0142", "12 Elm St", "Boston", "02110", "1990-10-17", "M"),
        # Mother and son born on the same day of the month, thirty years apart, sharing e-mail, phone and address.
        ("crm", "m1", "Amara", "Eze", "eze.family@example.com", "+1 617 555 0199", "9 Birch Road", "Boston", "02118",
         "1961-05-14", "F"),
        ("web", "m2", "Chidi", "Eze", "eze.family@example.com", "+1 617 555 0199", "9 Birch Road", "Boston", "02118",
         "1991-05-14", "M"),
    ]
    _write_list(tmp_path / "list.csv", [(*r, "") for r in rows])

    def resolved(conf: IdentityConfig, out: str) -> dict[str, str]:
        resolve_contact_list(spark, tmp_path / "list.csv", tmp_path / out, "csv", "US", pii_keys(settings).hmac_key,
                             conf)
        return {r.source_record_id: r.customer_id for r in spark.read.option("header", True).csv(str(tmp_path / out))
                .collect()}

    ids = resolved(settings.identity, "out")
    assert len({ids["h1"], ids["h2"], ids["h3"], ids["s1"], ids["s2"]}) == 5     # the shared phone is not a link
    assert ids["d1"] == ids["h2"]
    assert ids["m1"] != ids["m2"]
    # Two known birth dates with nothing alike contradict a link whatever else agrees: with the given name
    # alone as person evidence, father and son are one customer without the contradiction, two with it.
    name_only = settings.identity.model_copy(update={"person_evidence": ("given_name",)})
    unguarded = resolved(name_only.model_copy(update={"person_contradiction": ()}), "unguarded")
    assert unguarded["s1"] == unguarded["s2"]
    guarded = resolved(name_only.model_copy(update={"person_contradiction": ("birth_date",)}), "guarded")
    assert guarded["s1"] != guarded["s2"]


def test_contact_list_schema_names_the_documented_columns() -> None:
    assert CONTACT_LIST.column_names == [
        "source", "source_record_id", "first_name", "last_name", "email", "phone", "street", "address_line2", "city",
        "postcode", "region", "country", "dob", "gender", "loyalty_id"]
    assert CONTACT_LIST.required == ["source", "source_record_id"]


def test_unreadable_birth_dates_are_counted_and_impossible_ones_kept_as_text(spark: SparkSession, settings: Settings,
                                                                             tmp_path: Path) -> None:
    (tmp_path / "dob.csv").write_text("source,source_record_id,first_name,dob\ncrm,1,Ann,yesterday\n"
                                      "crm,2,Ann,1987-02-30\ncrm,3,Ann,19870228\ncrm,4,Ann,\n")
    counts = resolve_contact_list(spark, tmp_path / "dob.csv", tmp_path / "out", "csv", "US",
                                  pii_keys(settings).hmac_key, settings.identity)
    assert counts["invalid_dob"] == 1 and counts["records"] == counts["rows"] == 4
    records = match_records(read_contact_list(spark, tmp_path / "dob.csv"), "US", pii_keys(settings).hmac_key)
    assert {r.record_id: r.birth_date for r in records.collect()} == {
        "record:crm:1": None, "record:crm:2": "1987-02-30", "record:crm:3": "1987-02-28", "record:crm:4": None}


def test_unknown_block_columns_and_evidence_comparisons_are_clear_errors(settings: Settings) -> None:
    with pytest.raises(ValueError, match=r"blocking_rules/training_blocks: unknown column\(s\) \['surname'\]"):
        matching.check_rules(settings.identity.model_copy(update={"training_blocks": (("surname",),)}))
    with pytest.raises(ValueError, match=r"person_evidence: unknown comparison\(s\) \['dob'\]"):
        matching.check_rules(settings.identity.model_copy(update={"person_evidence": ("dob",)}))


def test_a_pair_with_one_name_apart_and_another_birth_date_is_two_members_of_a_household(
        spark: SparkSession) -> None:
    model = matching.default_model()

    def at(name: str, level: int | None) -> float:
        """The comparison's weight at a level; None: its 'else' level (both known, nothing alike)."""
        return person.level_weight(model, name, person.ELSE_LEVEL if level is None else level)

    exact, null, one_part_differs = 1, 0, 3     # levels of `matching._birth_date_comparison`
    pairs = [
        # (given, family, birth date) levels -> household members?
        ((None, exact, one_part_differs), True),    # a parent and a child born on the same day of another year
        ((None, exact, null), True),                # another given name, no birth date to say otherwise
        ((exact, None, null), True),                # a couple of one given name and two family names
        ((None, exact, exact), False),              # a garbled given name: the birth date is the person's
        ((None, exact, 2), False),                  # ...or the same date with day and month swapped
        ((None, None, one_part_differs), False),    # names swapped and misspelt: both parts apart
        ((exact, exact, null), False),              # one name, nothing apart
        ((3, exact, one_part_differs), False),      # a similar given name is not apart
    ]
    rows = [(at("given_name", g), at("family_name", f), 0.0 if d == null else at("birth_date", d))
            for (g, f, d), _ in pairs]
    scored = spark.createDataFrame(rows, "mw_given_name double, mw_family_name double, mw_birth_date double")
    flagged = [r.household for r in scored.select(person.household_member(model).alias("household")).collect()]
    assert flagged == [expected for _, expected in pairs]


def test_a_birth_date_vetoes_a_link_only_where_the_model_finds_duplicates_rarely_disagree_on_it() -> None:
    """The shipped model (a generated list: 0.9% of duplicates carry an unrelated birth date) keeps the veto;
    a model of a list whose duplicates do so 6% of the time (FEBRL) weighs the disagreement instead."""
    model = matching.default_model()
    assert person.contradicting(model, ("birth_date",), 0.02) == ["birth_date"]
    noisy = json.loads(json.dumps(model))
    levels = next(c for c in noisy["comparisons"] if c["output_column_name"] == "birth_date")["comparison_levels"]
    levels[1]["m_probability"] -= 0.06 - levels[-1]["m_probability"]
    levels[-1]["m_probability"] = 0.06
    assert person.contradicting(noisy, ("birth_date",), 0.02) == []
    assert person.level_weight(noisy, "birth_date", person.ELSE_LEVEL) > person.level_weight(
        model, "birth_date", person.ELSE_LEVEL)


def test_the_shipped_default_model_compares_what_the_code_compares() -> None:
    """jobs/identity/default_model.json is retrained (cdp identity-train) whenever a comparison changes."""
    model = matching.default_model()
    assert matching.model_matches_code(model)
    assert model[matching.TRAINED_ON] > 10_000
