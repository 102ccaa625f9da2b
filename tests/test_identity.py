"""Connected components in Spark against a union-find reference on the same graph."""

from __future__ import annotations

import random

import pytest
from pyspark.sql import SparkSession

from jobs.identity import connected_components, persons_from_keys


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


def test_records_sharing_keys_transitively_are_one_person(spark: SparkSession) -> None:
    pairs = spark.createDataFrame([
        ("contacts:c1", "email:e1"), ("contacts:c1", "phone:p1"),
        ("orders:o1", "email:e1"), ("orders:o1", "account:a1"),
        ("orders:o2", "account:a1"),                 # no e-mail: joined through the account
        ("contacts:c2", "email:e2"), ("orders:o3", "account:a9"),
    ], "record string, key string")
    persons = {r.record: r.person for r in persons_from_keys(pairs).collect()}
    assert persons == {"contacts:c1": "contacts:c1", "orders:o1": "contacts:c1", "orders:o2": "contacts:c1",
                       "contacts:c2": "contacts:c2", "orders:o3": "orders:o3"}
