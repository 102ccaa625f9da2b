"""Silver: standardise and conform bronze records. Pure functions over DataFrames.

Each `cleanse_*` takes bronze rows (and whatever reference data it needs) and returns silver
rows. Frames that carry contact points also keep the standardised raw values in `_email`,
`_phone`, `_street` for the vault; `conform` drops them before silver is written.
"""

from __future__ import annotations

from functools import partial

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.cleanse import standardise
from jobs.platform import pii
from jobs.platform.quality import non_finite

RAW_CONTACT_POINTS = ("_email", "_phone", "_street")


def is_test_traffic(patterns: list[str]) -> Column:
    """A record of `with_email` whose address, standardised or as given, is a test account's."""
    return is_test_account(F.coalesce(F.col("_email"), F.col("_email_given")), patterns)


def is_test_account(email: Column, patterns: list[str]) -> Column:
    flag = F.lit(False)
    for pattern in patterns:
        flag = flag | F.coalesce(email.rlike(pattern), F.lit(False))
    return flag


def latest_landed() -> list[Column]:
    """Order that puts the latest batch, then the latest line of a file, first."""
    return [F.col("_batch_id").desc(), F.col("_line_number").desc()]


def first_per_key(df: DataFrame, keys: list[str | Column], order: list[Column]) -> DataFrame:
    """Keep one row per key: the first by `order` (e.g. most recent version first)."""
    w = Window.partitionBy(*keys).orderBy(*order)
    return df.withColumn("_rank", F.row_number().over(w)).where("_rank = 1").drop("_rank")


def latest_version(df: DataFrame, *keys: str | Column, order: list[Column] | None = None) -> DataFrame:
    """The copy of a record from the latest batch (then latest line) wins: corrections replace. `_bronze_rows`
    counts the bronze rows (versions) the kept row stands for, so that silver's accounting shows the merged
    ones; `_rejected` starts empty (see `reject`)."""
    counted = df.withColumn("_bronze_rows", F.count(F.lit(1)).over(Window.partitionBy(*keys)))
    return first_per_key(counted, list(keys), order or latest_landed()) \
        .withColumn("_rejected", F.lit(None).cast("string"))


# Reasons a silver rule rejects a record (ops.silver_accounting).
TEST_ACCOUNT = "TEST_ACCOUNT"              # internal or test traffic (cleanse.test_account_email_patterns)
UNKNOWN_SURVEY_TYPE = "UNKNOWN_SURVEY_TYPE"
OUT_OF_RANGE = "OUT_OF_RANGE"              # outside the contract's range, in bronze landed before it had one
INVALID_ITEMS = "INVALID_ITEMS"            # a store purchase's items text with a bad quantity or price
ACCOUNTING_COLUMNS = ("_bronze_rows", "_rejected")


def reject(df: DataFrame, condition: Column, reason: str) -> DataFrame:
    """Mark the rows where `condition` holds as rejected for `reason` (the first reason stays) instead of
    dropping them: the stage publishes the others (`kept`) and accounts for these."""
    return df.withColumn("_rejected", F.coalesce("_rejected", F.when(condition, F.lit(reason))))


def kept(df: DataFrame) -> DataFrame:
    """The rows no silver rule rejected."""
    return df.where(F.col("_rejected").isNull())


def record_key(source: str) -> list[Column]:
    """What a silver table keeps one row per: the record id, or for rates the day and currency."""
    from schemas.raw import SOURCES

    return [F.col("rate_date"), F.upper("currency")] if source == "fx_rates" else [F.col(SOURCES[source].record_id)]


def with_email(df: DataFrame, raw: str, hmac_key: bytes, prefix: str = "",
               local_part: str = standardise.DELIVERABLE_LOCAL_PART) -> DataFrame:
    """Standardise an e-mail column into `_email` (raw, for the vault), `<prefix>email_key`, `<prefix>email_masked`;
    an address outside the `local_part` policy is no address (null)."""
    return (
        standardise.per_distinct(df, raw, partial(standardise.email, local_part=local_part), "_email")
        # As given (trimmed, lower-cased): a test address the policy refuses is still test traffic.
        .withColumn("_email_given", F.lower(F.trim(F.col(raw))))
        .withColumn(f"{prefix}email_key", pii.keyed_hash(F.col("_email"), hmac_key))
        .withColumn(f"{prefix}email_masked", pii.mask_email(F.col("_email")))
    )


def to_reporting(df: DataFrame, amount: str, currency: str, on_date: str, fx_rates: DataFrame,
                 reporting_currency: str, out: str) -> DataFrame:
    """Add `out` = amount in the reporting currency, using the rate of the transaction's day."""
    rates = fx_rates.select(F.col("rate_date").alias("_fx_date"), F.col("currency").alias("_fx_currency"),
                            F.col("rate").alias("_fx_rate"))
    joined = df.join(rates, (F.col(on_date) == F.col("_fx_date")) & (F.col(currency) == F.col("_fx_currency")),
                     "left")
    rate = F.when(F.col(currency) == reporting_currency, F.lit(1.0)).otherwise(F.col("_fx_rate"))
    return joined.withColumn(out, F.round(F.col(amount) * rate, 2)).drop("_fx_date", "_fx_currency", "_fx_rate")


def cleanse_fx_rates(bronze_fx: DataFrame) -> DataFrame:
    latest = latest_version(bronze_fx, *record_key("fx_rates"))
    # Rates are positive by their contract (schemas/raw.py), and bronze quarantines the others since it says so;
    # bronze landed before that may still hold one.
    return reject(latest, ~(F.col("rate") > 0), OUT_OF_RANGE) \
        .select("rate_date", F.upper("currency").alias("currency"), "rate", *ACCOUNTING_COLUMNS)


def cleanse_contacts(bronze_contacts: DataFrame, default_region: str, test_patterns: list[str],
                     hmac_key: bytes, local_part: str = standardise.DELIVERABLE_LOCAL_PART) -> DataFrame:
    """Standardised contacts, latest version per contact_id, test accounts removed."""
    latest = latest_version(bronze_contacts, *record_key("contacts"), order=[F.col("updated_at").desc(),
                                                                              *latest_landed()])
    for column, out in (("first_name", "given_name"), ("last_name", "family_name"), ("city", "_city")):
        latest = standardise.per_distinct(latest, column, standardise.person_name, out)
    latest = standardise.per_distinct(latest, "phone", lambda c: standardise.phone_e164(c, default_region), "_phone")
    standardised = with_email(latest, "email", hmac_key, local_part=local_part).select(
        "contact_id", "given_name", "family_name",
        "_email", "_email_given", "email_key", "email_masked", "_phone",
        F.col("street").alias("_street"),
        standardise.address_tokens("street").alias("address_tokens"),
        F.col("_city").alias("city"),
        F.upper(F.regexp_replace("postcode", r"\s+", "")).alias("postcode"),
        F.upper(F.trim("country")).alias("country"),
        "birth_date",
        F.upper(F.substring(F.trim("gender"), 1, 1)).alias("gender"),
        F.upper(F.trim("loyalty_number")).alias("loyalty_number"),
        F.lower(F.trim("signup_channel")).alias("signup_channel"),
        "email_opt_in", "sms_opt_in", "created_at", "updated_at", "_batch_id", *ACCOUNTING_COLUMNS,
    )
    return (
        reject(standardised, is_test_traffic(test_patterns), TEST_ACCOUNT)
        .withColumn("phone_key", pii.keyed_hash(F.col("_phone"), hmac_key))
        .withColumn("phone_masked", pii.mask_phone(F.col("_phone")))
    )


def test_loyalty_numbers(bronze_contacts: DataFrame, test_patterns: list[str]) -> DataFrame:
    """Loyalty numbers of internal test contacts, to drop their store purchases."""
    return (
        bronze_contacts.where(is_test_account(F.lower(F.trim("email")), test_patterns))
        .select(F.upper(F.trim("loyalty_number")).alias("loyalty_number"))
        .where(F.col("loyalty_number").isNotNull()).distinct()
    )


def cleanse_orders(bronze_orders: DataFrame, test_patterns: list[str], hmac_key: bytes, fx_rates: DataFrame,
                   reporting_currency: str, local_part: str = standardise.DELIVERABLE_LOCAL_PART) -> DataFrame:
    """One row per order with gross and net value; cancelled and returned orders net to zero."""
    gross = F.aggregate("lines", F.lit(0.0), lambda acc, line: acc + line.quantity * line.unit_price)
    orders = with_email(latest_version(bronze_orders, *record_key("orders")), "email", hmac_key,
                        local_part=local_part).select(
        F.trim("order_id").alias("order_id"),
        F.trim("account_id").alias("account_id"),
        "_email", "email_key", "email_masked",
        "order_ts",
        F.to_date("order_ts").alias("order_date"),
        F.lower("channel").alias("channel"),
        F.lower("status").alias("status"),
        F.upper("currency").alias("currency"),
        F.size("lines").alias("line_count"),
        F.round(gross, 2).alias("gross_amount"),
        "_batch_id", *ACCOUNTING_COLUMNS,
    ).withColumn("net_amount", F.when(F.col("status") == "completed", F.col("gross_amount")).otherwise(F.lit(0.0)))
    flagged = reject(_flag_members(orders, test_accounts(bronze_orders, test_patterns), "account_id"),
                     F.col("_member"), TEST_ACCOUNT).drop("_member")
    return to_reporting(flagged, "net_amount", "currency", "order_date", fx_rates, reporting_currency,
                        "net_amount_reporting")


def _flag_members(df: DataFrame, members: DataFrame, key: str) -> DataFrame:
    """`df` with `_member`: whether its `key` is among `members`' (distinct) keys."""
    return df.join(members.select(key).distinct().withColumn("_member", F.lit(True)), key, "left") \
        .withColumn("_member", F.coalesce("_member", F.lit(False)))


def test_accounts(bronze_orders: DataFrame, test_patterns: list[str]) -> DataFrame:
    """Accounts seen with a test e-mail on any order: all their orders and events are test traffic."""
    return (
        bronze_orders.where(is_test_account(F.lower(F.trim("email")), test_patterns))
        .select(F.trim("account_id").alias("account_id")).distinct()
    )


def parse_pos_items(items: Column) -> Column:
    """'sku:category:qty:price|…' -> array<struct<sku, category, quantity, unit_price>>."""
    parts = F.transform(F.split(items, r"\|"), lambda item: F.split(item, ":"))
    return F.transform(parts, lambda p: F.struct(
        p[0].alias("sku"), p[1].alias("category"), p[2].try_cast("int").alias("quantity"),
        p[3].try_cast("double").alias("unit_price")))


def cleanse_pos(bronze_pos: DataFrame, source_timezone: str, test_loyalty: DataFrame, fx_rates: DataFrame,
                reporting_currency: str) -> DataFrame:
    """Store transactions in UTC and the reporting currency, with parsed items."""
    pos = latest_version(bronze_pos, *record_key("pos")).select(
        "transaction_id", "store_id",
        F.when(F.trim("loyalty_number") != "", F.upper(F.trim("loyalty_number"))).alias("loyalty_number"),
        F.to_utc_timestamp(F.col("local_ts").cast("timestamp"), source_timezone).alias("txn_ts"),
        F.upper("currency").alias("currency"), "amount", parse_pos_items(F.col("items")).alias("items"),
        "_batch_id", *ACCOUNTING_COLUMNS,
    ).withColumn("txn_date", F.to_date("txn_ts")).withColumn("line_count", F.size("items"))
    pos = reject(_flag_members(pos, test_loyalty, "loyalty_number"), F.col("_member"), TEST_ACCOUNT).drop("_member")
    # `items` is text to the contract: its quantities and prices are checked once parsed.
    bad_item = F.exists("items", lambda i: F.coalesce(
        (i.quantity < 1) | (i.unit_price < 0) | non_finite(i.unit_price),
        F.lit(True)))
    pos = reject(pos, bad_item, INVALID_ITEMS)
    return to_reporting(pos, "amount", "currency", "txn_date", fx_rates, reporting_currency, "amount_reporting")


def order_lines(orders: DataFrame, bronze_orders: DataFrame, pos: DataFrame, fx_rates: DataFrame,
                reporting_currency: str) -> DataFrame:
    """Line items of kept orders and store transactions, valued in the reporting currency."""
    line_cols = ["line_no", "line.sku", "line.category", "line.quantity", "line.unit_price"]
    online = (
        latest_version(bronze_orders, *record_key("orders"))
        .select("order_id", F.posexplode("lines").alias("line_no", "line"))
        .join(orders.select("order_id", "status", "currency", F.col("order_date").alias("day")), "order_id")
        .select(F.lit("orders").alias("source"), F.col("order_id").alias("transaction_id"), *line_cols,
                "currency", "day", (F.col("status") == "completed").alias("is_net"))
    )
    store = pos.select("transaction_id", "currency", F.col("txn_date").alias("day"),
                       F.posexplode("items").alias("line_no", "line")) \
        .select(F.lit("pos").alias("source"), "transaction_id", *line_cols, "currency", "day",
                F.lit(True).alias("is_net"))
    lines = online.unionByName(store).withColumn("line_no", F.col("line_no") + 1) \
        .withColumn("line_amount", F.col("quantity") * F.col("unit_price"))
    return to_reporting(lines, "line_amount", "currency", "day", fx_rates, reporting_currency,
                        "line_amount_reporting")


def cleanse_events(bronze_events: DataFrame, test_accounts_df: DataFrame, session_gap_minutes: int) -> DataFrame:
    """Events without replays, the user attached from the device's login onward, sessions derived."""
    events = latest_version(bronze_events, *record_key("events")).select(
        "event_id", "device_id", F.when(F.trim("user_id") != "", F.trim("user_id")).alias("user_id"),
        F.lower("event_type").alias("event_type"), "event_ts", F.lower("platform").alias("platform"),
        F.when(F.trim("sku") != "", F.col("sku")).alias("sku"),
        F.when(F.trim("order_id") != "", F.col("order_id")).alias("order_id"), "_batch_id", *ACCOUNTING_COLUMNS,
    )
    test_devices = events.join(test_accounts_df.withColumnRenamed("account_id", "user_id"), "user_id") \
        .select("device_id")
    # A test device's events are rejected whole; its sessions are its own, so the others' are unchanged.
    events = reject(_flag_members(events, test_devices, "device_id"), F.col("_member"), TEST_ACCOUNT).drop("_member")
    device_order = Window.partitionBy("device_id").orderBy("event_ts", "event_id")
    so_far = device_order.rowsBetween(Window.unboundedPreceding, 0)
    login_user = F.last(F.when(F.col("event_type") == "login", F.col("user_id")), ignorenulls=True).over(so_far)
    gap = F.col("event_ts").cast("long") - F.lag(F.col("event_ts").cast("long")).over(device_order)
    new_session = F.when(gap.isNull() | (gap > session_gap_minutes * 60), 1).otherwise(0)
    return (
        events.withColumn("user_id", F.coalesce("user_id", login_user))
        .withColumn("_new_session", new_session)
        .withColumn("_session_no", F.sum("_new_session").over(so_far))
        .withColumn("session_id", F.substring(F.sha2(F.concat_ws("|", "device_id", "_session_no"), 256), 1, 20))
        .withColumn("event_date", F.to_date("event_ts"))
        .drop("_new_session", "_session_no")
    )


def cleanse_tickets(bronze_tickets: DataFrame, test_patterns: list[str], hmac_key: bytes,
                    local_part: str = standardise.DELIVERABLE_LOCAL_PART) -> DataFrame:
    minutes = lambda a, b: (F.col(b).cast("double") - F.col(a).cast("double")) / 60.0  # noqa: E731
    tickets = with_email(latest_version(bronze_tickets, *record_key("tickets")), "email", hmac_key,
                         local_part=local_part)
    return reject(tickets, is_test_traffic(test_patterns), TEST_ACCOUNT).select(
        "ticket_id", "_email", "email_key", "email_masked",
        F.when(F.trim("account_id") != "", F.trim("account_id")).alias("account_id"),
        F.lower("channel").alias("channel"), F.lower("category").alias("category"),
        F.lower("priority").alias("priority"), "created_at", "first_response_at", "resolved_at",
        F.round(minutes("created_at", "first_response_at"), 1).alias("first_response_minutes"),
        F.round(minutes("created_at", "resolved_at") / 60.0, 2).alias("resolution_hours"),
        "text", "_batch_id", *ACCOUNTING_COLUMNS,
    )


def cleanse_surveys(bronze_surveys: DataFrame, test_patterns: list[str], hmac_key: bytes,
                    local_part: str = standardise.DELIVERABLE_LOCAL_PART) -> DataFrame:
    """Responses of a known survey type (NPS, CSAT); NPS responses get their category. Scores are in their
    type's range by the contract (schemas/raw.py): bronze has quarantined the others."""
    surveys = with_email(latest_version(bronze_surveys, *record_key("surveys")), "email", hmac_key,
                         local_part=local_part).withColumn("survey_type", F.upper(F.trim("survey_type")))
    surveys = reject(surveys, ~F.col("survey_type").isin("NPS", "CSAT"), UNKNOWN_SURVEY_TYPE)
    # In range by the contract; bronze landed before the contract said so may still hold a score outside.
    in_range = ((F.col("survey_type") == "NPS") & F.col("score").between(0, 10)) | (
        (F.col("survey_type") == "CSAT") & F.col("score").between(1, 5))
    surveys = reject(surveys, ~in_range, OUT_OF_RANGE)
    category = (F.when(F.col("survey_type") != "NPS", F.lit(None))
                .when(F.col("score") >= 9, "promoter").when(F.col("score") >= 7, "passive").otherwise("detractor"))
    return reject(surveys, is_test_traffic(test_patterns), TEST_ACCOUNT).select(
        "response_id", "_email", "email_key", "email_masked", "survey_type", "score",
        category.alias("nps_category"), F.when(F.trim("comment") != "", F.trim("comment")).alias("comment"),
        "responded_at", "_batch_id", *ACCOUNTING_COLUMNS,
    )


def cleanse_campaign_events(bronze_campaign: DataFrame, test_patterns: list[str], hmac_key: bytes,
                            local_part: str = standardise.DELIVERABLE_LOCAL_PART) -> DataFrame:
    events = with_email(latest_version(bronze_campaign, *record_key("campaign_events")), "email", hmac_key,
                        local_part=local_part)
    return reject(events, is_test_traffic(test_patterns), TEST_ACCOUNT).select(
        "interaction_id", "campaign_id", "_email", "email_key", "email_masked",
        F.lower("event_type").alias("event_type"), "event_ts", "_batch_id", *ACCOUNTING_COLUMNS,
    )


def cleanse_marketing_spend(bronze_spend: DataFrame, fx_rates: DataFrame, reporting_currency: str) -> DataFrame:
    spend = latest_version(bronze_spend, *record_key("marketing_spend")).select(
        "spend_id", "spend_date", F.lower("channel").alias("channel"), F.upper("currency").alias("currency"),
        "amount", "_batch_id", *ACCOUNTING_COLUMNS)
    return to_reporting(spend, "amount", "currency", "spend_date", fx_rates, reporting_currency, "amount_reporting")


def cleanse_referrals(bronze_referrals: DataFrame, test_patterns: list[str], hmac_key: bytes,
                      local_part: str = standardise.DELIVERABLE_LOCAL_PART) -> DataFrame:
    referrals = with_email(latest_version(bronze_referrals, *record_key("referrals")), "referred_email", hmac_key,
                           prefix="referred_", local_part=local_part)
    return reject(referrals, is_test_traffic(test_patterns), TEST_ACCOUNT).select(
        "referral_id", F.upper(F.trim("referrer_loyalty_number")).alias("referrer_loyalty_number"), "_email",
        "referred_email_key", "referred_email_masked", "referred_at", "_batch_id", *ACCOUNTING_COLUMNS,
    )


def pii_vault(contacts: DataFrame, others_with_email: list[DataFrame], encryption_key: bytes,
              hmac_key: bytes) -> DataFrame:
    """Encrypted raw contact points: one row per contact, and one per distinct e-mail seen elsewhere."""
    def enc(col: str, source: str, record: str, field: str) -> Column:
        context = F.concat_ws("|", F.lit(source), F.col(record), F.lit(field))
        return pii.encrypt(F.col(col), context, encryption_key)

    by_contact = contacts.select(
        F.lit("contacts").alias("source"), F.col("contact_id").alias("record_id"), "email_key", "phone_key",
        enc("_email", "contacts", "contact_id", "email").alias("email_enc"),
        enc("_phone", "contacts", "contact_id", "phone").alias("phone_enc"),
        enc("_street", "contacts", "contact_id", "street").alias("street_enc"), "_batch_id",
    )
    emails = None
    for frame in others_with_email:
        part = frame.where(F.col("_email").isNotNull()).select("_email", "_batch_id")
        emails = part if emails is None else emails.unionByName(part)
    if emails is None:
        return by_contact
    directory = emails.groupBy("_email").agg(F.min("_batch_id").alias("_batch_id")) \
        .withColumn("record_id", pii.keyed_hash(F.col("_email"), hmac_key))
    by_email = directory.select(
        F.lit("email").alias("source"), "record_id", F.col("record_id").alias("email_key"),
        F.lit(None).cast("string").alias("phone_key"),
        enc("_email", "email", "record_id", "email").alias("email_enc"),
        F.lit(None).cast("binary").alias("phone_enc"), F.lit(None).cast("binary").alias("street_enc"), "_batch_id",
    )
    return by_contact.unionByName(by_email)
