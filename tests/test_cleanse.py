"""Silver standardisation and the profile's golden-record rules, on tiny frames with known answers."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.cleanse import standardise
from jobs.cleanse.sources import cleanse_orders, kept
from jobs.platform.settings import SurvivorshipConfig
from jobs.profile.customer_profile import Survivorship, age_band, golden_record
from schemas.raw import ORDERS, POS

KEY = b"k" * 32


def hmac_hex(value: str) -> str:
    import hashlib
    import hmac

    return hmac.new(KEY, value.encode(), hashlib.sha256).hexdigest()


def test_standardisers_use_their_libraries(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("  Ann.Lee@Example.COM ", "(212) 555-0100", "  josé  o'brien-SMITH ", "12 Oak Avenue, Apt. 3"),
         ("not-an-email", "+44 20 7946 0958", "ZOË", "1 main street"),
         (None, "12", None, None)],
        "email string, phone string, name string, street string",
    )
    out = df.select(
        standardise.email("email").alias("email"),
        standardise.phone_e164("phone", "US").alias("phone"),
        standardise.person_name("name").alias("name"),
        standardise.address_tokens("street").alias("street"),
    ).collect()

    assert [tuple(r) for r in out] == [
        ("ann.lee@example.com", "+12125550100", "José O'Brien-Smith", "12 OAK AVE APT 3"),
        (None, "+442079460958", "Zoë", "1 MAIN ST"),
        (None, None, None, None),
    ]


def test_addresses_with_an_undeliverable_local_part_are_no_address(spark: SparkSession) -> None:
    # Valid RFC 5322 syntax all of them; only the first three are what mail providers deliver to.
    emails = ["o'brien+news@example.com", "anne-marie.lee_2@example.com", "josé@example.com",
              "=cmd|'/Ccalc'!A0@example.com", "+1@example.com", "-x@example.com", "a|b@example.com",
              "x!y@example.com"]
    df = spark.createDataFrame([(e,) for e in emails], "email string")
    kept = [r.email for r in df.select(standardise.email("email").alias("email")).collect()]
    assert kept == [*emails[:3], None, None, None, None, None]
    # The policy is configurable: RFC 5322's whole atext admits them again.
    anything = r"^[\w!#$%&'*+/=?^`{|}~.-]+$"
    assert df.select(standardise.email("email", anything).alias("e")).where("e IS NULL").count() == 0


def test_standardising_per_distinct_value_keeps_every_row_and_gives_the_row_by_row_result(
    spark: SparkSession
) -> None:
    # Repeats, case variants of one address, invalid values (one repeated), blanks and nulls.
    emails = ["Ann@Example.com", "ann@example.com ", "Ann@Example.com", "not-an-email", "not-an-email", "",
              None, None, "=cmd|' /C calc'!A0", "bob@example.org"]
    df = spark.createDataFrame([(i, e) for i, e in enumerate(emails)], "row long, email string")

    looked_up = standardise.per_distinct(df, "email", standardise.email, "_email")
    row_by_row = df.select("row", standardise.email("email").alias("_email"))

    assert looked_up.columns == ["row", "email", "_email"]
    assert sorted(looked_up.select("row", "_email").collect()) == sorted(row_by_row.collect())
    result = dict(looked_up.select("row", "_email").collect())
    assert len(result) == len(emails)                             # no row lost or doubled by the lookup join
    assert result[0] == result[1] == result[2] == "ann@example.com"
    assert [result[i] for i in (3, 4, 5, 6, 7, 8)] == [None] * 6  # invalid, blank, null: null, never dropped
    assert result[9] == "bob@example.org"


def _bronze_orders(spark: SparkSession, rows: list[tuple]) -> object:
    schema = ", ".join(f"{c.name} {c.type}" for c in ORDERS.columns) + ", _batch_id string, _line_number long"
    return spark.createDataFrame(rows, schema)


def test_orders_net_out_returns_keep_latest_version_and_drop_test_accounts(spark: SparkSession) -> None:
    ts = datetime(2026, 11, 1, 12, 0)
    line = [("S1", "books", 2, 10.0), ("S2", "toys", 1, 5.5)]
    bronze = _bronze_orders(spark, [
        ("o1", "a1", " A@X.com", ts, "web", "USD", "completed", "1", line, "2026-11-01", 1),
        ("o2", "a1", "a@x.com", ts, "WEB", "usd", "returned", "1", line, "2026-11-01", 2),
        ("o3", "a2", "b@y.com", ts, "app", "USD", "completed", "1", line, "2026-11-01", 3),
        ("o3", "a2", "b@y.com", ts, "app", "USD", "cancelled", "1", line, "2026-11-02", 1),  # later version
        ("o4", "a9", "qa+1@cdp-internal.test", ts, "web", "USD", "completed", "1", line, "2026-11-01", 4),
        ("o5", "a9", None, ts, "web", "USD", "completed", "1", line, "2026-11-01", 5),  # same test account
    ])

    fx = spark.createDataFrame([], "rate_date date, currency string, rate double")
    cleansed = cleanse_orders(bronze, [r"@cdp-internal\.test$"], KEY, fx, "USD")
    orders = {r.order_id: r for r in kept(cleansed).collect()}

    assert set(orders) == {"o1", "o2", "o3"}
    # The test account's orders are rejected with their reason; o3's two versions are one record.
    outcome = {r.order_id: (r._rejected, r._bronze_rows) for r in cleansed.collect()}
    assert outcome == {"o1": (None, 1), "o2": (None, 1), "o3": (None, 2), "o4": ("TEST_ACCOUNT", 1),
                       "o5": ("TEST_ACCOUNT", 1)}
    assert (orders["o1"].gross_amount, orders["o1"].net_amount, orders["o1"].net_amount_reporting) == (25.5, 25.5, 25.5)
    assert (orders["o1"].email_key, orders["o1"].email_masked) == (hmac_hex("a@x.com"), "a***@x.com")
    assert (orders["o2"].net_amount, orders["o2"].channel, orders["o2"].currency) == (0.0, "web", "USD")
    assert (orders["o3"].status, orders["o3"].net_amount) == ("cancelled", 0.0)
    assert orders["o1"].order_date == date(2026, 11, 1)


def test_survivorship_rules_pick_the_configured_observation(spark: SparkSession) -> None:
    d = [datetime(2026, 1, day) for day in range(1, 6)]
    observations = spark.createDataFrame([
        ("cu1", "given_name", "Ann", d[0], "contacts"), ("cu1", "given_name", "Anne", d[4], "contacts"),
        ("cu1", "given_name", "Ann", d[2], "contacts"),                      # most frequent: Ann (2 of 3)
        ("cu1", "email", "a***@web.de", d[4], "orders"), ("cu1", "email", "a***@x.com", d[1], "contacts"),
        ("cu1", "address", "Boston", d[1], "contacts"), ("cu1", "address", "Miami", d[3], "contacts"),
        ("cu1", "signup_channel", "store", d[3], "contacts"), ("cu1", "signup_channel", "web", d[0], "contacts"),
        ("cu2", "given_name", "Bo", d[0], "contacts"), ("cu2", "given_name", "Bob", d[1], "contacts"),  # tie
    ], "customer_id string, attribute string, value string, observed_at timestamp, source string")
    survivorship = Survivorship.from_conf(SurvivorshipConfig(
        rules={"given_name": "most_frequent", "email": "most_trusted", "address": "most_recent",
               "signup_channel": "earliest"},
        source_trust=("contacts", "orders")))

    golden = {r.customer_id: r for r in golden_record(observations, survivorship).collect()}

    assert (golden["cu1"].given_name, golden["cu1"].email, golden["cu1"].address, golden["cu1"].signup_channel) == (
        "Ann", "a***@x.com", "Miami", "web")
    assert golden["cu2"].given_name == "Bob"        # equally frequent: the most recent wins
    assert golden["cu2"].email is None


def test_unknown_survivorship_rule_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"rules\.given_name\n  Input should be 'most_recent', 'earliest'"):
        SurvivorshipConfig(rules={"given_name": "longest"}, source_trust=())


def test_age_bands_follow_the_domain_model(spark: SparkSession) -> None:
    ages = spark.createDataFrame([(a,) for a in (17, 18, 30, 31, 50, 51, 90)], "age int")
    assert [r[0] for r in ages.select(age_band(F.col("age"))).collect()] == [
        None, "young", "young", "middle", "middle", "senior", "senior"]


def test_silver_accounting_balances_bronze_and_catches_a_lost_row(spark: SparkSession) -> None:
    from jobs.cleanse.accounting import outcomes, silver_accounting

    # six bronze rows: o1 in two versions, o2 once, o3 in three
    bronze = spark.range(6).select(F.timestamp_seconds(F.col("id") + 1_790_000_001).alias("_ingested_at"))
    cleansed = spark.createDataFrame([("o1", None, 2), ("o2", "TEST_ACCOUNT", 1), ("o3", None, 3)],
                                     "order_id string, _rejected string, _bronze_rows long")
    [row] = silver_accounting({"orders": bronze}, {"orders": ("silver.orders", outcomes(cleansed))},
                              date(2026, 11, 20), "run-1").collect()
    assert (row.bronze_rows, row.kept_rows, row.merged_rows, row.rejected_rows) == (6, 2, 3, 1)
    assert row.loaded_through == datetime.fromtimestamp(1_790_000_006)     # the latest row's _ingested_at
    assert row.rejected_reasons == {"TEST_ACCOUNT": 1} and row.rows_add_up

    # A record lost between the layers (a join that dropped it) breaks the identity.
    lost = cleansed.where("order_id != 'o3'")
    [row] = silver_accounting({"orders": bronze}, {"orders": ("silver.orders", outcomes(lost))},
                              date(2026, 11, 20), "run-1").collect()
    assert not row.rows_add_up and (row.bronze_rows, row.kept_rows + row.merged_rows + row.rejected_rows) == (6, 3)


def test_store_purchases_with_a_bad_item_are_rejected_with_their_reason(spark: SparkSession) -> None:
    from jobs.cleanse.sources import cleanse_pos

    schema = ", ".join(f"{c.name} {c.type}" for c in POS.columns) + ", _batch_id string, _line_number long"
    ts = datetime(2026, 11, 1, 12, 0)
    bronze = spark.createDataFrame([
        ("T1", "S1", "L1", ts, "EUR", 12.0, "SKU-1:books:1:12.00", "2026-11-01", 1),
        ("T2", "S1", "L1", ts, "EUR", 12.0, "SKU-1:books:1:NaN", "2026-11-01", 2),       # not a price
        ("T3", "S1", "L1", ts, "EUR", 12.0, "SKU-1:books:-1:12.00", "2026-11-01", 3),    # a negative quantity
        ("T4", "S1", "L1", ts, "EUR", 12.0, "SKU-1:books:one:12.00", "2026-11-01", 4),   # not a number
        ("T5", "S1", "L9", ts, "EUR", 12.0, "SKU-1:books:1:12.00", "2026-11-01", 5),     # a test loyalty number
    ], schema)
    fx = spark.createDataFrame([(date(2026, 11, 1), "EUR", 1.1)], "rate_date date, currency string, rate double")
    test_loyalty = spark.createDataFrame([("L9",)], "loyalty_number string")

    outcome = {r.transaction_id: r._rejected for r in
               cleanse_pos(bronze, "Europe/Berlin", test_loyalty, fx, "USD").collect()}

    assert outcome == {"T1": None, "T2": "INVALID_ITEMS", "T3": "INVALID_ITEMS", "T4": "INVALID_ITEMS",
                       "T5": "TEST_ACCOUNT"}
