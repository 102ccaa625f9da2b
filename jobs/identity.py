"""Identity resolution building blocks: deterministic keys, the record-key graph, components.

Records that share a normalised key (e-mail key, phone key, loyalty number, account id, a
device linked at login) belong to one person. Rather than joining records pairwise (which
grows with the square of a popular key's records), every record is linked to a node per
key it carries; the connected components of that bipartite graph are the persons. The
components are found in Spark by iterated minimum-label propagation, checkpointed each
round, so nothing is collected to the driver.

Not wired into the pipeline yet: the identity issue adds probabilistic matching, the
persistent identity graph with stable ids, and the over-merge guards on top of these.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

KEY_COLUMNS: dict[str, dict[str, str]] = {
    # silver table -> {key type: column}
    "silver.contacts": {"email": "email_key", "phone": "phone_key", "loyalty": "loyalty_number"},
    "silver.orders": {"email": "email_key", "account": "account_id"},
    "silver.pos_transactions": {"loyalty": "loyalty_number"},
    "silver.tickets": {"email": "email_key", "account": "account_id"},
    "silver.surveys": {"email": "email_key"},
    "silver.campaign_events": {"email": "email_key"},
}
RECORD_ID = {
    "silver.contacts": "contact_id", "silver.orders": "order_id", "silver.pos_transactions": "transaction_id",
    "silver.tickets": "ticket_id", "silver.surveys": "response_id", "silver.campaign_events": "interaction_id",
}


def record_keys(table_name: str, df: DataFrame) -> DataFrame:
    """(record, key) pairs of one silver table: record is '<table>:<id>', key is '<type>:<value>'."""
    record = F.concat(F.lit(f"{table_name.split('.')[1]}:"), F.col(RECORD_ID[table_name]))
    pairs = [
        df.select(record.alias("record"), F.concat(F.lit(f"{kind}:"), F.col(column)).alias("key"))
        .where(F.col(column).isNotNull() & (F.trim(F.col(column)) != ""))
        for kind, column in KEY_COLUMNS[table_name].items()
    ]
    result = pairs[0]
    for part in pairs[1:]:
        result = result.unionByName(part)
    return result


def device_account_keys(events: DataFrame) -> DataFrame:
    """Devices that logged in are linked to the account: (record 'device:<id>', key 'account:<id>')."""
    return (
        events.where(F.col("user_id").isNotNull())
        .select(F.concat(F.lit("device:"), "device_id").alias("record"),
                F.concat(F.lit("account:"), "user_id").alias("key"))
        .distinct()
    )


def connected_components(edges: DataFrame, max_rounds: int = 50) -> DataFrame:
    """(node, component) for an undirected graph given as (src, dst) edges; the component is
    the smallest node id in it. Raises if it has not converged after `max_rounds` rounds."""
    reversed_edges = edges.select(F.col("dst").alias("src"), F.col("src").alias("dst"))
    both_ways = edges.select("src", "dst").unionByName(reversed_edges).distinct().localCheckpoint()
    # A node starts as its own component (self-loops included), then takes its neighbours' minimum.
    labels = both_ways.groupBy(F.col("src").alias("node")).agg(
        F.least(F.col("src"), F.min("dst")).alias("component")).localCheckpoint()
    for _ in range(max_rounds):
        # Each node takes the smallest component among itself and its neighbours.
        offered = both_ways.join(labels.withColumnRenamed("node", "dst"), "dst").groupBy(
            F.col("src").alias("node")).agg(F.min("component").alias("offered"))
        updated = labels.join(offered, "node").select(
            "node", F.least("component", "offered").alias("component"),
            (F.col("offered") < F.col("component")).alias("changed")).localCheckpoint()
        labels = updated.select("node", "component")
        if updated.where("changed").limit(1).count() == 0:
            return labels
    raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")


def persons_from_keys(pairs: DataFrame) -> DataFrame:
    """(record, person) where person is the component of the record-key graph (records only)."""
    components = connected_components(pairs.select(F.col("record").alias("src"), F.col("key").alias("dst")))
    records = pairs.select("record").distinct()
    # The component id is the smallest node, which may be a key: name persons by their smallest record.
    labelled = records.join(components.withColumnRenamed("node", "record"), "record", "left")
    labelled = labelled.withColumn("component", F.coalesce("component", "record"))
    return labelled.withColumn("person", F.min("record").over(Window.partitionBy("component"))).select(
        "record", "person")
