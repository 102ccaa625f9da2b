"""Silver standardisation and the skeleton customer profile, on tiny frames with known answers."""

from __future__ import annotations

from datetime import date, datetime

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs import standardise
from jobs.cleanse import cleanse_orders
from jobs.profile import build_customer_profile
from schemas.raw import ORDERS

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
    orders = {r.order_id: r for r in cleansed.collect()}

    assert set(orders) == {"o1", "o2", "o3"}
    assert (orders["o1"].gross_amount, orders["o1"].net_amount, orders["o1"].net_amount_reporting) == (25.5, 25.5, 25.5)
    assert (orders["o1"].email_key, orders["o1"].email_masked) == (hmac_hex("a@x.com"), "a***@x.com")
    assert (orders["o2"].net_amount, orders["o2"].channel, orders["o2"].currency) == (0.0, "web", "USD")
    assert (orders["o3"].status, orders["o3"].net_amount) == ("cancelled", 0.0)
    assert orders["o1"].order_date == date(2026, 11, 1)


def test_profile_resolves_exact_email_across_contacts_and_orders(spark: SparkSession) -> None:
    t = datetime(2026, 1, 1)
    ann, zed = hmac_hex("ann@x.com"), hmac_hex("zed@x.com")
    contacts = spark.createDataFrame([
        ("c1", "Ann", "Lee", ann, "a***@x.com", "***0100", "NY", "10001", True, t, datetime(2026, 1, 2)),
        ("c2", "Annie", "Lee", ann, "a***@x.com", None, "Boston", "02101", False, t, datetime(2026, 3, 1)),
        ("c3", "Bo", "Chen", None, None, None, "LA", "90001", True, t, t),
    ], "contact_id string, given_name string, family_name string, email_key string, email_masked string, "
       "phone_masked string, city string, postcode string, email_opt_in boolean, created_at timestamp, "
       "updated_at timestamp")
    orders = spark.createDataFrame([
        ("o1", "a1", ann, "a***@x.com", datetime(2026, 2, 1), date(2026, 2, 1), "completed", 30.0),
        ("o2", "a1", None, None, datetime(2026, 2, 5), date(2026, 2, 5), "completed", 20.0),    # account's e-mail
        ("o3", "a7", zed, "z***@x.com", datetime(2026, 2, 6), date(2026, 2, 6), "returned", 0.0),
        ("o4", "a1", ann, "a***@x.com", datetime(2026, 12, 1), date(2026, 12, 1), "completed", 99.0),  # after as-of
    ], "order_id string, account_id string, email_key string, email_masked string, order_ts timestamp, "
       "order_date date, status string, net_amount double")

    profile = build_customer_profile(contacts, orders, date(2026, 11, 20))
    rows = {r.email_masked: r for r in profile.collect()}

    assert profile.count() == 3
    ann = rows["a***@x.com"]
    assert (ann.given_name, ann.city, ann.contact_records, ann.accounts) == ("Annie", "Boston", 2, 1)
    assert (ann.order_count, ann.net_revenue, ann.phone_masked) == (2, 50.0, None)
    assert rows["z***@x.com"].order_count == 0 and rows["z***@x.com"].contact_records == 0
    assert rows[None].given_name == "Bo"
    assert profile.select(F.countDistinct("customer_id")).first()[0] == 3
    again = build_customer_profile(contacts, orders, date(2026, 11, 20))
    assert sorted(r.customer_id for r in again.collect()) == sorted(r.customer_id for r in profile.collect())
