"""Gold customer profile. Walking skeleton: one customer per standardised e-mail address.

Records without an e-mail keep a customer of their own (by contact or account) rather than
being dropped, so every silver record belongs to exactly one customer.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F


def customer_id(identity_key: Column) -> Column:
    """Stable id derived from the identity key (same key, same id, on every run)."""
    return F.concat(F.lit("CU-"), F.substring(F.sha2(identity_key, 256), 1, 16))


def mask_email(email: Column) -> Column:
    return F.when(email.isNotNull(), F.concat(F.substring(email, 1, 1), F.lit("***@"), F.split(email, "@")[1]))


def mask_phone(phone: Column) -> Column:
    return F.when(phone.isNotNull(), F.concat(F.lit("***"), F.substring(phone, -4, 4)))


def account_emails(orders: DataFrame) -> DataFrame:
    """The e-mail most often used on each account's orders, for orders that lack one."""
    counts = orders.where(F.col("email").isNotNull()).groupBy("account_id", "email").count()
    w = Window.partitionBy("account_id").orderBy(F.col("count").desc(), F.col("email"))
    return counts.withColumn("r", F.row_number().over(w)).where("r = 1").select(
        "account_id", F.col("email").alias("account_email"))


def build_customer_profile(contacts: DataFrame, orders: DataFrame, as_of: date) -> DataFrame:
    """One row per customer from silver contacts and orders, as of the run's date."""
    orders = orders.where(F.col("order_date") <= F.lit(as_of))
    contacts = contacts.where(F.to_date("created_at") <= F.lit(as_of))
    keyed_contacts = contacts.withColumn(
        "identity_key", F.coalesce("email", F.concat(F.lit("contact:"), "contact_id")))
    keyed_orders = orders.join(account_emails(orders), "account_id", "left").withColumn(
        "identity_key", F.coalesce("email", "account_email", F.concat(F.lit("account:"), "account_id")))

    # Golden attributes: the most recently updated contact (ties broken by contact_id).
    golden = (
        keyed_contacts.groupBy("identity_key")
        .agg(
            F.max_by(F.struct("given_name", "family_name", "email", "phone_e164", "city", "postcode",
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
        F.first("email", ignorenulls=True).alias("order_email"),
    )
    profile = golden.join(activity, "identity_key", "full_outer")
    return profile.select(
        customer_id(F.col("identity_key")).alias("customer_id"),
        "given_name", "family_name",
        mask_email(F.coalesce("email", "order_email")).alias("email_masked"),
        mask_phone(F.col("phone_e164")).alias("phone_masked"),
        "city", "postcode", "email_opt_in",
        F.coalesce("contact_records", F.lit(0)).alias("contact_records"),
        F.coalesce("accounts", F.lit(0)).alias("accounts"),
        F.least("first_contact_ts", "first_order_ts").alias("first_seen"),
        "first_order_ts", "last_order_ts",
        F.coalesce("order_count", F.lit(0)).alias("order_count"),
        F.round(F.coalesce("net_revenue", F.lit(0.0)), 2).alias("net_revenue"),
        F.lit(as_of).alias("as_of_date"),
    )
