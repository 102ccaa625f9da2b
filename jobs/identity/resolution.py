"""Identity resolution as one transform: match-form contacts and the other silver sources, against
the published graph, into the next graph, its links and the id changes (nothing written here).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.identity import graph as identity
from jobs.identity import matching
from jobs.platform.settings import IdentityConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resolution:
    """A resolution computed but not yet published."""

    graph: DataFrame          # rows of gold.identity_graph
    links: DataFrame          # rows of gold.identity_links
    changes: DataFrame        # (change, old_customer_id, new_customer_id, nodes_moved)
    linkage: matching.Linkage
    links_cut: int
    shared_devices: int
    shared_contact_points: int
    previous_customers: int


def graph_rows(assignment: DataFrame, previous: DataFrame, fingerprints: DataFrame, as_of: date,
               run_id: str) -> DataFrame:
    """Rows of gold.identity_graph for the new assignment, keeping dates of unchanged nodes."""
    before = previous.select("node", F.col("customer_id").alias("_before"), F.col("first_seen_date").alias("_first"),
                             F.col("assigned_date").alias("_assigned"), F.col("run_id").alias("_run"))
    same = F.col("_before") == F.col("customer_id")
    return assignment.join(before, "node", "left").join(fingerprints, "node", "left").select(
        "node", identity.node_type(F.col("node")).alias("node_type"), "customer_id",
        F.coalesce("_first", F.lit(as_of)).alias("first_seen_date"),
        F.when(same, F.col("_assigned")).otherwise(F.lit(as_of)).alias("assigned_date"),
        F.when(same, F.col("_run")).otherwise(F.lit(run_id)).alias("run_id"), "match_fingerprint")


def link_rows(links: DataFrame, graph: DataFrame, run_id: str) -> DataFrame:
    """Rows of gold.identity_links: the links inside the published customers (cut links are not)."""
    customer = graph.select(F.col("node").alias("src"), "customer_id")
    other = graph.select(F.col("node").alias("dst"), F.col("customer_id").alias("_dst_customer"))
    return links.join(customer, "src").join(other, "dst").where(F.col("customer_id") == F.col("_dst_customer")) \
        .select("src", "dst", "customer_id", "match_probability", "match_weight", "weights",
                F.lit(run_id).alias("run_id"))


def changed_records(contacts: DataFrame, previous: DataFrame) -> DataFrame:
    """(record_id) of the contact records new or changed since the published graph's run."""
    published = previous.where(F.col("match_fingerprint").isNotNull()).select(
        F.col("node").alias("record_id"), "match_fingerprint")
    return contacts.select("record_id", "match_fingerprint").join(
        published, ["record_id", "match_fingerprint"], "left_anti").select("record_id")


def resolution(contacts: DataFrame, sources: dict[str, DataFrame], previous: DataFrame, previous_links: DataFrame,
               issued: DataFrame, conf: IdentityConfig, model: str | None, as_of: date, run_id: str) -> Resolution:
    """Match, cluster and assign ids against the published graph (`previous`, its links, every id
    `issued`); checkpointed, nothing written. `contacts` are match-form records, `sources` the other
    silver tables by source name.

    Incremental when `model` (the one in force) is given and identity.incremental holds: only the
    records new or changed since the published run are scored (`matching.link_records`), and only
    the customers the new data touches (`graph.affected_nodes`) are clustered again; the others keep
    their nodes and ids as published.
    """
    contacts = contacts.withColumn("match_fingerprint", matching.fingerprint(contacts)).localCheckpoint()
    changed = kept = None
    if conf.incremental and model is not None:
        changed = changed_records(contacts, previous).localCheckpoint()
        current = contacts.select(F.col("record_id").alias("node"))
        dropped = previous.where(F.col("match_fingerprint").isNotNull()).select("node") \
            .join(current, "node", "left_anti") \
            .unionByName(changed.select(F.col("record_id").alias("node")))
        kept = previous_links \
            .join(dropped.select(F.col("node").alias("src")), "src", "left_anti") \
            .join(dropped.select(F.col("node").alias("dst")), "dst", "left_anti")
    linkage = matching.link_records(contacts.drop("match_fingerprint"), conf, model, changed=changed,
                                    kept_links=kept)
    points = identity.contact_point_edges(contacts, linkage.links, conf.max_persons_per_contact_point)
    source_graph = identity.identifier_graph(
        contacts, points, sources["orders"], sources["pos"], sources["tickets"], sources["surveys"],
        sources["campaign_events"], sources["events"], sources["referrals"], conf.max_accounts_per_device)
    # Computed once: the scope, the clusters, the untouched customers and the run's figures all read them
    # (the shared devices come from a scan of every login event).
    all_nodes, edges = source_graph.nodes.localCheckpoint(), source_graph.edges.localCheckpoint()
    shared_devices = source_graph.shared_devices.localCheckpoint()
    shared_points = source_graph.shared_contact_points.localCheckpoint()
    records = contacts.count()
    nodes, links, published = all_nodes, linkage.links, previous
    if linkage.scored_records < records:
        touched = reduce(DataFrame.unionByName, [
            changed.select(F.col("record_id").alias("node")), shared_points.select("node"),
            shared_devices.select(identity.node("device", "device").alias("node"))])
        scope = identity.affected_nodes(previous, nodes, edges.unionByName(links.select("src", "dst")),
                                        touched).localCheckpoint()
        nodes, published = nodes.join(scope, "node", "left_semi"), previous.join(scope, "node", "left_semi")
        edges, links = (frame.join(scope.select(F.col("node").alias("src")), "src", "left_semi")
                        for frame in (edges, links))
        log.info("resolve: incremental, %d of %d records scored, %d nodes clustered again",
                 linkage.scored_records, records, scope.count())
    clusters = identity.cluster(nodes, edges, links, conf.guards.max_cluster_size)
    assignment = identity.assign_customer_ids(clusters.components, published, issued, as_of)
    untouched = previous.join(published.select("node"), "node", "left_anti") \
        .join(all_nodes, "node", "left_semi").select("node", "customer_id")
    fingerprints = contacts.select(F.col("record_id").alias("node"), "match_fingerprint")
    graph = graph_rows(assignment.graph.unionByName(untouched), previous, fingerprints, as_of, run_id).localCheckpoint()
    return Resolution(graph, link_rows(linkage.links, graph, run_id).localCheckpoint(),
                      assignment.changes.localCheckpoint(), linkage, clusters.links_cut,
                      shared_devices.count(), shared_points.count(),
                      previous.select("customer_id").distinct().count())
