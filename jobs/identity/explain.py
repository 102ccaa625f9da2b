"""Why records are one customer: its records, its identifiers and the probabilistic links that joined
them, each with the match weight every comparison gave it (`cdp explain-customer`)."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.identity.graph import node_type

RECORD_COLUMNS = ("contact_id", "given_name", "family_name", "birth_date", "city", "postcode", "email_masked",
                  "phone_masked", "loyalty_number")


@dataclass(frozen=True)
class Explanation:
    records: list[dict]        # the customer's contact records (masked contact points)
    identifiers: list[dict]    # (node_type, nodes): how many of each identifier kind joined it
    links: list[dict]          # probabilistic links: src, dst, match_probability, match_weight, weights


def explain_customer(customer_id: str, graph: DataFrame, links: DataFrame, contacts: DataFrame) -> Explanation:
    """The customer's records, identifiers and links; small by the guards (a customer has at most
    identity.guards.max_cluster_size nodes), so collected."""
    nodes = graph.where(F.col("customer_id") == customer_id).select("node", node_type(F.col("node")).alias("kind"))
    contact_ids = nodes.where(F.col("kind") == "contact").select(
        F.substring_index("node", ":", -1).alias("contact_id"))
    records = contacts.join(contact_ids, "contact_id").select(*RECORD_COLUMNS).orderBy("contact_id")
    identifiers = nodes.groupBy(F.col("kind").alias("node_type")).agg(F.count("*").alias("nodes")).orderBy("node_type")
    joined = links.where(F.col("customer_id") == customer_id).orderBy(F.col("match_weight").desc())
    return Explanation([r.asDict() for r in records.collect()], [r.asDict() for r in identifiers.collect()],
                       [r.asDict() for r in joined.select("src", "dst", "match_probability", "match_weight",
                                                          "weights").collect()])


def render(customer_id: str, explanation: Explanation) -> str:
    """Plain text: the records, the identifier counts, then each link as a waterfall of weights."""
    if not explanation.identifiers:
        return f"{customer_id}: no such customer in the published identity graph"
    lines = [f"customer {customer_id}", "", "records:"]
    for r in explanation.records:
        lines.append("  " + "  ".join(f"{k}={r[k]}" for k in RECORD_COLUMNS if r[k] is not None))
    lines += ["", "identifiers: " + ", ".join(f"{i['nodes']} {i['node_type']}" for i in explanation.identifiers), ""]
    if not explanation.links:
        lines.append("no probabilistic links: the records share identifiers (e-mail, phone, loyalty, account, device)")
    for link in explanation.links:
        lines.append(f"link {link['src']} ~ {link['dst']}: match probability {link['match_probability']:.4f}, "
                     f"weight {link['match_weight']:+.2f}")
        weights = dict(link["weights"])
        lines.append(f"    {'prior':<12} {link['match_weight'] - sum(weights.values()):+7.2f}  (two random records)")
        for name, weight in sorted(weights.items(), key=lambda kv: -abs(kv[1])):
            lines.append(f"    {name:<12} {weight:+7.2f}")
    return "\n".join(lines)
