"""`cdp generate`: a seeded, multi-channel customer population with ground truth.

Work is split into chunks of customers; each chunk draws its people from its own random stream
(seed, chunk), each source's records from one of its own (seed, chunk, source), and writes its
own files, so memory stays bounded by the chunk size, chunks can run in parallel, and the same
seed gives byte-identical files. Within a chunk everything is column-wise: numpy arrays for the
draws, Arrow string arrays for the text (text.py), per-record Python only for the rare typos
and broken lines.

Layout written:
  landing/<source>/<batch date>/part-<chunk>.<csv|jsonl>   what the pipeline ingests
  truth/records/part-<chunk>.csv    source, record_id, person_id, defects, batch
  truth/persons/part-<chunk>.csv    true attributes and behaviour of each person (household_of: the
                                    housemate whose family name and address they share)
  truth/params.json                 generating parameters and dirt actually applied
The pipeline never reads truth/.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from jobs.platform.settings import GeneratorConfig
from jobs.tools.generate import text
from jobs.tools.generate.commerce import events, transactions
from jobs.tools.generate.landing import DUPLICATED, LATE, REPLAYED, Landed, Records, land, write_files
from jobs.tools.generate.population import (
    CITIES,
    SIGNUP_CHANNELS,
    Population,
    Purchases,
    draw_population,
    simulate_purchases,
)
from jobs.tools.generate.sources import ChunkBuilder
from jobs.tools.generate.text import Clock
from schemas.raw import SOURCES

__all__ = ["DUPLICATED", "LATE", "REPLAYED", "GeneratorPlan", "generate", "generate_chunk"]
SPEND_CHANNELS = {"search": 900.0, "social": 600.0, "email": 150.0, "display": 350.0}
PERSON_COLUMNS = ["person_id", "given_name", "family_name", "email", "phone_e164", "birth_date", "gender", "city",
                  "region", "signup_channel", "email_opt_in", "is_test", "is_prospect", "first_seen", "lam", "p_drop",
                  "nu", "n_purchases", "last_purchase", "alive", "dropout_date", "referred_by", "household_of"]


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

    @property
    def batch_dates(self) -> list[str]:
        """History lands as one batch dated the day before the daily batches begin, then a batch a day."""
        first = self.history_days - self.gen.daily_batches - 1
        return [(self.start + timedelta(days=day)).strftime("%Y-%m-%d") for day in range(first, self.history_days)]

    def batch_of(self, days: np.ndarray) -> np.ndarray:
        """The batch (index into batch_dates) each of `days` lands in; later than history is the last day."""
        first = self.history_days - self.gen.daily_batches - 1
        return np.clip(np.floor(days).astype(np.int64), first, self.history_days - 1) - first


def eur_usd_rates(seed: int, days: int) -> np.ndarray:
    """USD per EUR for each day of history: a seeded random walk around 1.08."""
    rng = np.random.default_rng([seed, 10**6])
    return np.round(1.08 * np.exp(np.cumsum(rng.normal(0, 0.003, days))), 4)


def campaign_days(history_days: int) -> list[int]:
    return list(range(14, history_days, 28))


def _land(plan: GeneratorPlan, builder: ChunkBuilder, name: str, recs: Records, **options: Any) -> Landed:
    source = SOURCES[name]
    landed = land(builder.stream("landing", list(SOURCES).index(name)), source, recs, plan.gen.dirt,
                  plan.batch_of, plan.batch_dates, builder.pop.person_id, **options)
    write_files(plan.landing / name, f"part-{builder.chunk:05d}.{'jsonl' if source.format == 'jsonl' else 'csv'}",
                landed.files)
    return landed


def generate_chunk(plan: GeneratorPlan, chunk: int) -> dict[str, Counter]:
    """Generate and write one chunk; returns per-source counts of records and of each defect."""
    rng = np.random.default_rng([plan.seed, chunk])
    first = chunk * plan.chunk_size
    n = min(plan.chunk_size, plan.customers - first)
    end = np.datetime64(plan.end_date.isoformat())
    pop = draw_population(rng, first, n, plan.gen, plan.history_days, end)
    purchases = simulate_purchases(rng, pop, plan.history_days)
    clock = Clock(plan.start)
    builder = ChunkBuilder(plan.seed, chunk, pop, purchases, plan.history_days, clock, plan.gen.dirt,
                           eur_usd_rates(plan.seed, plan.history_days), plan.gen.btyd.spend_p)
    # Every source has its own random streams: contacts_only writes the very contacts of a full run.
    landed = {"contacts": _land(plan, builder, "contacts", builder.contacts())}
    referrals, referred = builder.referrals()
    if not plan.contacts_only:
        orders, pos = transactions(builder)
        landed["orders"] = _land(plan, builder, "orders", orders, raw_json=frozenset({"lines"}))
        landed["pos"] = _land(plan, builder, "pos", pos)
        landed["events"] = _land(plan, builder, "events", events(builder, orders))
        landed["tickets"] = _land(plan, builder, "tickets", builder.tickets())
        landed["surveys"] = _land(plan, builder, "surveys", builder.surveys())
        landed["campaign_events"] = _land(plan, builder, "campaign_events",
                                          builder.campaign_events(campaign_days(plan.history_days)))
        landed["referrals"] = _land(plan, builder, "referrals", referrals)
    truth = plan.truth / "records" / f"part-{chunk:05d}.csv"
    truth.parent.mkdir(parents=True, exist_ok=True)
    truth.write_bytes(text.body(pa.concat_arrays([part.truth for part in landed.values()]),
                                "source,record_id,person_id,defects,batch"))
    referrer = np.full(n, -1)
    referrer[referred] = referrals.person
    persons = plan.truth / "persons" / f"part-{chunk:05d}.csv"
    persons.parent.mkdir(parents=True, exist_ok=True)
    persons.write_bytes(text.body(_person_lines(pop, purchases, clock, referrer), ",".join(PERSON_COLUMNS)))
    return {name: part.counts for name, part in landed.items()}


def _person_lines(pop: Population, purchases: Purchases, clock: Clock, referrer: np.ndarray) -> pa.StringArray:
    """The true attributes and behaviour of each person, as truth/persons lines."""
    n = len(pop)

    def person_or_blank(index: np.ndarray) -> pa.StringArray:
        return text.where(index >= 0, pop.person_id.take(pa.array(np.maximum(index, 0))), "")

    def day_or_blank(days: np.ndarray) -> pa.StringArray:
        known = np.isfinite(days)
        return text.where(known, clock.iso(np.where(known, days, 0)), "")

    def flag(values: np.ndarray) -> pa.StringArray:
        return text.number(values.astype(np.int64))

    return text.csv_lines([
        pop.person_id, pop.given_name, pop.family_name, pop.email, text.concat("+1", pop.phone_digits),
        text.dates(pop.birth_date), pop.gender, text.pick([c[0] for c in CITIES], pop.city_index),
        text.pick([c[1] for c in CITIES], pop.city_index), text.pick(SIGNUP_CHANNELS, pop.signup_channel),
        flag(pop.email_opt_in), flag(pop.is_test), flag(pop.is_prospect), clock.iso(pop.first_seen),
        text.fixed(pop.lam, 6), text.fixed(pop.p_drop, 6), text.fixed(pop.nu, 6), text.number(purchases.count(n)),
        day_or_blank(purchases.last_day(n)), flag(purchases.alive), day_or_blank(purchases.dropout_day),
        person_or_blank(referrer), person_or_blank(pop.household_of),
    ])


def _write_global_sources(plan: GeneratorPlan) -> None:
    """Sources that do not belong to a chunk of people: exchange rates and marketing spend."""
    rng = np.random.default_rng([plan.seed, 10**6 + 1])
    clock = Clock(plan.start)
    days = np.arange(plan.history_days, dtype=np.float64)
    dates = clock.date(days)
    fx = {"rate_id": text.concat("FX-", dates, "-EUR"), "rate_date": dates,
          "currency": text.constant("EUR", len(days)), "rate": text.fixed(eur_usd_rates(plan.seed, len(days)), 4)}
    spend_days = np.repeat(days, len(SPEND_CHANNELS))
    base = np.tile(list(SPEND_CHANNELS.values()), len(days))
    spend = {"spend_id": text.new_ids(rng, "SP", len(spend_days)), "spend_date": clock.date(spend_days),
             "channel": text.pick(list(SPEND_CHANNELS), np.tile(np.arange(len(SPEND_CHANNELS)), len(days))),
             "currency": text.constant("USD", len(spend_days)),
             "amount": text.money(base * rng.lognormal(0, 0.25, len(spend_days)))}
    for name, fields, day in (("fx_rates", fx, days), ("marketing_spend", spend, spend_days)):
        source = SOURCES[name]
        lines = text.lines(source, fields)
        batch = plan.batch_of(day)
        write_files(plan.landing / name, "part-00000.csv", {
            plan.batch_dates[b]: text.body(lines.filter(pa.array(batch == b)), ",".join(source.column_names))
            for b in np.unique(batch)})


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
