"""`cdp generate`: a seeded, multi-channel customer population with ground truth.

Work is split into chunks of customers; each chunk draws its people and records from its
own random stream (seed, chunk) and writes its own files, so memory stays bounded by the
chunk size, chunks can run in parallel, and the same seed gives byte-identical files.

Layout written:
  landing/<source>/<batch date>/part-<chunk>.<csv|jsonl>   what the pipeline ingests
  truth/records/part-<chunk>.csv    source, record_id, person_id, defects, batch
  truth/persons/part-<chunk>.csv    true attributes and behaviour of each person (household_of: the
                                    housemate whose family name and address they share)
  truth/params.json                 generating parameters and dirt actually applied
The pipeline never reads truth/.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from jobs.platform.settings import GeneratorConfig
from jobs.tools.generate.population import CITIES, draw_population, simulate_purchases
from jobs.tools.generate.sources import ChunkBuilder, Clock, Record, new_id
from schemas.raw import SOURCES, RawSource

DUPLICATED = {"contacts", "orders", "pos", "tickets", "surveys", "referrals"}
REPLAYED = {"events", "campaign_events"}
LATE = {"orders", "pos", "events", "tickets", "surveys", "campaign_events"}
SPEND_CHANNELS = {"search": 900.0, "social": 600.0, "email": 150.0, "display": 350.0}


@dataclass(frozen=True)
class GeneratorPlan:
    """Everything a chunk needs, picklable for worker processes."""

    gen: GeneratorConfig
    seed: int
    customers: int
    landing: Path
    truth: Path
    contacts_only: bool = False   # CRM contacts alone (the same ones a full generation writes), for identity benches

    @property
    def history_days(self) -> int:
        return self.gen.history_days

    @property
    def end_date(self) -> date:
        return self.gen.end_date

    @property
    def start(self) -> datetime:
        first = self.end_date - timedelta(days=self.history_days - 1)
        return datetime(first.year, first.month, first.day, tzinfo=UTC)

    @property
    def chunk_size(self) -> int:
        return self.gen.customers_per_chunk

    @property
    def n_chunks(self) -> int:
        return max(1, -(-self.customers // self.chunk_size))

    def batch_date(self, day: int) -> str:
        """History lands as one batch dated the day before the daily batches begin."""
        daily_from = self.history_days - self.gen.daily_batches
        day = min(max(day, daily_from - 1), self.history_days - 1)
        return (self.start + timedelta(days=day)).strftime("%Y-%m-%d")


def eur_usd_rates(seed: int, days: int) -> np.ndarray:
    """USD per EUR for each day of history: a seeded random walk around 1.08."""
    rng = np.random.default_rng([seed, 10**6])
    return np.round(1.08 * np.exp(np.cumsum(rng.normal(0, 0.003, days))), 4)


def campaign_days(history_days: int) -> list[int]:
    return list(range(14, history_days, 28))


# -- record-level dirt ---------------------------------------------------------------------------
def _malform(rng: np.random.Generator, source: RawSource, line: str, rec: Record) -> tuple[str, str]:
    """Break one serialized record; returns the broken line and the kind of break."""
    kinds = ["wrong_type", "impossible_date", "missing_required"]
    kinds.append("broken_json" if source.format == "jsonl" else "broken_quote")
    kind = kinds[int(rng.integers(0, len(kinds)))]
    if kind == "broken_json":
        return line[: max(5, len(line) // 2)], kind
    if kind == "broken_quote":
        return '"' + line, kind
    broken = dict(rec)
    ts = [c.name for c in source.columns if c.type in ("timestamp", "timestamp_ntz", "date")]
    if kind == "wrong_type":
        # Text where a number, flag or list belongs; a source without such columns gets it in a
        # timestamp (not date-like, so a type mismatch, unlike an impossible date), so every
        # source, events included, plants wrong types at the same share of its broken rows.
        typed = [c.name for c in source.columns if c.type in ("int", "double", "boolean") or c.type.startswith("array")]
        typed = typed or ts
        broken[typed[int(rng.integers(0, len(typed)))]] = "n/a"
    if kind == "impossible_date":
        col = ts[int(rng.integers(0, len(ts)))]
        broken[col] = "2025-02-30" if source.column(col).type == "date" else "2025-02-30T25:61:00Z" \
            if source.column(col).type == "timestamp" else "2025-02-30 25:61:00"
    if kind == "missing_required":
        broken[source.required[int(rng.integers(1, len(source.required))) if len(source.required) > 1 else 0]] = ""
    return _serialize(source, broken), kind


def _serialize(source: RawSource, rec: Record) -> str:
    if source.format == "jsonl":
        return json.dumps({c: (rec.get(c) if rec.get(c) != "" else None) for c in source.column_names},
                          ensure_ascii=False, separators=(",", ":"))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([rec.get(c, "") for c in source.column_names])
    return buf.getvalue()


def _lines_by_batch(plan: GeneratorPlan, rng: np.random.Generator, source: RawSource, records: list[Record],
                    truth: list[list[str]]) -> dict[str, list[str]]:
    """Serialize records into batches, applying duplicates, replays, breaks and late arrival."""
    rates = plan.gen.dirt
    batches: dict[str, list[str]] = {}
    for rec in records:
        day = int(rec["_day"])
        if source.name in LATE and rng.random() < rates.late_arrival:
            day += int(rng.integers(1, 6))
            rec["_defects"].append("late_arrival")
        batch = plan.batch_date(day)
        line = _serialize(source, rec)
        if rng.random() < rates.malformed_row:
            line, kind = _malform(rng, source, line, rec)
            rec["_defects"].append(f"malformed_row:{kind}")
        lines = batches.setdefault(batch, [])
        lines.append(line)
        if source.name in DUPLICATED and rng.random() < rates.exact_duplicate:
            lines.append(line)
            rec["_defects"].append("exact_duplicate")
        if source.name in REPLAYED and rng.random() < rates.replayed_event:
            batches.setdefault(plan.batch_date(day + 1), []).append(line)
            rec["_defects"].append("replayed_event")
        truth.append([source.name, str(rec[source.record_id]), rec["_person"], ";".join(rec["_defects"]), batch])
    return batches


def _write_batches(plan: GeneratorPlan, source: RawSource, chunk: int, batches: dict[str, list[str]]) -> None:
    ext = "jsonl" if source.format == "jsonl" else "csv"
    header = ",".join(source.column_names)
    for batch, lines in sorted(batches.items()):
        folder = plan.landing / source.name / batch
        folder.mkdir(parents=True, exist_ok=True)
        body = "\n".join(([header] if ext == "csv" else []) + lines) + "\n"
        (folder / f"part-{chunk:05d}.{ext}").write_text(body, encoding="utf-8")


def _write_csv(path: Path, header: list[str], rows: Iterable[list[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def generate_chunk(plan: GeneratorPlan, chunk: int) -> dict[str, Counter]:
    """Generate and write one chunk; returns per-source counts of records and of each defect."""
    rng = np.random.default_rng([plan.seed, chunk])
    first = chunk * plan.chunk_size
    n = min(plan.chunk_size, plan.customers - first)
    end = np.datetime64(plan.end_date.isoformat())
    pop = draw_population(rng, first, n, plan.gen, plan.history_days, end)
    purchases, dropout_day, alive = simulate_purchases(rng, pop, plan.history_days)
    clock = Clock(plan.start)
    builder = ChunkBuilder(rng, pop, purchases, plan.history_days, clock, plan.gen.dirt,
                           eur_usd_rates(plan.seed, plan.history_days), plan.gen.btyd.spend_p)
    orders, pos = builder.transactions()
    records = {
        "contacts": builder.contacts(), "orders": orders, "pos": pos, "events": builder.events(orders),
        "tickets": builder.tickets(), "surveys": builder.surveys(),
        "campaign_events": builder.campaign_events(campaign_days(plan.history_days)),
        "referrals": builder.referrals(),
    }
    truth: list[list[str]] = []
    counts: dict[str, Counter] = {}
    # Contacts are batched first from the random stream: contacts_only writes the very contacts of a full run.
    for name, recs in (list(records.items())[:1] if plan.contacts_only else records.items()):
        batches = _lines_by_batch(plan, rng, SOURCES[name], recs, truth)
        _write_batches(plan, SOURCES[name], chunk, batches)
        counts[name] = Counter(d.split(":")[0] for r in recs for d in r["_defects"])
        counts[name]["records"] = len(recs)
    _write_csv(plan.truth / "records" / f"part-{chunk:05d}.csv",
               ["source", "record_id", "person_id", "defects", "batch"], truth)
    referred_by = {r["_referred_person"]: r["_person"] for r in records["referrals"]}
    _write_csv(
        plan.truth / "persons" / f"part-{chunk:05d}.csv",
        ["person_id", "given_name", "family_name", "email", "phone_e164", "birth_date", "gender", "city", "region",
         "signup_channel", "email_opt_in", "is_test", "is_prospect", "first_seen", "lam", "p_drop", "nu",
         "n_purchases", "last_purchase", "alive", "dropout_date", "referred_by", "household_of"],
        (
            [pop.person_id[i], pop.given_name[i], pop.family_name[i], pop.email[i], f"+1{pop.phone_digits[i]}",
             str(pop.birth_date[i]), pop.gender[i], CITIES[pop.city_index[i]][0], CITIES[pop.city_index[i]][1],
             pop.signup_channel[i], int(pop.email_opt_in[i]), int(pop.is_test[i]), int(pop.is_prospect[i]),
             clock.iso(pop.first_seen[i]), f"{pop.lam[i]:.6f}", f"{pop.p_drop[i]:.6f}", f"{pop.nu[i]:.6f}",
             len(purchases[i]), clock.iso(purchases[i][-1]) if len(purchases[i]) else "", int(alive[i]),
             clock.iso(dropout_day[i]) if np.isfinite(dropout_day[i]) else "", referred_by.get(pop.person_id[i], ""),
             pop.person_id[pop.household_of[i]] if pop.household_of[i] >= 0 else ""]
            for i in range(n)
        ),
    )
    return counts


def _write_global_sources(plan: GeneratorPlan) -> None:
    """Sources that do not belong to a chunk of people: exchange rates and marketing spend."""
    rng = np.random.default_rng([plan.seed, 10**6 + 1])
    clock = Clock(plan.start)
    rates = eur_usd_rates(plan.seed, plan.history_days)
    fx: dict[str, list[str]] = {}
    spend: dict[str, list[str]] = {}
    for day in range(plan.history_days):
        batch = plan.batch_date(day)
        fx.setdefault(batch, []).append(_serialize(SOURCES["fx_rates"], {
            "rate_id": f"FX-{clock.date(day)}-EUR", "rate_date": clock.date(day), "currency": "EUR",
            "rate": f"{rates[day]:.4f}"}))
        for channel, base in SPEND_CHANNELS.items():
            spend.setdefault(batch, []).append(_serialize(SOURCES["marketing_spend"], {
                "spend_id": new_id(rng, "SP"), "spend_date": clock.date(day), "channel": channel, "currency": "USD",
                "amount": f"{base * float(rng.lognormal(0, 0.25)):.2f}"}))
    _write_batches(plan, SOURCES["fx_rates"], 0, fx)
    _write_batches(plan, SOURCES["marketing_spend"], 0, spend)


def generate(gen: GeneratorConfig, landing: Path, truth: Path, customers: int | None = None,
             seed: int | None = None, workers: int = 1, contacts_only: bool = False) -> dict[str, Any]:
    """Write a fresh sample dataset (conf `generator`; `customers` and `seed` override its own); returns
    the summary also saved as truth/params.json."""
    plan = GeneratorPlan(gen=gen, seed=gen.seed if seed is None else int(seed),
                         customers=gen.customers if customers is None else int(customers),
                         landing=landing, truth=truth, contacts_only=contacts_only)
    for folder in (landing, truth):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    _write_global_sources(plan)
    chunks = range(plan.n_chunks)
    if workers > 1 and plan.n_chunks > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(generate_chunk, [plan] * plan.n_chunks, chunks))
    else:
        results = [generate_chunk(plan, c) for c in chunks]
    totals: dict[str, Counter] = {}
    for result in results:
        for source, counter in result.items():
            totals.setdefault(source, Counter()).update(counter)
    summary = {
        "seed": plan.seed, "customers": plan.customers, "end_date": plan.end_date.isoformat(),
        "history_days": plan.history_days, "history_start": plan.start.date().isoformat(),
        "btyd": gen.btyd.model_dump(), "dirt_rates": gen.dirt.model_dump(), "prospect_share": gen.prospect_share,
        "test_account_share": gen.test_account_share,
        "counts": {s: dict(sorted(c.items())) for s, c in sorted(totals.items())},
    }
    (truth / "params.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
