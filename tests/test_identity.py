"""Identity graph: components against union-find, stable ids through merges and splits, the guards."""

from __future__ import annotations

import json
import random
from datetime import date

import pytest
from pyspark.sql import DataFrame, SparkSession

from jobs.identity import matching
from jobs.identity.graph import (
    GuardLimits,
    affected_nodes,
    assign_customer_ids,
    components_of,
    connected_components,
    guard_checks,
)
from jobs.identity.stage import model_in_force
from jobs.platform.config import Settings


def union_find_components(nodes: set[str], edges: list[tuple[str, str]]) -> dict[str, str]:
    parent = {n: n for n in nodes}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = {}
    for n in nodes:
        groups.setdefault(find(n), []).append(n)
    return {n: min(members) for members in groups.values() for n in members}


def test_components_match_union_find_on_a_random_graph_with_long_chains(spark: SparkSession) -> None:
    rng = random.Random(7)
    nodes = [f"n{i:03d}" for i in range(300)]
    edges = [(rng.choice(nodes), rng.choice(nodes)) for _ in range(180)]
    edges += [(f"c{i:02d}", f"c{i + 1:02d}") for i in range(25)]  # a chain of 26 nodes
    edges += [("loner", "loner")]  # a node with only a self-loop is its own component
    expected = union_find_components({n for e in edges for n in e}, edges)

    got = {r.node: r.component for r in
           connected_components(spark.createDataFrame(edges, "src string, dst string")).collect()}

    assert got == expected


def test_non_convergence_is_an_error(spark: SparkSession) -> None:
    chain = [(f"c{i:02d}", f"c{i + 1:02d}") for i in range(10)]
    with pytest.raises(RuntimeError, match="did not converge"):
        connected_components(spark.createDataFrame(chain, "src string, dst string"), max_rounds=2)


EMPTY_GRAPH = "node string, customer_id string"
AS_OF = date(2026, 11, 20)


def _resolve(spark: SparkSession, edges: list[tuple[str, str]], previous: DataFrame, issued: DataFrame | None = None):
    nodes = spark.createDataFrame([(n,) for e in edges for n in e], "node string").distinct()
    components = components_of(nodes, spark.createDataFrame(edges, "src string, dst string"))
    assignment = assign_customer_ids(components, previous, issued if issued is not None else previous, AS_OF)
    graph = {r.node: r.customer_id for r in assignment.graph.collect()}
    changes = sorted((r.change, r.old_customer_id, r.new_customer_id, r.nodes_moved)
                     for r in assignment.changes.collect())
    return graph, changes, spark.createDataFrame(list(graph.items()), EMPTY_GRAPH)


FIRST = [("contact:c1", "email:e1"), ("contact:c1", "phone:p1"), ("account:a1", "email:e1"),
         ("contact:c2", "email:e2"), ("account:a9", "account:a9")]


def test_records_sharing_identifiers_transitively_are_one_customer(spark: SparkSession) -> None:
    graph, changes, _ = _resolve(spark, FIRST, spark.createDataFrame([], EMPTY_GRAPH))
    assert graph["contact:c1"] == graph["email:e1"] == graph["phone:p1"] == graph["account:a1"]
    assert len({graph["contact:c1"], graph["contact:c2"], graph["account:a9"]}) == 3
    assert all(v.startswith("CU-") and len(v) == 19 for v in graph.values())
    assert changes == []


def test_ids_do_not_change_when_unrelated_data_arrives(spark: SparkSession) -> None:
    first, _, previous = _resolve(spark, FIRST, spark.createDataFrame([], EMPTY_GRAPH))
    # A new customer (c0 sorts before every old node, so it would win a naive min-node id), and a new
    # order linking an existing account to an existing e-mail of the same customer.
    second, changes, _ = _resolve(spark, [*FIRST, ("contact:c0", "email:e0"), ("account:a1", "email:e1")], previous)
    assert {n: second[n] for n in first} == first
    assert second["contact:c0"] not in first.values()
    assert changes == []


def test_a_merge_keeps_the_larger_customer_id_and_is_recorded(spark: SparkSession) -> None:
    first, _, previous = _resolve(spark, FIRST, spark.createDataFrame([], EMPTY_GRAPH))
    # A ticket with account a9 and e-mail e1 joins customer a9 into customer c1.
    second, changes, _ = _resolve(spark, [*FIRST, ("account:a9", "email:e1")], previous)
    survivor = first["contact:c1"]
    assert second["account:a9"] == survivor and second["contact:c1"] == survivor
    assert changes == [("merged", first["account:a9"], survivor, 1)]


def test_a_split_keeps_the_id_on_the_larger_part_and_is_recorded(spark: SparkSession) -> None:
    first, _, previous = _resolve(spark, FIRST, spark.createDataFrame([], EMPTY_GRAPH))
    # The account no longer links to e1 (e.g. the order was erased): it leaves customer c1.
    edges = [e for e in FIRST if e != ("account:a1", "email:e1")] + [("account:a1", "account:a1")]
    second, changes, _ = _resolve(spark, edges, previous)
    assert second["contact:c1"] == first["contact:c1"]
    assert second["account:a1"] != first["account:a1"]
    assert changes == [("split", first["contact:c1"], second["account:a1"], 1)]


def test_a_retired_id_is_never_issued_again(spark: SparkSession) -> None:
    first, _, previous = _resolve(spark, FIRST, spark.createDataFrame([], EMPTY_GRAPH))
    merged, _, after_merge = _resolve(spark, [*FIRST, ("account:a9", "email:e1")], previous)
    # a9 leaves again: its old id was retired by the merge, so it gets a new one.
    issued = after_merge.unionByName(previous)
    again, changes, _ = _resolve(spark, FIRST, after_merge, issued)
    assert again["account:a9"] not in set(first.values()) | set(merged.values())
    assert changes == [("split", merged["contact:c1"], again["account:a9"], 1)]


def test_guards_name_the_worst_clusters_and_conflicts(spark: SparkSession) -> None:
    hub = [(f"contact:h{i:02d}", "phone:shared") for i in range(30)]   # one phone on 30 contacts
    graph, _, staged = _resolve(spark, [*FIRST, *hub], spark.createDataFrame([], EMPTY_GRAPH))
    contacts = spark.createDataFrame(
        [(f"h{i:02d}", date(1950 + i, 1, 2)) for i in range(30)] + [("c1", date(1980, 1, 2))],
        "contact_id string, birth_date date")
    limits = GuardLimits(max_cluster_size=20, large_cluster_size=10, max_large_cluster_share=0.5,
                         max_merged_share_drift=0.05, max_conflicting_share=0.01, max_accounts_per_customer=3,
                         max_changed_id_share=0.02)
    checks = {name: (observed, breach) for name, observed, _, breach in
              guard_checks(staged, contacts, spark.createDataFrame([], "change string, old_customer_id string"),
                           0, None, limits)}
    hub_id = graph["phone:shared"]
    assert checks["largest_cluster"][0] == 31
    assert hub_id in checks["largest_cluster"][1]
    assert checks["large_cluster_share"][1] is None             # 1 of 4 customers: within 0.5
    assert hub_id in checks["conflicting_share"][1] and "30 birth dates" in checks["conflicting_share"][1]
    assert checks["merged_share_drift"] == (None, None)          # no previous run to compare with


def test_an_incremental_run_reclusters_only_the_customers_new_data_touches(spark: SparkSession) -> None:
    previous = spark.createDataFrame([("contact:c1", "A"), ("email:e1", "A"), ("contact:c2", "B"), ("email:e2", "B"),
                                      ("contact:c3", "C"), ("email:e3", "C"), ("contact:c4", "D"),
                                      ("email:e4", "D"), ("contact:c5", "E")], EMPTY_GRAPH)
    edges = [("contact:c1", "email:e1"), ("contact:c2", "email:e2"), ("contact:c3", "email:e3"),
             ("contact:c4", "email:e4"),
             ("contact:c6", "email:e2"),   # a new record on B's e-mail
             ("contact:c1", "contact:c3")]  # a new link between A and C
    nodes = spark.createDataFrame([(n,) for e in edges for n in e], "node string").distinct()  # E's c5 is gone
    touched = spark.createDataFrame([("contact:c4",)], "node string")  # D's record changed
    scope = {r.node for r in affected_nodes(previous, nodes, spark.createDataFrame(edges, "src string, dst string"),
                                            touched).collect()}
    # A and C (joined), B (a new node on its e-mail), D (changed), E (its node gone); c6 is new.
    assert scope == {"contact:c1", "email:e1", "contact:c3", "email:e3", "contact:c2", "email:e2", "contact:c6",
                     "contact:c4", "email:e4", "contact:c5"}
    untouched = previous.where("customer_id = 'A'")
    assert {r.node for r in affected_nodes(untouched, nodes.where("node IN ('contact:c1', 'email:e1')"),
                                           spark.createDataFrame(edges[:1], "src string, dst string"),
                                           touched.limit(0)).collect()} == set()


def test_the_model_in_force_is_retrained_when_the_records_grow_not_because_they_outnumber_its_sample(
        settings: Settings) -> None:
    conf = settings.identity      # retrain_growth 0.5
    model = json.dumps({matching.TRAINED_ON: conf.training_sample_records,
                        matching.DRAWN_FROM: 4 * conf.training_sample_records})
    last_run = {"model_records": 4 * conf.training_sample_records, "model": model}
    assert model_in_force(last_run, 5 * conf.training_sample_records, conf) == model    # grew by a quarter
    assert model_in_force(last_run, 7 * conf.training_sample_records, conf) is None     # by three quarters
    assert model_in_force(last_run, 4 * conf.training_sample_records,
                          conf.model_copy(update={"refit": True})) is None
