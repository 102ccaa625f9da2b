"""Silver: standardise and conform bronze records. Pure functions over DataFrames."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs import standardise


def is_test_account(email: Column, patterns: list[str]) -> Column:
    flag = F.lit(False)
    for pattern in patterns:
        flag = flag | F.coalesce(email.rlike(pattern), F.lit(False))
    return flag


def latest_per_key(df: DataFrame, key: str, order: list[Column]) -> DataFrame:
    """Keep one row per `key`: the first by `order` (e.g. most recent version first)."""
    w = Window.partitionBy(key).orderBy(*order)
    return df.withColumn("_rank", F.row_number().over(w)).where("_rank = 1").drop("_rank")


def cleanse_contacts(bronze_contacts: DataFrame, default_region: str, test_patterns: list[str]) -> DataFrame:
    """Standardised contacts, latest version per contact_id, test accounts removed."""
    standardised = bronze_contacts.select(
        "contact_id",
        standardise.person_name("first_name").alias("given_name"),
        standardise.person_name("last_name").alias("family_name"),
        standardise.email("email").alias("email"),
        standardise.phone_e164("phone", default_region).alias("phone_e164"),
        standardise.address_tokens("street").alias("street"),
        standardise.person_name("city").alias("city"),
        F.upper(F.regexp_replace("postcode", r"\s+", "")).alias("postcode"),
        F.upper(F.trim("country")).alias("country"),
        "birth_date",
        F.upper(F.substring(F.trim("gender"), 1, 1)).alias("gender"),
        F.upper(F.trim("loyalty_number")).alias("loyalty_number"),
        F.lower(F.trim("signup_channel")).alias("signup_channel"),
        "email_opt_in", "sms_opt_in", "created_at", "updated_at", "_batch_id", "_line_number",
    )
    latest = latest_per_key(standardised, "contact_id",
                            [F.col("updated_at").desc(), F.col("_batch_id").desc(), F.col("_line_number").desc()])
    return latest.where(~is_test_account(F.col("email"), test_patterns)).drop("_line_number")


def cleanse_orders(bronze_orders: DataFrame, test_patterns: list[str]) -> DataFrame:
    """One row per order with gross and net value; cancelled and returned orders net to zero."""
    gross = F.aggregate("lines", F.lit(0.0), lambda acc, line: acc + line.quantity * line.unit_price)
    orders = bronze_orders.select(
        F.trim("order_id").alias("order_id"),
        F.trim("account_id").alias("account_id"),
        standardise.email("email").alias("email"),
        "order_ts",
        F.to_date("order_ts").alias("order_date"),
        F.lower("channel").alias("channel"),
        F.lower("status").alias("status"),
        F.upper("currency").alias("currency"),
        F.size("lines").alias("line_count"),
        F.round(gross, 2).alias("gross_amount"),
        "_batch_id", "_line_number",
    ).withColumn("net_amount", F.when(F.col("status") == "completed", F.col("gross_amount")).otherwise(F.lit(0.0)))
    latest = latest_per_key(orders, "order_id", [F.col("_batch_id").desc(), F.col("_line_number").desc()])
    # An account seen with a test e-mail on any order is a test account on all its orders.
    test_accounts = latest.where(is_test_account(F.col("email"), test_patterns)).select("account_id").distinct()
    return latest.join(test_accounts, "account_id", "left_anti").drop("_line_number")
