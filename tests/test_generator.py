"""The generator: deterministic, consistent with its ground truth, dirty at the configured rates."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections import Counter
from pathlib import Path

import pytest

from jobs.platform.config import Settings
from jobs.tools.generate import DUPLICATED, generate, text
from jobs.tools.generate.dirt import swap_day_month
from jobs.tools.generate.sources import DUPLICATE_BIRTH_DATE_BLANK, DUPLICATE_EMAIL_BLANK, DUPLICATE_PHONE_BLANK
from schemas.raw import SOURCES

PEOPLE = 400


def _generate(settings: Settings, out: Path, seed: int = 42, workers: int = 1, **dirt: float) -> dict:
    gen = settings.generator
    gen = gen.model_copy(update={"dirt": gen.dirt.model_copy(update=dirt)})
    return generate(gen, out / "landing", out / "truth", customers=PEOPLE, seed=seed, workers=workers)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sample(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gen")
    return out, _generate(settings, out)


@pytest.fixture(scope="module")
def hard_sample(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Many duplicate contacts and households, so that the shares conditional on them (swapped
    or blank birth dates, blank identifiers) have enough cases to be checked."""
    out = tmp_path_factory.mktemp("gen-hard")
    return out, _generate(settings, out, duplicate_contact=0.5, household_share=0.3)


def test_same_seed_gives_byte_identical_output_serial_or_parallel(settings: Settings, sample, tmp_path: Path) -> None:
    out, _ = sample
    _generate(settings, tmp_path / "again", workers=2)
    _generate(settings, tmp_path / "other", seed=43)

    assert _digest(out) == _digest(tmp_path / "again")
    assert _digest(out / "landing") != _digest(tmp_path / "other" / "landing")


def test_contacts_only_writes_the_contacts_of_a_full_generation(settings: Settings, sample, tmp_path: Path) -> None:
    out, _ = sample
    generate(settings.generator, tmp_path / "landing", tmp_path / "truth", customers=PEOPLE, seed=42,
             contacts_only=True)
    contacts = _digest(out / "landing" / "contacts")
    assert contacts and _digest(tmp_path / "landing" / "contacts") == contacts
    assert not (tmp_path / "landing" / "events").exists()
    truth = (tmp_path / "truth" / "records" / "part-00000.csv").read_text().splitlines()
    full = [line for line in (out / "truth" / "records" / "part-00000.csv").read_text().splitlines()
            if line.startswith("contacts,")]
    assert truth[1:] == full


def _parse_lines(source_name: str, path: Path) -> list[dict]:
    """The records of one landed file that can still be parsed, one line at a time."""
    source = SOURCES[source_name]
    with path.open(encoding="utf-8") as fh:
        if source.format == "csv":
            # One record per line is the contract: a broken quote must not swallow the next line.
            header = next(csv.reader([fh.readline()]))
            rows = [next(csv.reader([line])) for line in fh]
            return [dict(zip(header, row)) for row in rows if len(row) == len(header)]
        records = []
        for line in fh:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records


def _landed_record_ids(landing: Path) -> Counter:
    """(source, record id) of every line that can still be parsed, counted."""
    seen: Counter = Counter()
    for name, source in SOURCES.items():
        for path in sorted((landing / name).rglob("*.*")):
            ids = [record.get(source.record_id) for record in _parse_lines(name, path)]
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
    rates = settings.generator.dirt.model_dump()
    checked = 0
    for source, counts in summary["counts"].items():
        n = counts["records"]
        for kind in ("malformed_row", "exact_duplicate", "replayed_event", "late_arrival", "email_case_whitespace"):
            if kind in counts or (kind == "exact_duplicate" and source in DUPLICATED):
                assert _within(counts.get(kind, 0), n, rates[kind]), (source, kind, counts.get(kind, 0), n)
                checked += 1
    assert checked >= 15


def test_contact_and_order_dirt_rates_match_configuration(sample) -> None:
    _, summary = sample
    rates, counts = summary["dirt_rates"], summary["counts"]
    contacts = counts["contacts"]
    first_versions = contacts["records"] - contacts["duplicate_contact"]   # the ones blank_one applies to
    assert _within(contacts["name_typo"], 2 * contacts["records"], rates["name_typo"])    # first and last name
    assert _within(contacts["moved_address"], PEOPLE, rates["moved_address"])
    assert _within(contacts["missing_field"], first_versions, rates["missing_field"])
    assert _within(counts["orders"]["missing_field"], counts["orders"]["records"], rates["missing_field"])
    transactions = counts["orders"]["records"] + counts["pos"]["records"]
    outliers = counts["orders"].get("outlier_amount", 0) + counts["pos"].get("outlier_amount", 0)
    assert _within(outliers, transactions, rates["outlier_amount"])


def test_lines_are_written_as_csv_writer_and_json_dumps_write_them() -> None:
    values = ["plain", "", 'say "hi", then go', "tab\tend", "line\nbreak", "back\\slash", "中文，逗号", "O'Brien"]
    for source in (SOURCES["tickets"], SOURCES["events"]):
        columns = source.column_names
        # Each column has every value, in a different order.
        fields = {c: text.strings(values[k:] + values[:k]) for k, c in enumerate(columns)}
        rows = [{c: fields[c][i].as_py() for c in columns} for i in range(len(values))]
        if source.format == "csv":
            expected = []
            for row in rows:
                buffer = io.StringIO()
                csv.writer(buffer, lineterminator="\n").writerow([row[c] for c in columns])
                expected.append(buffer.getvalue())
        else:
            expected = [json.dumps({c: row[c] or None for c in columns}, ensure_ascii=False, separators=(",", ":"))
                        + "\n" for row in rows]
        assert text.lines(source, fields).to_pylist() == expected, source.name


def test_every_purchase_lands_once_as_an_order_or_a_store_transaction(sample) -> None:
    out, _ = sample
    landed = Counter(r["person_id"] for p in (out / "truth" / "records").glob("*.csv")
                     for r in csv.DictReader(p.open()) if r["source"] in ("orders", "pos"))
    bought = {p: int(r["n_purchases"]) for p, r in _persons(out).items() if r["n_purchases"] != "0"}
    assert landed == bought


def test_order_values_follow_gamma_gamma_with_the_buyers_rate(sample) -> None:
    """value ~ Gamma(shape spend_p, rate nu): value * nu ~ Gamma(spend_p, 1), of mean and variance spend_p."""
    out, summary = sample
    nu = {p: float(r["nu"]) for p, r in _persons(out).items()}
    truth = {r["record_id"]: r for p in (out / "truth" / "records").glob("*.csv") for r in csv.DictReader(p.open())
             if r["source"] == "orders" and not {"outlier_amount", "malformed_row"} & _defects(r)}
    scaled = {o["order_id"]: sum(line["quantity"] * line["unit_price"] for line in o["lines"])
              * nu[truth[o["order_id"]]["person_id"]]
              for p in (out / "landing" / "orders").rglob("*.jsonl") for o in _parse_lines("orders", p)
              if o["order_id"] in truth}
    p, n = summary["btyd"]["spend_p"], len(scaled)
    mean = sum(scaled.values()) / n
    variance = sum((v - mean) ** 2 for v in scaled.values()) / (n - 1)
    assert n > 500
    assert abs(mean - p) < 4 * math.sqrt(p / n)
    assert abs(variance - p) < 4 * math.sqrt((2 * p**2 + 6 * p) / n)


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


# -- hard cases for identity resolution -------------------------------------------------------------
def _persons(out: Path) -> dict[str, dict]:
    return {r["person_id"]: r for p in sorted((out / "truth" / "persons").glob("*.csv"))
            for r in csv.DictReader(p.open(encoding="utf-8"))}


def _contacts(out: Path) -> list[tuple[dict, dict]]:
    """(truth row, landed row) of every contact that landed intact; malformed ones are left out
    since their fields were broken on purpose."""
    landed = {r["contact_id"]: r for p in sorted((out / "landing" / "contacts").rglob("*.csv"))
              for r in _parse_lines("contacts", p)}
    truth = [r for p in sorted((out / "truth" / "records").glob("*.csv")) for r in csv.DictReader(p.open())
             if r["source"] == "contacts" and "malformed_row" not in r["defects"]]
    return [(t, landed[t["record_id"]]) for t in truth]


def _defects(truth_row: dict) -> set[str]:
    return {d.split(":")[0] for d in truth_row["defects"].split(";") if d}


@pytest.mark.parametrize("which", ["sample", "hard_sample"])
def test_duplicate_contacts_and_swapped_birth_dates_appear_at_their_rates(which: str, request) -> None:
    out, summary = request.getfixturevalue(which)
    rates = summary["dirt_rates"]
    persons = _persons(out)
    duplicates = [(t, r) for t, r in _contacts(out) if "duplicate_contact" in _defects(t)]
    owners = Counter(t["person_id"] for t, _ in duplicates)
    eligible = [p for p in persons.values() if p["is_test"] == "0"]

    assert max(owners.values()) == 1 and all(persons[p]["is_test"] == "0" for p in owners)
    assert _within(len(owners), len(eligible), rates["duplicate_contact"]), (len(owners), len(eligible))
    assert all(r["loyalty_number"] == "" for _, r in duplicates)
    for column, share in (("email", DUPLICATE_EMAIL_BLANK), ("phone", DUPLICATE_PHONE_BLANK),
                          ("birth_date", DUPLICATE_BIRTH_DATE_BLANK)):
        blank = sum(r[column] == "" for _, r in duplicates)
        assert _within(blank, len(duplicates), share), (column, blank, len(duplicates))

    # Day and month are swapped only where that gives another valid date, at the configured share.
    swappable = swapped = 0
    for t, r in duplicates:
        born = persons[t["person_id"]]["birth_date"]
        if r["birth_date"] == "" or swap_day_month(born) is None:
            assert r["birth_date"] in ("", born) and "dob_swapped" not in _defects(t)
            continue
        swappable += 1
        if "dob_swapped" in _defects(t):
            swapped += 1
            assert r["birth_date"] == swap_day_month(born)
        else:
            assert r["birth_date"] == born
    assert _within(swapped, swappable, rates["dob_swapped"]), (swapped, swappable)
    if which == "hard_sample":
        assert swappable >= 30 and swapped > 0


@pytest.mark.parametrize("which", ["sample", "hard_sample"])
def test_duplicate_contacts_never_share_an_email_with_another_person(which: str, request) -> None:
    out, _ = request.getfixturevalue(which)
    persons = _persons(out)
    contacts = _contacts(out)
    owners: dict[str, set[str]] = {}
    for person in persons.values():
        owners.setdefault(person["email"], set()).add(person["person_id"])
    for t, r in contacts:
        if r["email"].strip():
            owners.setdefault(r["email"].strip().lower(), set()).add(t["person_id"])
    second = [(t["person_id"], r["email"].strip().lower()) for t, r in contacts
              if "duplicate_contact" in _defects(t) and r["email"].strip()]

    assert second, "no duplicate contact with an e-mail address"
    for person, email in second:
        assert email != persons[person]["email"], "a duplicate contact reuses the first mailbox"
        assert owners[email] == {person}, f"{email} belongs to {owners[email]}"


@pytest.mark.parametrize("which", ["sample", "hard_sample"])
def test_household_members_are_distinct_people_sharing_family_name_and_postcode(which: str, request) -> None:
    out, summary = request.getfixturevalue(which)
    persons = _persons(out)
    joiners = [p for p in persons.values() if p["household_of"]]
    # Each version of a person's address (first, moved) as it landed, where it was not blanked.
    postcodes: dict[tuple[str, str], set[str]] = {}
    for t, r in _contacts(out):
        defects = _defects(t)
        version = "duplicate" if "duplicate_contact" in defects else "moved" if "moved_address" in defects else "first"
        if r["postcode"]:
            postcodes.setdefault((t["person_id"], version), set()).add(r["postcode"])

    assert _within(len(joiners), len(persons), summary["dirt_rates"]["household_share"]), len(joiners)
    compared = 0
    for person in joiners:
        mate = persons[person["household_of"]]
        assert mate["person_id"] != person["person_id"] and mate["email"] != person["email"]
        assert "0" == person["is_test"] == mate["is_test"]
        assert person["family_name"] == mate["family_name"]
        for version in ("first", "moved"):
            mine, theirs = (postcodes.get((p["person_id"], version)) for p in (person, mate))
            if mine and theirs:
                assert mine == theirs, (person["person_id"], mate["person_id"], version)
                compared += 1
    assert compared >= 0.8 * len(joiners)
