"""Gold customer profile. Walking skeleton: one customer per e-mail key (HMAC of the e-mail).

Records without an e-mail keep a customer of their own (by contact or account) rather than
being dropped, so every silver record belongs to exactly one customer.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.cleanse import first_per_key


def customer_id(identity_key: Column) -> Column:
    """Stable id derived from the identity key (same key, same id, on every run)."""
    return F.concat(F.lit("CU-"), F.substring(F.sha2(identity_key, 256), 1, 16))


def account_emails(orders: DataFrame) -> DataFrame:
    """The e-mail key most often used on each account's orders, for orders that lack one."""
    counts = orders.where(F.col("email_key").isNotNull()).groupBy("account_id", "email_key", "email_masked").count()
    most_used = first_per_key(counts, ["account_id"], [F.col("count").desc(), F.col("email_key")])
    return most_used.select(
        "account_id", F.col("email_key").alias("account_email_key"),
        F.col("email_masked").alias("account_email_masked"))


def build_customer_profile(contacts: DataFrame, orders: DataFrame, as_of: date) -> DataFrame:
    """One row per customer from silver contacts and orders, as of the run's date."""
    orders = orders.where(F.col("order_date") <= F.lit(as_of))
    contacts = contacts.where(F.to_date("created_at") <= F.lit(as_of))
    keyed_contacts = contacts.withColumn(
        "identity_key", F.coalesce("email_key", F.concat(F.lit("contact:"), "contact_id")))
    keyed_orders = orders.join(account_emails(orders), "account_id", "left").withColumn(
        "identity_key", F.coalesce("email_key", "account_email_key", F.concat(F.lit("account:"), "account_id")))

    # Golden attributes: the most recently updated contact (ties broken by contact_id).
    golden = (
        keyed_contacts.groupBy("identity_key")
        .agg(
            F.max_by(F.struct("given_name", "family_name", "email_masked", "phone_masked", "city", "postcode",
                              "email_opt_in"), F.struct(F.col("updated_at"), F.col("contact_id"))).alias("g"),
            F.count("*").cast("int").alias("contact_records"),
            F.min("created_at").alias("first_contact_ts"),
        )
        .select("identity_key", "g.*", "contact_records", "first_contact_ts")
    )
    completed = F.col("status") == "completed"
    activity = keyed_orders.groupBy("identity_key").agg(
        F.countDistinct("account_id").cast("int").alias("accounts"),
        F.min("order_ts").alias("first_order_ts"),
        F.max("order_ts").alias("last_order_ts"),
        F.count(F.when(completed, 1)).alias("order_count"),
        F.sum("net_amount").alias("net_revenue"),
        F.first(F.coalesce("email_masked", "account_email_masked"), ignorenulls=True).alias("order_email_masked"),
    )
    profile = golden.join(activity, "identity_key", "full_outer")
    return profile.select(
        customer_id(F.col("identity_key")).alias("customer_id"),
        "given_name", "family_name",
        F.coalesce("email_masked", "order_email_masked").alias("email_masked"),
        "phone_masked",
        "city", "postcode", "email_opt_in",
        F.coalesce("contact_records", F.lit(0)).alias("contact_records"),
        F.coalesce("accounts", F.lit(0)).alias("accounts"),
        F.least("first_contact_ts", "first_order_ts").alias("first_seen"),
        "first_order_ts", "last_order_ts",
        F.coalesce("order_count", F.lit(0)).alias("order_count"),
        F.round(F.coalesce("net_revenue", F.lit(0.0)), 2).alias("net_revenue"),
        F.lit(as_of).alias("as_of_date"),
    )
