"""Erased people stay erased: a silver record carrying an identifier on the suppression list (ops.erased_subjects,
written by an erasure) is rejected as ERASED_PERSON, so re-landed or new files do not bring the person back.
The erasure finds the person's records with the same match (`with_erased`)."""

from __future__ import annotations

from functools import reduce
from operator import or_

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.cleanse.sources import reject
from jobs.platform import pii
from schemas.silver import IDENTIFIERS

ERASED_PERSON = "ERASED_PERSON"


def node(kind: str, value: Column | str) -> Column:
    """The identity-graph node of an identifier: '<kind>:<value>'; null when the value is missing."""
    col = F.col(value) if isinstance(value, str) else value
    return F.when(col.isNotNull() & (F.trim(col) != ""), F.concat(F.lit(f"{kind}:"), col))


def with_erased(df: DataFrame, source: str, subject_keys: DataFrame, hmac_key: bytes) -> DataFrame:
    """`df` (silver records of `source`) with `_erased`: whether one of its identifiers (`IDENTIFIERS`) has its
    suppression key in `subject_keys` (subject_key). One broadcast join per identifier: the list is small."""
    keys = subject_keys.select("subject_key").distinct()
    flagged, hits = df, []
    for i, (kind, column) in enumerate(IDENTIFIERS[source]):
        hit = f"_erased{i}"
        flagged = flagged.join(F.broadcast(keys.select(F.col("subject_key").alias(f"_subject{i}"),
                                                       F.lit(True).alias(hit))),
                               pii.suppression_key(node(kind, column), hmac_key) == F.col(f"_subject{i}"), "left") \
            .drop(f"_subject{i}")
        hits.append(hit)
    erased = reduce(or_, [F.coalesce(F.col(h), F.lit(False)) for h in hits])
    return flagged.withColumn("_erased", erased).drop(*hits)


def reject_erased(df: DataFrame, source: str, subject_keys: DataFrame, hmac_key: bytes) -> DataFrame:
    """`reject` the records of an erased person (`with_erased`) as ERASED_PERSON."""
    return reject(with_erased(df, source, subject_keys, hmac_key), F.col("_erased"), ERASED_PERSON).drop("_erased")
