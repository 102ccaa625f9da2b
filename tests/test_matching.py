"""Probabilistic matching: EM recovers known parameters; hand-made matches and non-matches; blocking."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession

from jobs.identity import matching
from jobs.identity.contact_list import ContactListError, resolve_contact_list
from jobs.platform.config import Settings
from jobs.platform.pii import pii_keys
from schemas.raw import CONTACT_LIST


def simulate_patterns(rng: np.random.Generator, model: matching.MatchModel, pairs: int,
                      missing: float) -> pd.DataFrame:
    """Comparison vectors drawn from known m, u and match share, some levels missing at random."""
    is_match = rng.random(pairs) < model.match_share
    columns = {}
    for c in model.comparisons:
        m_draw = rng.choice(len(c.levels), pairs, p=model.m[c.name])
        u_draw = rng.choice(len(c.levels), pairs, p=model.u[c.name])
        level = np.where(is_match, m_draw, u_draw).astype("float64")
        level[rng.random(pairs) < missing] = np.nan
        columns[f"gamma_{c.name}"] = level
    frame = pd.DataFrame(columns)
    return frame.groupby(list(frame.columns), dropna=False).size().reset_index(name="count")


def test_em_recovers_the_parameters_it_was_simulated_from() -> None:
    rng = np.random.default_rng(11)
    truth = matching.MatchModel(
        0.12,
        m={"given_name": np.array([0.03, 0.04, 0.13, 0.80]), "family_name": np.array([0.02, 0.05, 0.08, 0.85]),
           "birth_date": np.array([0.04, 0.05, 0.06, 0.85]), "address": np.array([0.25, 0.05, 0.10, 0.60]),
           "email": np.array([0.4, 0.6]), "phone": np.array([0.35, 0.65]),
           "gender": np.array([0.03, 0.97])},
        u={"given_name": np.array([0.85, 0.08, 0.04, 0.03]), "family_name": np.array([0.5, 0.1, 0.1, 0.3]),
           "birth_date": np.array([0.96, 0.035, 0.003, 0.002]), "address": np.array([0.8, 0.1, 0.06, 0.04]),
           "email": np.array([0.995, 0.005]), "phone": np.array([0.99, 0.01]),
           "gender": np.array([0.5, 0.5])})
    patterns = simulate_patterns(rng, truth, 400_000, missing=0.1)
    start = matching.MatchModel.prior(match_share=0.3)  # deliberately far from the truth

    fitted = matching.fit_em(patterns, start=start, prior_strength=0.0)

    assert fitted.match_share == pytest.approx(truth.match_share, abs=0.005)
    for c in truth.comparisons:
        np.testing.assert_allclose(fitted.m[c.name], truth.m[c.name], atol=0.01, err_msg=f"m {c.name}")
        np.testing.assert_allclose(fitted.u[c.name], truth.u[c.name], atol=0.01, err_msg=f"u {c.name}")


def test_em_that_does_not_converge_is_an_error() -> None:
    patterns = simulate_patterns(np.random.default_rng(1), matching.MatchModel.prior(), 5_000, missing=0.0)
    with pytest.raises(matching.EMDidNotConverge, match="did not converge"):
        matching.fit_em(patterns, max_iterations=2)


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


def test_candidate_generation_has_no_cross_join(spark: SparkSession, settings: Settings) -> None:
    records = spark.createDataFrame(
        [(f"r{i}", "Ann", f"Fam{i % 7}", None, "F", None, None, f"{i % 10} Main St", f"0{i % 3}", None)
         for i in range(50)],
        ",".join(f"{c.name} {c.type}" for c in matching.MATCH_RECORD.columns))
    candidates = matching.candidate_pairs(records, settings.identity.blocking_rules, max_block_size=10)
    plan = candidates.pairs._jdf.queryExecution().executedPlan().toString()
    assert "CartesianProduct" not in plan and "NestedLoopJoin" not in plan
    assert candidates.pairs.count() > 0
    # Blocks over the size limit are skipped and reported, not compared.
    skipped = candidates.skipped_blocks.collect()
    assert skipped and all(r.records > 10 for r in skipped)


def test_contact_list_schema_names_the_documented_columns() -> None:
    assert CONTACT_LIST.column_names == [
        "source", "source_record_id", "first_name", "last_name", "email", "phone", "street", "address_line2", "city",
        "postcode", "region", "country", "dob", "gender", "loyalty_id"]
    assert CONTACT_LIST.required == ["source", "source_record_id"]
