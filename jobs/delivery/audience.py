"""Audiences: conditions over the audience view (schemas/audience.py), checked, previewed and listed.

`audience_view` builds the view from gold (pure: DataFrames in, a DataFrame out); `check_conditions`
puts every condition through Spark's analyzer on an empty frame of the view's schema (types, and that
it is true/false), so a bad audience stops a run before any data is read; `audience_members` applies
one; `preview` answers "how big, overlapping what, made of whom" without exporting anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.delivery.conditions import ConditionError
from jobs.delivery.export import consent_given
from jobs.platform.settings import AudienceConfig, DestinationConfig
from jobs.platform.tables import conform
from schemas.audience import AUDIENCE_VIEW

# The segment types a preview breaks an audience down by.
PREVIEW_SEGMENTS = ("lifecycle_stage", "rfm_segment")
# What a preview's sample shows: masked contact points only, as the `bi` views.
SAMPLE_COLUMNS = ("customer_id", "email_masked", "phone_masked", "lifecycle_stage", "rfm_segment", "clv")
# Scores offered as percentile ranks: view column -> gold.customer_value column.
PERCENTILES = {"clv_percentile": "clv", "churn_percentile": "churn_probability",
               "purchase_percentile": "purchase_probability"}


def percentile_rank(column: str) -> Column:
    """0-100 rank of `column` among the rows where it is not null (null where it is)."""
    value = F.col(column)
    rank = F.percent_rank().over(Window.partitionBy(value.isNull()).orderBy(value)) * 100
    return F.when(value.isNotNull(), rank)


def audience_view(profile: DataFrame, value: DataFrame, segments: DataFrame, as_of: date) -> DataFrame:
    """One row per customer of `profile` (gold.customer_profile) with the scores (gold.customer_value) and
    segments (gold.customer_segments) of `as_of`: the columns of schemas/audience.py."""
    on_day = F.col("as_of_date") == F.lit(as_of)
    scores = value.where(on_day).select(
        "customer_id", "clv", "current_value", "potential_value", "p_alive", "churn_probability",
        "purchase_probability", "expected_purchases")
    scores = scores.select("*", *[percentile_rank(source).alias(name) for name, source in PERCENTILES.items()])
    segment_columns = [c for c in AUDIENCE_VIEW.column_names if c in segments.columns
                       and c not in ("customer_id", "as_of_date", "age_band")]
    last_purchase = F.to_date("last_order_ts")
    view = (profile.drop("as_of_date")
            .join(scores, "customer_id", "left")
            .join(segments.where(on_day).select("customer_id", *segment_columns), "customer_id", "left")
            .withColumns({
                "as_of_date": F.lit(as_of),
                "email_consent": consent_given("email"),
                "sms_consent": consent_given("sms"),
                "first_purchase_date": F.to_date("first_order_ts"),
                "last_purchase_date": last_purchase,
                "days_since_last_purchase": F.datediff(F.lit(as_of), last_purchase),
            }))
    return conform(view, AUDIENCE_VIEW)


def check_conditions(spark: SparkSession, audiences: Iterable[AudienceConfig]) -> None:
    """Raise ConditionError naming the audience when a condition does not analyse against the view's schema
    (a type mismatch, an unknown function) or is not true/false. Reads no data."""
    empty = spark.createDataFrame([], AUDIENCE_VIEW.struct)
    for audience in audiences:
        try:
            result = empty.select(F.expr(audience.condition).alias("member")).schema["member"].dataType
        except AnalysisException as exc:
            reason = str(exc).strip().splitlines()[0]
            raise ConditionError(f"audience {audience.name!r}: the condition does not fit the audience view: "
                                 f"{reason}") from None
        if not isinstance(result, T.BooleanType):
            raise ConditionError(f"audience {audience.name!r}: the condition is a {result.simpleString()}, not a "
                                 "true/false expression")


def is_member(audience: AudienceConfig) -> Column:
    """Membership of a view row: the condition holds (null, unknown, is no)."""
    return F.coalesce(F.expr(audience.condition), F.lit(False))


def audience_members(view: DataFrame, audience: AudienceConfig) -> DataFrame:
    """The view's rows that meet the audience's condition."""
    return view.where(is_member(audience))


def reachable(destination: DestinationConfig) -> Column:
    """The view rows a destination's consent allows (an export also needs a contact point and no erasure)."""
    allowed = F.lit(True)
    for channel in destination.consent:
        allowed = allowed & F.col(f"{channel}_consent")
    return allowed


def preview(view: DataFrame, audiences: tuple[AudienceConfig, ...], name: str,
            destinations: dict[str, DestinationConfig], erased: DataFrame, sample_size: int = 10) -> dict[str, Any]:
    """An audience on `view`: its size, how many of them its destination's consent allows (erased customers
    left out), its overlap with every other audience, its size per segment of PREVIEW_SEGMENTS and a sample
    with masked contact points. Nothing is written."""
    audience = next(a for a in audiences if a.name == name)
    view = view.join(erased.select("customer_id"), "customer_id", "left_anti")
    flags = view.select(*dict.fromkeys([*SAMPLE_COLUMNS, *PREVIEW_SEGMENTS]),
                        reachable(destinations[audience.destination]).alias("_allowed"),
                        *[is_member(a).alias(f"_member_{i}") for i, a in enumerate(audiences)])
    flags = flags.where(F.col(f"_member_{audiences.index(audience)}")).localCheckpoint()
    others = [(i, a) for i, a in enumerate(audiences) if a is not audience]
    totals = flags.agg(F.count(F.lit(1)).alias("size"), F.count(F.when(F.col("_allowed"), 1)).alias("allowed"),
                       *[F.count(F.when(F.col(f"_member_{i}"), 1)).alias(f"_overlap_{i}") for i, _ in others]).first()
    by_segment = {}
    for segment in PREVIEW_SEGMENTS:
        rows = flags.groupBy(segment).count().orderBy(F.desc("count"), segment).collect()
        by_segment[segment] = {r[segment] if r[segment] is not None else "(none)": r["count"] for r in rows}
    sample = [r.asDict() for r in flags.orderBy("customer_id").limit(sample_size).select(*SAMPLE_COLUMNS).collect()]
    return {"audience": name, "condition": audience.condition,
            "destination": audience.destination, "size": totals["size"], "with_consent": totals["allowed"],
            "overlap": {a.name: totals[f"_overlap_{i}"] for i, a in others},
            "by_segment": by_segment, "sample": sample}

