"""silver.events brought up to date from the last day's (jobs/cleanse/incremental.py): the MERGE and the
accounting it gives must be those of deriving the day whole, on a day that continues a session across
midnight, replays an event with a correction, lands a late file of an earlier batch, and makes a known
account a test account."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from pyspark.sql import DataFrame, SparkSession

from jobs.cleanse import incremental, sources
from jobs.cleanse.accounting import outcomes, silver_accounting
from jobs.cleanse.sources import cleanse_events, kept
from schemas import silver
from schemas.raw import EVENTS, ORDERS

PATTERNS = [r"@cdp-internal\.test$"]
GAP = 30
DAY1, DAY2 = "2026-11-18", "2026-11-19"
LOADED1, LOADED2 = datetime(2026, 11, 18, 6), datetime(2026, 11, 19, 6)


def _events(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    schema = ", ".join(f"{c.name} {c.type}" for c in EVENTS.columns) \
        + ", _batch_id string, _line_number long, _ingested_at timestamp"
    return spark.createDataFrame(rows, schema)


def _orders(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    schema = ", ".join(f"{c.name} {c.type}" for c in ORDERS.columns) \
        + ", _batch_id string, _line_number long, _ingested_at timestamp"
    return spark.createDataFrame(rows, schema)


def _event(event_id: str, device: str, user: str | None, kind: str, ts: datetime, batch: str, line: int,
           loaded: datetime) -> tuple:
    return (event_id, device, user, None, kind, ts, "web", None, None, batch, line, loaded)


def _order(order_id: str, account: str, email: str, batch: str, line: int, loaded: datetime) -> tuple:
    return (order_id, account, email, datetime(2026, 11, 1), "web", "USD", "completed", "1", [], batch, line, loaded)


def _merged(published: DataFrame, upserts: DataFrame, deletes: DataFrame) -> DataFrame:
    """What the Delta MERGE leaves: the published rows not upserted or deleted, and the upserts."""
    touched = upserts.select("event_id").unionByName(deletes.select("event_id"))
    return published.join(touched, "event_id", "left_anti").unionByName(upserts.select(*published.columns))


def _rows(df: DataFrame) -> list[tuple]:
    return sorted(tuple(r) for r in df.select(*silver.EVENTS.column_names).collect())


def test_a_day_merged_into_silver_events_is_the_day_derived_whole(spark: SparkSession) -> None:
    t = datetime(2026, 11, 18, 23, 50)
    day1 = [
        _event("e11", "d1", None, "view", t - timedelta(minutes=5), DAY1, 1, LOADED1),
        _event("e12", "d1", "u1", "login", t, DAY1, 2, LOADED1),
        _event("e21", "d2", "u2", "login", t, DAY1, 3, LOADED1),          # d2: nothing new
        _event("e31", "d3", "u3", "login", t, DAY1, 4, LOADED1),          # u3 turns out a test account
        _event("e32", "d3", None, "view", t + timedelta(minutes=1), DAY1, 5, LOADED1),
        _event("e41", "d4", None, "view", t, DAY1, 6, LOADED1),           # corrected on day two
    ]
    day2 = [
        _event("e13", "d1", None, "view", t + timedelta(minutes=20), DAY2, 1, LOADED2),   # same session
        _event("e14", "d1", None, "view", t + timedelta(hours=2), DAY2, 2, LOADED2),      # a new session
        _event("e41", "d4", None, "add_to_cart", t, DAY2, 3, LOADED2),                   # a new version
        _event("e41", "d4", None, "add_to_cart", t, DAY2, 4, LOADED2),                   # and its replay
        _event("e51", "d5", "u5", "login", t, DAY1, 9, LOADED2),          # a late file of the first batch
    ]
    orders1 = [_order("o1", "u1", "one@example.com", DAY1, 1, LOADED1)]
    orders2 = [_order("o3", "u3", "qa@cdp-internal.test", DAY2, 1, LOADED2)]
    bronze1, bronze2 = _events(spark, day1), _events(spark, day1 + day2)
    tests1, tests2 = sources.test_accounts(_orders(spark, orders1), PATTERNS), sources.test_accounts(
        _orders(spark, orders1 + orders2), PATTERNS)

    whole1, whole2 = cleanse_events(bronze1, tests1, GAP), cleanse_events(bronze2, tests2, GAP)
    published = kept(whole1).select(*silver.EVENTS.column_names).cache()
    last_day = silver_accounting({"events": bronze1}, {"events": ("silver.events", outcomes(whole1))},
                                 date(2026, 11, 18), "run-1").cache()
    [last] = last_day.collect()
    assert last.loaded_through == LOADED1

    new = incremental.is_new(DAY1, last.loaded_through)
    assert sorted(r.event_id for r in bronze2.where(new).collect()) == ["e13", "e14", "e41", "e41", "e51"]
    devices = incremental.devices_to_derive(bronze2, bronze2.where(new), published, tests2)
    assert sorted(r.device_id for r in devices.collect()) == ["d1", "d3", "d4", "d5"]   # not d2

    now = cleanse_events(incremental.of_devices(bronze2, devices), tests2, GAP)
    before = cleanse_events(incremental.of_devices(bronze2.where(~new), devices), tests1, GAP)
    published_here = incremental.of_devices(published, devices)
    # The premise the stage checks: those devices derived as then are what was published of them.
    assert _rows(kept(before)) == _rows(published_here)

    upserts, deletes = incremental.event_changes(kept(now), published_here)
    assert sorted(r.event_id for r in upserts.collect()) == ["e13", "e14", "e41", "e51"]   # e11, e12 unchanged
    assert sorted(r.event_id for r in deletes.collect()) == ["e31", "e32"]                 # d3 is a test device
    assert _rows(_merged(published, upserts, deletes)) == _rows(kept(whole2))
    sessions = {r.event_id: r.session_id for r in kept(whole2).collect()}
    assert sessions["e13"] == sessions["e12"] != sessions["e14"]

    # The accounting: the last day's, less the devices as they were, plus the devices now = the whole day's.
    day = incremental.day_outcomes(incremental.accounted_outcomes(last_day), outcomes(before), outcomes(now))
    [by_day] = silver_accounting({"events": bronze2}, {"events": ("silver.events", day)},
                                 date(2026, 11, 19), "run-2").collect()
    [whole] = silver_accounting({"events": bronze2}, {"events": ("silver.events", outcomes(whole2))},
                                date(2026, 11, 19), "run-2").collect()
    assert by_day == whole
    assert (by_day.bronze_rows, by_day.kept_rows, by_day.merged_rows, by_day.rejected_rows) == (11, 7, 2, 2)
    assert by_day.rejected_reasons == {"TEST_ACCOUNT": 2} and by_day.rows_add_up
    assert by_day.loaded_through == LOADED2


def test_a_moved_event_breaks_the_premise_the_stage_checks(spark: SparkSession) -> None:
    """An event id published on a device the day does not touch, sent again from one it does: deriving only
    the touched devices would keep it twice, so their derivation as of then differs from what was published,
    and the stage derives the day whole."""
    t = datetime(2026, 11, 18, 12)
    day1 = [_event("e1", "d1", None, "view", t, DAY1, 1, LOADED1),
            _event("e1", "d9", None, "view", t, DAY1, 2, LOADED1)]             # e1's later copy: on d9
    day2 = [_event("e2", "d1", None, "view", t + timedelta(minutes=1), DAY2, 1, LOADED2)]
    no_tests = spark.createDataFrame([], "account_id string")
    bronze1, bronze2 = _events(spark, day1), _events(spark, day1 + day2)
    published = kept(cleanse_events(bronze1, no_tests, GAP))
    assert [(r.event_id, r.device_id) for r in published.collect()] == [("e1", "d9")]

    new = incremental.is_new(DAY1, LOADED1)
    devices = incremental.devices_to_derive(bronze2, bronze2.where(new), published, no_tests)
    before = kept(cleanse_events(incremental.of_devices(bronze2.where(~new), devices), no_tests, GAP))
    published_here = incremental.of_devices(published, devices)
    assert (before.count(), published_here.count()) == (1, 0)      # d1's copy of e1 would come back
    assert before.join(published_here, ["event_id", "device_id"], "left_semi").count() == 0
