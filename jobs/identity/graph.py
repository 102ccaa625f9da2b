"""Identity resolution: the identity graph, its components, stable customer ids and the guards.

The graph's nodes are CRM contact records and identifiers ('email:<hmac>', 'phone:<hmac>',
'loyalty:<n>', 'account:<id>', 'device:<id>'). Edges come from records carrying several of
them (a contact's e-mail and phone, an order's account and e-mail, a login's device and
account) and from the probabilistic matcher (contact to contact). Linking every record to
its identifiers, rather than records pairwise, keeps the graph linear in the data: a popular
e-mail is one node with many edges, not a clique. A customer is a connected component,
computed in Spark by minimum-label propagation; transactions belong to the customer of the
identifier they carry.

Ids are stable: a new component takes the id of the previous customer it shares most nodes
with (and that customer's largest part keeps its id); only merges and splits change ids,
and each change is recorded for downstream systems.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.cleanse.sources import first_per_key
from jobs.cleanse.suppression import node
from jobs.platform.settings import GuardsConfig

log = logging.getLogger(__name__)


def node_type(node_col: Column) -> Column:
    return F.substring_index(node_col, ":", 1)


def _pairs(df: DataFrame, left: Column, right: Column) -> DataFrame:
    return df.select(left.alias("src"), right.alias("dst")).where(F.col("src").isNotNull() & F.col("dst").isNotNull())


def _singles(df: DataFrame, *nodes: Column) -> DataFrame:
    return reduce(DataFrame.unionByName, [df.select(n.alias("node")) for n in nodes]).where(F.col("node").isNotNull())


def record_key_edges(records: DataFrame) -> DataFrame:
    """(src, dst) from each match-form record (its id is its node) to its e-mail, phone and loyalty nodes."""
    record = F.col("record_id")
    return reduce(DataFrame.unionByName, [
        _pairs(records, record, node("email", "email_key")),
        _pairs(records, record, node("phone", "phone_key")),
        _pairs(records, record, node("loyalty", "loyalty_number")),
    ])


def graph_nodes(singles: DataFrame, edges: DataFrame) -> DataFrame:
    """Every node: those given alone (`node`) and both ends of every edge."""
    return singles.unionByName(edges.select(F.col("src").alias("node"))) \
        .unionByName(edges.select(F.col("dst").alias("node"))).distinct()


@dataclass(frozen=True)
class ContactPoints:
    edges: DataFrame           # (src, dst): record to its e-mail, phone and loyalty nodes, shared ones left out
    shared: DataFrame          # (node, persons): contact points on the records of several persons


def contact_point_edges(records: DataFrame, links: DataFrame, max_persons: int) -> ContactPoints:
    """Record-to-contact-point edges, except for points shared by more than `max_persons` persons.

    A person here is a component of the records under the matcher's links alone. A phone on the
    records of two people the matcher keeps apart (a household's landline, a couple's e-mail) is
    evidence the matcher has already weighed; as a hard edge it would merge them regardless.
    """
    persons = components_of(records.select(F.col("record_id").alias("node")), links.select("src", "dst"))
    edges = record_key_edges(records)
    per_point = edges.join(persons.select(F.col("node").alias("src"), "component"), "src") \
        .groupBy("dst").agg(F.countDistinct("component").alias("persons"))
    shared = per_point.where(F.col("persons") > max_persons).select(F.col("dst").alias("node"), "persons")
    kept = edges.join(shared.select(F.col("node").alias("dst")), "dst", "left_anti").select("src", "dst")
    return ContactPoints(kept, shared)


@dataclass(frozen=True)
class IdentifierGraph:
    nodes: DataFrame           # (node)
    edges: DataFrame           # (src, dst): identifiers seen together on a record
    shared_devices: DataFrame  # (device, accounts): devices not used as links
    shared_contact_points: DataFrame  # (node, persons): contact points not used as links


def identifier_graph(contacts: DataFrame, contact_points: ContactPoints, orders: DataFrame, pos: DataFrame,
                     tickets: DataFrame, surveys: DataFrame, campaign_events: DataFrame, events: DataFrame,
                     referrals: DataFrame, max_accounts_per_device: int) -> IdentifierGraph:
    """Nodes and deterministic edges from the silver tables; `contacts` in the match form.

    A device that logged in to more than `max_accounts_per_device` accounts (a family tablet, a
    store kiosk) is not evidence that those accounts are one person; it is left out and reported.
    """
    logins = events.where(F.col("user_id").isNotNull()).select("device_id", "user_id").distinct()
    device_accounts = logins.groupBy("device_id").agg(F.count("*").alias("accounts"))
    shared = device_accounts.where(F.col("accounts") > max_accounts_per_device)
    personal_logins = logins.join(shared.select("device_id"), "device_id", "left_anti")
    edges = reduce(DataFrame.unionByName, [
        contact_points.edges,
        _pairs(orders, node("account", "account_id"), node("email", "email_key")),
        _pairs(tickets, node("account", "account_id"), node("email", "email_key")),
        _pairs(personal_logins, node("device", "device_id"), node("account", "user_id")),
    ]).distinct()
    singles = reduce(DataFrame.unionByName, [
        _singles(contacts, F.col("record_id")),
        _singles(orders, node("account", "account_id")),
        _singles(pos, node("loyalty", "loyalty_number")),
        _singles(tickets, node("email", "email_key"), node("account", "account_id")),
        _singles(surveys, node("email", "email_key")),
        _singles(campaign_events, node("email", "email_key")),
        _singles(referrals, node("email", "referred_email_key"), node("loyalty", "referrer_loyalty_number")),
        _singles(personal_logins, node("device", "device_id")),
    ])
    shared_devices = shared.select(F.col("device_id").alias("device"), "accounts")
    return IdentifierGraph(graph_nodes(singles, edges), edges, shared_devices, contact_points.shared)


def connected_components(edges: DataFrame, max_rounds: int = 50) -> DataFrame:
    """(node, component, cluster_size) for an undirected graph given as (src, dst) edges; the
    component is the smallest node id in it, its size the number of its nodes. Raises if it has
    not converged after `max_rounds` rounds.

    The rounds run on a number per node, not its id: an identifier node's id is a string of up to
    70 characters, and every round shuffles edge ends (a 128-bit hash as a struct was slower than
    the strings; a 64-bit one could merge two people). Only the nodes whose label fell in a round
    offer it to their neighbours in the next: a label can only fall after a neighbour's did, and in
    a graph of records and their identifiers most labels are final after a round or two."""
    edges = edges.select("src", "dst").localCheckpoint()     # read twice below: numbered, then numbers
    ends = edges.select("src").unionByName(edges.select(F.col("dst").alias("src"))).distinct()
    numbered = ends.select(F.col("src").alias("name"), F.monotonically_increasing_id().alias("node")) \
        .localCheckpoint()
    pairs = edges.join(numbered.select(F.col("name").alias("src"), F.col("node").alias("src_node")), "src") \
        .join(numbered.select(F.col("name").alias("dst"), F.col("node").alias("dst_node")), "dst")
    both_ways = pairs.select(F.col("src_node").alias("src"), F.col("dst_node").alias("dst")).unionByName(
        pairs.select(F.col("dst_node").alias("src"), F.col("src_node").alias("dst"))).distinct().localCheckpoint()
    # A node starts as its own label (self-loops included), then takes its neighbours' smallest.
    labels = both_ways.groupBy(F.col("src").alias("node")).agg(
        F.least(F.col("src"), F.min("dst")).alias("label")).localCheckpoint()
    fallen = labels
    for round_no in range(1, max_rounds + 1):
        offered = both_ways.join(fallen.select(F.col("node").alias("dst"), "label"), "dst").groupBy(
            F.col("src").alias("node")).agg(F.min("label").alias("offered"))
        updated = labels.join(offered, "node", "left").select(
            "node", F.least("label", "offered").alias("label"),
            F.coalesce(F.col("offered") < F.col("label"), F.lit(False)).alias("fell")).localCheckpoint()
        labels = updated.select("node", "label")
        fallen = updated.where("fell").select("node", "label").localCheckpoint()
        if fallen.isEmpty():
            log.info("connected components: converged in %d rounds", round_no)
            # Named by its smallest node id (the numbers follow no order of the ids), and sized in the
            # same window.
            component = Window.partitionBy("label")
            return labels.join(numbered, "node").select(
                F.col("name").alias("node"), F.min("name").over(component).alias("component"),
                F.count("*").over(component).alias("cluster_size"))
    raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")


def components_of(nodes: DataFrame, edges: DataFrame) -> DataFrame:
    """(node, component, cluster_size) for every node; a node without edges is a component of its own
    (and never enters the label propagation: most contact records have no link)."""
    labels = connected_components(edges.select("src", "dst").where(F.col("src") != F.col("dst")))
    alone = nodes.select("node").join(labels, "node", "left_anti").select(
        "node", F.col("node").alias("component"), F.lit(1).cast("long").alias("cluster_size"))
    return labels.unionByName(alone)


def affected_nodes(previous: DataFrame, nodes: DataFrame, edges: DataFrame, touched: DataFrame) -> DataFrame:
    """(node) of every node whose customer new data may change, for an incremental run.

    Those are the new nodes, and every node of a published customer (`previous`: node, customer_id) that
    has a touched node (a new or changed record, a contact point or device no longer used as a link), a
    node gone from the graph, or an edge (`edges`, links included) to another customer or a new node.
    Every other customer is a component of the new graph as it was: same nodes, same edges.
    """
    owner = previous.select("node", "customer_id")
    ends = edges.select("src", "dst") \
        .join(owner.select(F.col("node").alias("src"), F.col("customer_id").alias("_src_customer")), "src", "left") \
        .join(owner.select(F.col("node").alias("dst"), F.col("customer_id").alias("_dst_customer")), "dst", "left") \
        .where(~F.col("_src_customer").eqNullSafe(F.col("_dst_customer")) | F.col("_src_customer").isNull())
    customers = reduce(DataFrame.unionByName, [
        ends.select(F.col("_src_customer").alias("customer_id")),
        ends.select(F.col("_dst_customer").alias("customer_id")),
        touched.select("node").join(owner, "node").select("customer_id"),
        owner.join(nodes.select("node"), "node", "left_anti").select("customer_id"),
    ]).where(F.col("customer_id").isNotNull()).distinct()
    new = nodes.select("node").join(owner, "node", "left_anti")
    return owner.join(customers, "customer_id", "left_semi").select("node").unionByName(new).distinct()


@dataclass(frozen=True)
class Clusters:
    components: DataFrame      # (node, component, cluster_size)
    links_cut: int             # probabilistic links dropped inside oversized clusters


def cluster(nodes: DataFrame, edges: DataFrame, links: DataFrame, max_cluster_size: int) -> Clusters:
    """Components of deterministic `edges` plus probabilistic `links` (src, dst, match_probability).

    Where a component grows beyond `max_cluster_size` nodes, it is likely a chain of weak links:
    the probabilistic links inside it are cut and its components computed again from the rest.
    Oversized clusters that remain are deterministic, and left for the guards to report.
    """
    first = components_of(nodes, edges.unionByName(links.select("src", "dst"))).localCheckpoint()
    oversized = first.where(F.col("cluster_size") > max_cluster_size).select("node")
    cut = links.join(oversized.withColumnRenamed("node", "src"), "src", "left_semi")
    links_cut = cut.count()
    if links_cut == 0:
        return Clusters(first, 0)
    log.warning("identity: cutting %d probabilistic links inside clusters over %d nodes", links_cut,
                max_cluster_size)
    kept = links.join(cut.select("src", "dst"), ["src", "dst"], "left_anti")
    return Clusters(components_of(nodes, edges.unionByName(kept.select("src", "dst"))).localCheckpoint(), links_cut)


def fresh_id(seed: Column) -> Column:
    return F.concat(F.lit("CU-"), F.substring(F.sha2(seed, 256), 1, 16))


@dataclass(frozen=True)
class Assignment:
    graph: DataFrame     # (node, customer_id)
    changes: DataFrame   # (change, old_customer_id, new_customer_id, nodes_moved)


def assign_customer_ids(components: DataFrame, previous: DataFrame, issued_ids: DataFrame, as_of: date) -> Assignment:
    """Give each component a customer id, keeping the previous ids wherever the data allows.

    `previous` is the published graph (node, customer_id); `issued_ids` every id ever given out.
    A component and a previous customer keep each other when each is the other's largest
    overlap. Other components get a fresh id from their smallest node (salted with the date if
    that id was issued before, so a retired id is never reused).
    """
    overlap = (components.join(previous.select("node", "customer_id"), "node")
               .groupBy("component", "customer_id").agg(F.count("*").alias("shared")))
    best_for_component = first_per_key(overlap, ["component"], [F.col("shared").desc(), F.col("customer_id")])
    best_for_id = first_per_key(overlap, ["customer_id"], [F.col("shared").desc(), F.col("component")])
    kept = best_for_component.join(best_for_id.select("customer_id", F.col("component").alias("_c")), "customer_id") \
        .where(F.col("component") == F.col("_c")).select("component", "customer_id")
    components_ids = components.select("component").distinct().join(kept, "component", "left")
    issued = issued_ids.select(F.col("customer_id").alias("_issued")).distinct().withColumn("_taken", F.lit(True))
    candidate = fresh_id(F.col("component"))
    fresh = components_ids.where(F.col("customer_id").isNull()).select("component", candidate.alias("_candidate")) \
        .join(issued, F.col("_candidate") == F.col("_issued"), "left") \
        .select("component", F.when(F.col("_taken"), fresh_id(F.concat_ws("|", "component", F.lit(as_of.isoformat()))))
                .otherwise(F.col("_candidate")).alias("customer_id"))
    component_ids = components_ids.where(F.col("customer_id").isNotNull()).unionByName(fresh)
    graph = components.join(component_ids, "component").select("node", "customer_id")

    moved = overlap.join(component_ids.withColumnRenamed("customer_id", "new_customer_id"), "component") \
        .where(F.col("customer_id") != F.col("new_customer_id"))
    still_used = kept.select(F.col("customer_id").alias("_kept"), F.lit(True).alias("_lives"))
    changes = moved.join(still_used, F.col("customer_id") == F.col("_kept"), "left").select(
        F.when(F.col("_lives"), "split").otherwise("merged").alias("change"),
        F.col("customer_id").alias("old_customer_id"), "new_customer_id", F.col("shared").alias("nodes_moved"))
    gone = previous.select("customer_id").distinct().join(overlap.select("customer_id"), "customer_id", "left_anti")
    removed = gone.select(F.lit("removed").alias("change"), F.col("customer_id").alias("old_customer_id"),
                          F.lit(None).cast("string").alias("new_customer_id"),
                          F.lit(0).cast("long").alias("nodes_moved"))
    return Assignment(graph, changes.unionByName(removed))


# How a record of each silver source finds its customer: its id column, then the identifiers it
# carries in order of preference (a ticket's e-mail before its account; an event's account,
# stitched from the login, before its device). "referred" is the referred side of a referral.
ROUTES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "contacts": ("contact_id", [("contact", "contact_id")]),
    "orders": ("order_id", [("account", "account_id")]),
    "pos": ("transaction_id", [("loyalty", "loyalty_number")]),
    "tickets": ("ticket_id", [("email", "email_key"), ("account", "account_id")]),
    "surveys": ("response_id", [("email", "email_key")]),
    "campaign_events": ("interaction_id", [("email", "email_key")]),
    "events": ("event_id", [("account", "user_id"), ("device", "device_id")]),
    "referrals": ("referral_id", [("loyalty", "referrer_loyalty_number")]),
    "referred": ("referral_id", [("email", "referred_email_key")]),
}


def attach_customer(df: DataFrame, source: str, graph: DataFrame) -> DataFrame:
    """`df` with `customer_id` from the graph (null for anonymous records, e.g. a store purchase
    without a loyalty number)."""
    _, identifiers = ROUTES[source]
    result = df
    for i, (kind, column) in enumerate(identifiers):
        lookup = graph.select(F.col("node").alias(f"_node{i}"), F.col("customer_id").alias(f"_customer{i}"))
        result = result.join(lookup, node(kind, column) == F.col(f"_node{i}"), "left").drop(f"_node{i}")
    customer = F.coalesce(*[F.col(f"_customer{i}") for i in range(len(identifiers))])
    return result.withColumn("customer_id", customer).drop(*[f"_customer{i}" for i in range(len(identifiers))])


def record_customers(graph: DataFrame, tables: dict[str, DataFrame]) -> DataFrame:
    """(source, record_id, customer_id) for every record of `tables` (source name -> silver
    DataFrame) that has a customer."""
    return reduce(DataFrame.unionByName, [
        attach_customer(df, source, graph).where(F.col("customer_id").isNotNull())
        .select(F.lit(source).alias("source"), F.col(ROUTES[source][0]).alias("record_id"), "customer_id")
        for source, df in tables.items()
    ])


def customer_transactions(graph: DataFrame, tables: dict[str, DataFrame]) -> DataFrame:
    """(customer_id, source, transaction_id, ts, amount): completed online orders and store purchases
    of resolved customers, in the reporting currency; source and transaction_id as in silver.order_lines."""
    orders = attach_customer(tables["orders"].where(F.col("status") == "completed"), "orders", graph) \
        .select("customer_id", F.lit("orders").alias("source"), F.col("order_id").alias("transaction_id"),
                F.col("order_ts").alias("ts"), F.col("net_amount_reporting").alias("amount"))
    store = attach_customer(tables["pos"], "pos", graph) \
        .select("customer_id", F.lit("pos").alias("source"), "transaction_id", F.col("txn_ts").alias("ts"),
                F.col("amount_reporting").alias("amount"))
    return orders.unionByName(store).where(F.col("customer_id").isNotNull() & F.col("amount").isNotNull())


@dataclass(frozen=True)
class GuardLimits:
    max_cluster_size: int
    large_cluster_size: int
    max_large_cluster_share: float
    max_merged_share_drift: float
    max_conflicting_share: float
    max_accounts_per_customer: int
    max_changed_id_share: float

    @classmethod
    def from_conf(cls, conf: GuardsConfig) -> GuardLimits:
        return cls(**{k: getattr(conf, k) for k in cls.__dataclass_fields__})


def merged_share(graph: DataFrame) -> DataFrame:
    """One row: contact records and the share of them sharing a customer with another contact."""
    contacts = graph.where(node_type(F.col("node")) == "contact")
    per_customer = contacts.groupBy("customer_id").agg(F.count("*").alias("n"))
    return per_customer.agg(F.sum("n").alias("contact_records"),
                            (F.sum(F.when(F.col("n") > 1, F.col("n")).otherwise(0)) / F.sum("n")).alias("merged_share"))


def conflicting_customers(graph: DataFrame, contacts: DataFrame, max_accounts: int) -> DataFrame:
    """Customers whose records carry conflicting hard identifiers: (customer_id, conflict).

    Two birth dates that are not a day/month swap of each other, two loyalty numbers, or more
    e-commerce accounts than a person plausibly keeps.
    """
    dob = contacts.where(F.col("birth_date").isNotNull()).select(
        node("contact", "contact_id").alias("node"),
        F.concat_ws("-", F.year("birth_date"), F.least(F.month("birth_date"), F.dayofmonth("birth_date")),
                    F.greatest(F.month("birth_date"), F.dayofmonth("birth_date"))).alias("dob"))
    kinds = graph.withColumn("kind", node_type(F.col("node"))).join(dob, "node", "left")
    per_customer = kinds.groupBy("customer_id").agg(
        F.countDistinct("dob").alias("birth_dates"),
        F.count(F.when(F.col("kind") == "loyalty", 1)).alias("loyalty_numbers"),
        F.count(F.when(F.col("kind") == "account", 1)).alias("accounts"))
    conflict = F.concat_ws(", ", F.when(F.col("birth_dates") > 1, F.format_string("%d birth dates", "birth_dates")),
                           F.when(F.col("loyalty_numbers") > 1,
                                  F.format_string("%d loyalty numbers", "loyalty_numbers")),
                           F.when(F.col("accounts") > max_accounts, F.format_string("%d accounts", "accounts")))
    return per_customer.select("customer_id", conflict.alias("conflict")).where(F.col("conflict") != "")


def guard_checks(graph: DataFrame, contacts: DataFrame, changes: DataFrame, previous_customers: int,
                 previous_merged_share: float | None, limits: GuardLimits) -> list[tuple[str, float | None, float,
                                                                                           str | None]]:
    """(check, observed, limit, breach) rows; breach names the worst clusters when over the limit."""
    sizes = graph.groupBy("customer_id").agg(F.count("*").alias("nodes"),
                                             F.array_sort(F.collect_set(node_type(F.col("node")))).alias("kinds"))
    stats = sizes.agg(F.count("*").alias("customers"), F.max("nodes").alias("largest"),
                      F.count(F.when(F.col("nodes") > limits.large_cluster_size, 1)).alias("large")).first()
    customers = max(stats["customers"], 1)
    worst = ", ".join(f"{r.customer_id} ({r.nodes} nodes: {'/'.join(r.kinds)})"
                      for r in sizes.orderBy(F.col("nodes").desc(), "customer_id").limit(5).collect())
    share = merged_share(graph).first()["merged_share"] or 0.0
    conflicts = conflicting_customers(graph, contacts, limits.max_accounts_per_customer)
    conflict_count = conflicts.count()
    conflict_examples = ", ".join(f"{r.customer_id} ({r.conflict})" for r in
                                  conflicts.orderBy("customer_id").limit(5).collect())
    changed = changes.where(F.col("change").isin("merged", "split")).select("old_customer_id").distinct().count()
    drift = None if previous_merged_share is None else abs(share - previous_merged_share)
    changed_share = changed / previous_customers if previous_customers else None

    def over(value: float | None, limit: float, text: str) -> str | None:
        return text if value is not None and value > limit else None

    return [
        ("largest_cluster", float(stats["largest"] or 0), float(limits.max_cluster_size),
         over(stats["largest"], limits.max_cluster_size,
              f"largest customer has {stats['largest']} nodes (limit {limits.max_cluster_size}); worst: {worst}")),
        ("large_cluster_share", stats["large"] / customers, limits.max_large_cluster_share,
         over(stats["large"] / customers, limits.max_large_cluster_share,
              f"{stats['large']} customers have over {limits.large_cluster_size} nodes; worst: {worst}")),
        ("merged_share_drift", drift, limits.max_merged_share_drift,
         over(drift, limits.max_merged_share_drift,
              f"share of merged contact records moved from {previous_merged_share} to {share:.4f}")),
        ("conflicting_share", conflict_count / customers, limits.max_conflicting_share,
         over(conflict_count / customers, limits.max_conflicting_share,
              f"{conflict_count} customers carry conflicting identifiers, e.g. {conflict_examples}")),
        ("changed_id_share", changed_share, limits.max_changed_id_share,
         over(changed_share, limits.max_changed_id_share,
              f"{changed} of {previous_customers} existing customer ids would be merged or split")),
    ]
