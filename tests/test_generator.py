"""The generator: deterministic, consistent with its ground truth, dirty at the configured rates."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections import Counter
from pathlib import Path

import pytest

from jobs.config import Settings
from jobs.generate import DUPLICATED, generate
from schemas.raw import SOURCES

PEOPLE = 400


def _generate(settings: Settings, out: Path, seed: int = 42, workers: int = 1) -> dict:
    return generate(settings.section("generator"), out / "landing", out / "truth", customers=PEOPLE, seed=seed,
                    workers=workers)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sample(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gen")
    return out, _generate(settings, out)


def test_same_seed_gives_byte_identical_output_serial_or_parallel(settings: Settings, sample, tmp_path: Path) -> None:
    out, _ = sample
    _generate(settings, tmp_path / "again", workers=2)
    _generate(settings, tmp_path / "other", seed=43)

    assert _digest(out) == _digest(tmp_path / "again")
    assert _digest(out / "landing") != _digest(tmp_path / "other" / "landing")


def _landed_record_ids(landing: Path) -> Counter:
    """(source, record id) of every line that can still be parsed, counted."""
    seen: Counter = Counter()
    for name, source in SOURCES.items():
        for path in sorted((landing / name).rglob("*.*")):
            with path.open(encoding="utf-8") as fh:
                if source.format == "csv":
                    # One record per line is the contract: a broken quote must not swallow the next line.
                    header = next(csv.reader([fh.readline()]))
                    rows = [next(csv.reader([line])) for line in fh]
                    ids = [dict(zip(header, row)).get(source.record_id) for row in rows if len(row) == len(header)]
                else:
                    ids = []
                    for line in fh:
                        try:
                            ids.append(json.loads(line).get(source.record_id))
                        except json.JSONDecodeError:
                            continue
            seen.update((name, i) for i in ids if i)
    return seen


def test_every_source_record_maps_to_exactly_one_true_person(sample) -> None:
    out, _ = sample
    truth: dict[tuple[str, str], list[str]] = {}
    for path in (out / "truth" / "records").glob("*.csv"):
        for row in csv.DictReader(path.open()):
            truth.setdefault((row["source"], row["record_id"]), []).append(row["person_id"])
    persons = {row["person_id"] for p in (out / "truth" / "persons").glob("*.csv") for row in csv.DictReader(p.open())}

    landed = _landed_record_ids(out / "landing")
    person_sources = [k for k in landed if k[0] not in ("fx_rates", "marketing_spend")]

    assert len(persons) == PEOPLE
    emails = [row["email"] for p in (out / "truth" / "persons").glob("*.csv") for row in csv.DictReader(p.open())]
    assert len(set(emails)) == len(emails), "two people share an e-mail address"
    assert all(len(v) == 1 for v in truth.values()), "a record id is claimed by two people"
    assert set(person_sources) <= set(truth), "a landed record has no ground truth"
    assert {p for v in truth.values() for p in v} <= persons
    # Every source with people in it is present, and every truth record landed somewhere.
    assert {s for s, _ in truth} == set(SOURCES) - {"fx_rates", "marketing_spend"}


def _within(observed: int, n: int, rate: float) -> bool:
    """Binomial count within 4 standard deviations (plus a little slack for tiny n)."""
    return abs(observed - n * rate) <= 4 * math.sqrt(n * rate * (1 - rate)) + 2


def test_dirt_rates_match_configuration(sample, settings: Settings) -> None:
    _, summary = sample
    rates = settings.section("generator")["dirt"]
    checked = 0
    for source, counts in summary["counts"].items():
        n = counts["records"]
        for kind in ("malformed_row", "exact_duplicate", "replayed_event", "late_arrival", "email_case_whitespace"):
            if kind in counts or (kind == "exact_duplicate" and source in DUPLICATED):
                assert _within(counts.get(kind, 0), n, rates[kind]), (source, kind, counts.get(kind, 0), n)
                checked += 1
    assert checked >= 15


def test_exact_duplicates_in_truth_are_really_repeated_lines(sample) -> None:
    out, summary = sample
    for source in sorted(DUPLICATED):
        repeated = 0
        for path in (out / "landing" / source).rglob("*.*"):
            lines = path.read_text(encoding="utf-8").splitlines()
            repeated += len(lines) - len(set(lines))
        assert repeated == summary["counts"][source].get("exact_duplicate", 0), source


def test_true_behaviour_is_drawn_from_the_written_parameters(sample) -> None:
    out, summary = sample
    rows = [r for p in (out / "truth" / "persons").glob("*.csv") for r in csv.DictReader(p.open())]
    btyd = summary["btyd"]
    lam = [float(r["lam"]) for r in rows]
    p_drop = [float(r["p_drop"]) for r in rows]
    mean_lam, mean_p = sum(lam) / len(lam), sum(p_drop) / len(p_drop)
    # Gamma(r, alpha) has mean r/alpha and sd sqrt(r)/alpha; Beta(a, b) has mean a/(a+b).
    se_lam = math.sqrt(btyd["r"]) / btyd["alpha"] / math.sqrt(len(lam))
    assert abs(mean_lam - btyd["r"] / btyd["alpha"]) < 4 * se_lam
    assert abs(mean_p - btyd["a"] / (btyd["a"] + btyd["b"])) < 0.04
    prospects = [r for r in rows if r["is_prospect"] == "1"]
    assert all(r["n_purchases"] == "0" for r in prospects)
    assert all(int(r["n_purchases"]) >= 1 for r in rows if r["is_prospect"] == "0")
