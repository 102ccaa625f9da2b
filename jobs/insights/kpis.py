"""KPIs by period and segment (gold.kpi): purchases, retention, campaigns, service, surveys, CAC and ROAS.

Periods. For each grain in `periods` (day, week, month) the last `periods[grain]` periods are
reported, counting the period that contains `as_of` (partial, up to as_of): calendar days, ISO
weeks starting on Monday (`date_trunc('week')`), calendar months. Anything dated after as_of is
ignored everywhere, also as the second half of a KPI (a purchase after as_of converts no click; a
ticket answered or resolved after as_of counts as not yet answered or resolved). Timestamps are
dated in the Spark session time zone.

Segments. Every KPI except CAC and ROAS is computed for segment_type 'all' / segment 'all' and for
every (segment_type, segment) of `membership`; campaign_response_rate also per segment_type 'campaign',
segment = campaign id. Membership is *current* membership applied to past
periods: a segment's history is the history of the customers in it today, not of those who were
in it then. CAC and ROAS are computed for 'all' and for segment_type 'channel', segment = each
marketing spend channel (up to as_of), whose customers are those whose signup_channel equals it.

Rows. value = numerator / denominator for every ratio and mean, null when the denominator is 0.
Counts and sums (active_customers, new_customers, revenue) have value = numerator and a null
denominator. So KPIs re-aggregate by summing numerators and denominators (over the disjoint
segments of one segment_type, or over periods; not repeat_purchase_rate, a running total). A
(period, segment, KPI) row exists only where the segment has the KPI's input data in the period:
purchases for the purchase KPIs, purchases in this or the previous period for retention and churn,
clicks, NPS responses, CSAT responses, tickets created, feedback texts, purchases or referrals for referral_rate,
purchases or complaints for complaint_rate, prospects at the period start for prospect_conversion_rate,
campaign sends for campaign_response_rate, CLV scores for clv_total and clv_mean, spend or purchases for CAC
and ROAS; repeat_purchase_rate wherever the segment has any of these in
the period (or its first purchase days, which for days before the window are counted in the first
reported period) and someone bought by the period's end. Periods are not densified.

KPIs (P = the period, E = its end, as_of in the current period):
  active_customers          distinct customers with a purchase in P
  new_customers             customers whose first purchase ever (all of `purchases` up to as_of) is in P
  revenue                   sum of purchase amounts in P
  arpu                      revenue / active_customers
  average_order_value       revenue / distinct transactions in P
  retention_rate            customers active in P and in the previous period / active in the previous period
  churn_rate                customers active in the previous period but not in P / active in the previous
                            period (= 1 - retention_rate)
  repeat_purchase_rate      customers with >= 2 distinct purchase days up to E / customers with >= 1
  campaign_conversion_rate  customers who clicked in P and purchased after one of those clicks, within
                            attribution_days (24 h each), / customers who clicked in P (by click period)
  nps                       100 * (promoters 9-10 - detractors 0-6) / NPS responses in P (numerator
                            = 100 * (promoters - detractors), so value is in points, -100..100)
  csat                      CSAT responses scoring 4 or 5 / CSAT responses in P
  first_response_minutes    sum / count of first_response_minutes over tickets created in P (and answered)
  resolution_hours          sum / count of resolution_hours over tickets created in P and resolved
  referral_rate             referrals made in P by the segment's customers / active_customers
  feedback_sentiment        sum / count of the sentiment scores (VADER compound, -1..1) of feedback texts
                            (ticket text, survey comments) written in P
  complaint_rate            complaints (tickets created in P whose text scores negative, compound <= -0.05)
                            / active_customers
  prospect_conversion_rate  prospects at the start of P (first seen, by gold.customer_profile.first_seen,
                            before P, no purchase before P) who made their first purchase in P / those prospects
  campaign_response_rate    (customer, campaign) sends dated in P (first 'sent') answered by a click up to
                            as_of / those sends
  clv_total, clv_mean       sum / count of the CLV of each customer's latest gold.customer_value score dated in
                            P (past periods: as scored then, where the pipeline ran in them)
  (free-to-paid conversion is not reported: no source carries a plan or a subscription)
  cac                       marketing spend in P / new_customers ('channel': that channel's spend / new
                            customers whose signup_channel is the channel)
  roas                      revenue / marketing spend in P ('channel': revenue from customers whose
                            signup_channel is the channel / that channel's spend)

At scale: every source is reduced to one row per (customer, grain, period) with additive measures,
those rows are unioned and summed per customer, joined once to the customer's groups (membership
plus signup channel) and summed per segment; only segment totals (segments x periods) are reshaped
into the long table. Windows are partitioned by customer or by segment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from schemas.gold import KPI

GRAINS = ("day", "week", "month")
CUSTOMER_PERIOD = ("customer_id", "grain", "period_start")
SEGMENT_PERIOD = ("grain", "period_start", "segment_type", "segment")

# Per-customer measures and how a customer's rows of one period combine: flags with max (a
# customer counts once), amounts and event counts with sum.
MEASURES: dict[str, Callable[[str], Column]] = {
    "active": F.max, "new_customer": F.max, "prev_active": F.max, "revenue": F.sum, "transactions": F.sum,
    "buyer": F.max, "repeater": F.max, "clicked": F.max, "converted": F.max,
    "promoters": F.sum, "detractors": F.sum, "nps_responses": F.sum, "satisfied": F.sum, "csat_responses": F.sum,
    "tickets": F.sum, "response_minutes": F.sum, "responded": F.sum, "resolution_hours": F.sum, "resolved": F.sum,
    "referrals": F.sum, "sentiment": F.sum, "feedback_texts": F.sum, "complaints": F.sum,
    "seen": F.max, "newly_seen": F.max, "campaigns_sent": F.sum, "campaigns_responded": F.sum,
    "clv": F.sum, "valued": F.max,
}
SEGMENT_MEASURES = (*MEASURES, "retained", "lost", "converted_prospect", "spend")
# Segment types whose rows are not groups of customers: KPIs of customers skip them.
NOT_CUSTOMER_GROUPS = ("channel", "campaign")


@dataclass(frozen=True)
class _Calendar:
    """The reporting window: per grain, the first reported period and the one containing as_of."""

    as_of: date
    periods: Mapping[str, int]

    @property
    def grains(self) -> tuple[str, ...]:
        return tuple(self.periods)

    def current(self, grain: str) -> date:
        if grain == "day":
            return self.as_of
        if grain == "week":
            return self.as_of - timedelta(days=self.as_of.weekday())
        return self.as_of.replace(day=1)

    def start(self, grain: str, lookback: int = 0) -> date:
        back = self.periods[grain] - 1 + lookback
        current = self.current(grain)
        if grain == "month":
            months = current.year * 12 + current.month - 1 - back
            return date(months // 12, months % 12 + 1, 1)
        return current - timedelta(days=back * (7 if grain == "week" else 1))

    def per_grain(self, dates: Callable[[str], date]) -> Column:
        """The date of the row's grain, as a literal map looked up by the `grain` column."""
        return F.create_map(*[x for g in self.grains for x in (F.lit(g), F.lit(dates(g)))])[F.col("grain")]


def _trunc(grain: str, day: Column) -> Column:
    if grain == "day":
        return day
    return F.date_trunc(grain, day.cast("timestamp")).cast("date")


def _next_period(grain: Column, start: Column) -> Column:
    return F.when(grain == "day", F.date_add(start, 1)).when(grain == "week", F.date_add(start, 7)) \
        .otherwise(F.add_months(start, 1))


def _periodise(df: DataFrame, day: str, cal: _Calendar, lookback: int = 0, clamp: bool = False) -> DataFrame:
    """The rows of `df` dated (column `day`) up to as_of, once per grain with (grain, period_start).
    Periods from `lookback` periods before the first reported one are kept; with `clamp`, earlier rows
    are kept too, counted in the first reported period and flagged `early` (for running totals)."""
    periods = F.array(*[F.struct(F.lit(g).alias("grain"), _trunc(g, F.col(day)).alias("period_start"))
                        for g in cal.grains])
    exploded = df.where(F.col(day) <= F.lit(cal.as_of)).withColumn("_period", F.explode(periods)) \
        .select("*", "_period.*").drop("_period")
    start = cal.per_grain(lambda g: cal.start(g, lookback))
    if clamp:
        return exploded.withColumns({"early": F.col("period_start") < start,
                                     "period_start": F.greatest("period_start", start)})
    return exploded.where(F.col("period_start") >= start)


def _purchase_facts(purchases: DataFrame, cal: _Calendar) -> DataFrame:
    """Per customer and period with a purchase, from one period before the first reported one: active,
    revenue, transactions; and each such customer as prev_active in the following period."""
    bought = _periodise(purchases.withColumn("day", F.to_date("ts")), "day", cal, lookback=1)
    active = bought.groupBy(*CUSTOMER_PERIOD).agg(
        F.sum("amount").alias("revenue"), F.count_distinct("transaction_id").alias("transactions"))
    # Each row twice (one pass, not a self-join): as itself, and as prev_active of the next period.
    this = F.struct(F.col("period_start"), F.col("revenue"), F.col("transactions"), F.lit(1).alias("active"),
                    F.lit(None).cast("int").alias("prev_active"))
    following = F.struct(_next_period(F.col("grain"), F.col("period_start")).alias("period_start"),
                         F.lit(None).cast("double").alias("revenue"), F.lit(None).cast("long").alias("transactions"),
                         F.lit(None).cast("int").alias("active"), F.lit(1).alias("prev_active"))
    return active.select("customer_id", "grain", F.explode(F.array(this, following)).alias("_row")) \
        .select("customer_id", "grain", "_row.*")


def _first_purchase_facts(purchases: DataFrame, cal: _Calendar) -> DataFrame:
    """new_customer in the period of a customer's first purchase day ever; buyer and repeater in the
    period of their first and second distinct purchase day, days before the window counted in the first
    reported period, so that running totals over periods give 'up to the period end'."""
    days = purchases.where(F.to_date("ts") <= F.lit(cal.as_of)).select("customer_id", F.to_date("ts").alias("day")) \
        .distinct()
    nth = F.row_number().over(Window.partitionBy("customer_id").orderBy("day"))
    first_two = days.withColumn("nth", nth).where(F.col("nth") <= 2)
    first = F.col("nth") == 1
    return _periodise(first_two, "day", cal, clamp=True).select(
        *CUSTOMER_PERIOD, F.when(first & ~F.col("early"), 1).alias("new_customer"), F.when(first, 1).alias("buyer"),
        F.when(F.col("nth") == 2, 1).alias("repeater"))


def _campaign_facts(campaign_events: DataFrame, purchases: DataFrame, cal: _Calendar,
                    attribution_days: int) -> DataFrame:
    """clicked per customer and click period; converted where a click of that period was followed by a
    purchase (up to as_of) within attribution_days."""
    clicks = campaign_events.where((F.col("event_type") == "click") & F.col("customer_id").isNotNull()) \
        .withColumn("day", F.to_date("event_ts"))
    bought = purchases.where(F.to_date("ts") <= F.lit(cal.as_of)) \
        .select(F.col("customer_id").alias("_buyer"), F.col("ts").alias("_bought_at"))
    within = (F.col("customer_id") == F.col("_buyer")) & (F.col("_bought_at") > F.col("event_ts")) \
        & (F.col("_bought_at") <= F.timestamp_add("DAY", F.lit(attribution_days), F.col("event_ts")))
    # A semi join: each click is kept once however many purchases follow it.
    converting = clicks.join(bought, within, "left_semi")
    return _periodise(clicks, "day", cal).select(*CUSTOMER_PERIOD, F.lit(1).alias("clicked")).unionByName(
        _periodise(converting, "day", cal).select(*CUSTOMER_PERIOD, F.lit(1).alias("converted")),
        allowMissingColumns=True)


def _survey_facts(surveys: DataFrame, cal: _Calendar) -> DataFrame:
    """NPS promoters (9-10), detractors (0-6) and responses; CSAT satisfied (4-5) and responses."""
    nps, csat, score = F.col("survey_type") == "NPS", F.col("survey_type") == "CSAT", F.col("score")
    return _periodise(surveys.withColumn("day", F.to_date("responded_at")), "day", cal).select(
        *CUSTOMER_PERIOD, F.when(nps & (score >= 9), 1).alias("promoters"),
        F.when(nps & (score <= 6), 1).alias("detractors"), F.when(nps, 1).alias("nps_responses"),
        F.when(csat & (score >= 4), 1).alias("satisfied"), F.when(csat, 1).alias("csat_responses"))


def _ticket_facts(tickets: DataFrame, cal: _Calendar) -> DataFrame:
    """Tickets created, and the response and resolution times of those answered / resolved by the end
    of the as-of day (a ticket resolved later is still open as of as_of)."""
    end = F.unix_micros(F.lit(cal.as_of + timedelta(days=1)).cast("timestamp"))

    def done_by_end(duration: str, micros: float) -> Column:
        return F.col(duration).isNotNull() & (F.unix_micros("created_at") + F.col(duration) * micros < end)

    responded, resolved = done_by_end("first_response_minutes", 60e6), done_by_end("resolution_hours", 3600e6)
    return _periodise(tickets.withColumn("day", F.to_date("created_at")), "day", cal).select(
        *CUSTOMER_PERIOD, F.lit(1).alias("tickets"),
        F.when(responded, F.col("first_response_minutes")).alias("response_minutes"),
        F.when(responded, 1).alias("responded"),
        F.when(resolved, F.col("resolution_hours")).alias("resolution_hours"), F.when(resolved, 1).alias("resolved"))


def _referral_facts(referrals: DataFrame, cal: _Calendar) -> DataFrame:
    """Referrals made, per referrer and period."""
    made = referrals.select(F.col("referrer_customer_id").alias("customer_id"), F.to_date("referred_at").alias("day"))
    return _periodise(made, "day", cal).select(*CUSTOMER_PERIOD, F.lit(1).alias("referrals"))


def _feedback_facts(feedback: DataFrame, cal: _Calendar, complaint_at_most: float) -> DataFrame:
    """Sentiment scores of feedback texts and their count, and complaints (negative ticket texts), per writer
    and period."""
    dated = feedback.where(F.col("customer_id").isNotNull()).withColumn("day", F.to_date("ts"))
    complaint = (F.col("source") == "ticket") & (F.col("sentiment") <= complaint_at_most)
    return _periodise(dated, "day", cal).select(*CUSTOMER_PERIOD, "sentiment", F.lit(1).alias("feedback_texts"),
                                                F.when(complaint, 1).alias("complaints"))


def _first_seen_facts(customers: DataFrame, cal: _Calendar) -> DataFrame:
    """seen in the period a customer was first seen (earlier days counted in the first reported period, for
    running totals), newly_seen only when that period is reported."""
    seen = customers.select("customer_id", F.to_date("first_seen").alias("day"))
    return _periodise(seen, "day", cal, clamp=True).select(
        *CUSTOMER_PERIOD, F.lit(1).alias("seen"), F.when(~F.col("early"), 1).alias("newly_seen"))


def _campaign_sends(campaign_events: DataFrame, as_of: date) -> DataFrame:
    """(customer_id, campaign_id, day, responded) per campaign sent to a customer: the day of its first send
    and whether a click answered it by as_of."""
    known = campaign_events.where(F.col("customer_id").isNotNull() & (F.to_date("event_ts") <= F.lit(as_of)))
    return known.groupBy("customer_id", "campaign_id").agg(
        F.min(F.when(F.col("event_type") == "sent", F.to_date("event_ts"))).alias("day"),
        F.max(F.when(F.col("event_type") == "click", 1).otherwise(0)).alias("responded")) \
        .where(F.col("day").isNotNull())


def _campaign_response_facts(sends: DataFrame, cal: _Calendar) -> tuple[DataFrame, DataFrame]:
    """Sends and responses per customer and send period, and the same totalled per campaign (segment type
    'campaign')."""
    dated = _periodise(sends, "day", cal)
    per_customer = dated.select(*CUSTOMER_PERIOD, F.lit(1).alias("campaigns_sent"),
                                F.col("responded").alias("campaigns_responded"))
    per_campaign = dated.groupBy("grain", "period_start", F.lit("campaign").alias("segment_type"),
                                 F.col("campaign_id").alias("segment")).agg(
        F.count("*").alias("campaigns_sent"), F.sum("responded").alias("campaigns_responded"))
    return per_customer, per_campaign


def _clv_facts(values: DataFrame, cal: _Calendar) -> DataFrame:
    """Each customer's CLV as last scored in the period (gold.customer_value slices dated in it)."""
    scored = _periodise(values.select("customer_id", "as_of_date", "clv"), "as_of_date", cal)
    return scored.groupBy(*CUSTOMER_PERIOD).agg(F.max_by("clv", "as_of_date").alias("clv"),
                                                F.lit(1).alias("valued"))


def _customer_facts(parts: list[DataFrame], cal: _Calendar) -> DataFrame:
    """One row per (customer, grain, reported period) with every measure (0 when absent), and the
    retained / lost flags of customers active in the previous period."""
    rows = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), parts)
    reported = F.col("period_start").between(cal.per_grain(cal.start), cal.per_grain(cal.current))
    facts = rows.where(reported).groupBy(*CUSTOMER_PERIOD).agg(
        *[F.coalesce(combine(name), F.lit(0)).alias(name) for name, combine in MEASURES.items()])
    # A first purchase in P by someone first seen before P converts a prospect.
    return facts.withColumns({"retained": F.col("prev_active") * F.col("active"),
                              "lost": F.col("prev_active") * (1 - F.col("active")),
                              "converted_prospect": F.col("new_customer") * (1 - F.col("newly_seen"))})


def _segment(segment_type: Column, segment: Column) -> Column:
    return F.struct(segment_type.cast("string").alias("segment_type"), segment.cast("string").alias("segment"))


def _groups(membership: DataFrame, customers: DataFrame, spend_channels: DataFrame) -> DataFrame:
    """(customer_id, segments): one row per customer in a group, with the array of its current
    memberships plus ('channel', signup channel) where that is a marketing spend channel."""
    by_channel = customers.join(F.broadcast(spend_channels), "signup_channel", "left_semi").select(
        "customer_id", F.lit("channel").alias("segment_type"), F.col("signup_channel").alias("segment"))
    return membership.select("customer_id", "segment_type", "segment").unionByName(by_channel) \
        .groupBy("customer_id").agg(F.collect_list(_segment(F.col("segment_type"), F.col("segment"))).alias("segments"))


def _spend_facts(spend: DataFrame, cal: _Calendar) -> DataFrame:
    """Marketing spend rows per period, once for 'all' and once for their channel."""
    dated = _periodise(spend.where(F.col("channel").isNotNull()).withColumn("day", F.col("spend_date")), "day", cal)
    segments = F.array(_segment(F.lit("all"), F.lit("all")), _segment(F.lit("channel"), F.col("channel")))
    return dated.select("grain", "period_start", F.explode(segments).alias("_segment"),
                        F.col("amount_reporting").alias("spend")).select("grain", "period_start", "_segment.*", "spend")


def _segment_totals(facts: DataFrame, groups: DataFrame, *segment_rows: DataFrame) -> DataFrame:
    """Measures summed per (grain, period_start, segment_type, segment), with rows already per segment (spend,
    campaigns), and running totals of buyers, repeaters and customers seen per segment (up to the period
    end)."""
    # One join, then each fact row once per segment of its customer, 'all' included (an explode, so the
    # facts are computed once and never double counted).
    no_groups = F.array().cast("array<struct<segment_type:string,segment:string>>")
    segments = F.concat(F.array(_segment(F.lit("all"), F.lit("all"))), F.coalesce(F.col("segments"), no_groups))
    rows = facts.join(groups, "customer_id", "left").withColumn("_segment", F.explode(segments)) \
        .select("*", "_segment.*").drop("customer_id", "segments", "_segment")
    rows = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), segment_rows, rows)
    totals = rows.groupBy(*SEGMENT_PERIOD).agg(*[F.coalesce(F.sum(m), F.lit(0)).alias(m) for m in SEGMENT_MEASURES])
    to_end = Window.partitionBy("grain", "segment_type", "segment").orderBy("period_start") \
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    totals = totals.withColumns({"buyers_to_date": F.sum("buyer").over(to_end),
                                 "repeaters_to_date": F.sum("repeater").over(to_end),
                                 "seen_to_date": F.sum("seen").over(to_end)})
    # Prospects when P starts: seen before it, less those who had bought before it (the running totals hold
    # the days before the window in the first period, so P's own share is its newly seen and new customers).
    return totals.withColumn("prospects_at_start", (F.col("seen_to_date") - F.col("newly_seen"))
                             - (F.col("buyers_to_date") - F.col("new_customer")))


def _row(name: str, present: Column, numerator: Column, denominator: Column | None = None) -> Column:
    """One KPI of a segment-period as a struct, null where the KPI has no input data."""
    num = numerator.cast("double")
    den = denominator.cast("double") if denominator is not None else F.lit(None).cast("double")
    value = num if denominator is None else F.when(den != 0, num / den)
    return F.when(present, F.struct(F.lit(name).alias("kpi"), value.alias("value"), num.alias("numerator"),
                                    den.alias("denominator")))


def _kpi_rows(totals: DataFrame) -> DataFrame:
    """Segment totals reshaped to one row per KPI (long form)."""
    c = F.col
    customer_kpi = ~c("segment_type").isin(*NOT_CUSTOMER_GROUPS)
    spend_kpi = c("segment_type").isin("all", "channel")
    bought = customer_kpi & (c("active") > 0)
    rows = [
        _row("active_customers", bought, c("active")),
        _row("new_customers", bought, c("new_customer")),
        _row("revenue", bought, c("revenue")),
        _row("arpu", bought, c("revenue"), c("active")),
        _row("average_order_value", bought, c("revenue"), c("transactions")),
        _row("retention_rate", customer_kpi & ((c("active") > 0) | (c("prev_active") > 0)), c("retained"),
             c("prev_active")),
        _row("churn_rate", customer_kpi & ((c("active") > 0) | (c("prev_active") > 0)), c("lost"), c("prev_active")),
        _row("repeat_purchase_rate", customer_kpi & (c("buyers_to_date") > 0), c("repeaters_to_date"),
             c("buyers_to_date")),
        _row("campaign_conversion_rate", customer_kpi & (c("clicked") > 0), c("converted"), c("clicked")),
        _row("nps", customer_kpi & (c("nps_responses") > 0), 100 * (c("promoters") - c("detractors")),
             c("nps_responses")),
        _row("csat", customer_kpi & (c("csat_responses") > 0), c("satisfied"), c("csat_responses")),
        _row("first_response_minutes", customer_kpi & (c("tickets") > 0), c("response_minutes"), c("responded")),
        _row("resolution_hours", customer_kpi & (c("tickets") > 0), c("resolution_hours"), c("resolved")),
        _row("referral_rate", customer_kpi & ((c("referrals") > 0) | (c("active") > 0)), c("referrals"), c("active")),
        _row("feedback_sentiment", customer_kpi & (c("feedback_texts") > 0), c("sentiment"), c("feedback_texts")),
        _row("complaint_rate", customer_kpi & ((c("complaints") > 0) | (c("active") > 0)), c("complaints"),
             c("active")),
        _row("prospect_conversion_rate", customer_kpi & (c("prospects_at_start") > 0), c("converted_prospect"),
             c("prospects_at_start")),
        _row("campaign_response_rate", (customer_kpi | (c("segment_type") == "campaign")) & (c("campaigns_sent") > 0),
             c("campaigns_responded"), c("campaigns_sent")),
        _row("clv_total", customer_kpi & (c("valued") > 0), c("clv")),
        _row("clv_mean", customer_kpi & (c("valued") > 0), c("clv"), c("valued")),
        _row("cac", spend_kpi & ((c("spend") > 0) | (c("active") > 0)), c("spend"), c("new_customer")),
        _row("roas", spend_kpi & ((c("spend") > 0) | (c("active") > 0)), c("revenue"), c("spend")),
    ]
    return totals.select(*SEGMENT_PERIOD, F.explode(F.array(*rows)).alias("k")).where(c("k").isNotNull()) \
        .select(*SEGMENT_PERIOD, "k.*")


def kpis(purchases: DataFrame, customers: DataFrame, membership: DataFrame, spend: DataFrame,
         campaign_events: DataFrame, tickets: DataFrame, surveys: DataFrame, referrals: DataFrame,
         feedback: DataFrame, values: DataFrame, as_of: date, periods: Mapping[str, int], attribution_days: int,
         complaint_at_most: float) -> DataFrame:
    """gold.kpi rows as of `as_of`: every KPI of the module docstring per grain in `periods` (grain ->
    number of periods reported, the current partial one included) and per segment ('all', each
    (segment_type, segment) of current `membership`, 'channel' for CAC and ROAS, 'campaign' for campaign response).
    `customers`: (customer_id, signup_channel, first_seen); `values`: gold.customer_value's (customer_id,
    as_of_date, clv)."""
    unknown = sorted(set(periods) - set(GRAINS))
    if unknown or not periods:
        raise ValueError(f"kpi periods: grains must be some of {list(GRAINS)}, not {sorted(periods)}")
    if any(n < 1 for n in periods.values()) or attribution_days < 0:
        raise ValueError(f"kpi periods must be >= 1 ({dict(periods)}) and attribution_days >= 0 ({attribution_days})")
    cal = _Calendar(as_of, dict(periods))
    sends, per_campaign = _campaign_response_facts(_campaign_sends(campaign_events, as_of), cal)
    facts = _customer_facts([
        _purchase_facts(purchases, cal), _first_purchase_facts(purchases, cal), _first_seen_facts(customers, cal),
        _campaign_facts(campaign_events, purchases, cal, attribution_days), sends, _survey_facts(surveys, cal),
        _ticket_facts(tickets, cal), _referral_facts(referrals, cal),
        _feedback_facts(feedback, cal, complaint_at_most), _clv_facts(values, cal)], cal)
    spend_channels = spend.where(F.col("spend_date") <= F.lit(as_of)) \
        .select(F.col("channel").alias("signup_channel")).distinct()
    totals = _segment_totals(facts, _groups(membership, customers, spend_channels), _spend_facts(spend, cal),
                             per_campaign)
    return _kpi_rows(totals).withColumn("as_of_date", F.lit(as_of)) \
        .select(*[F.col(c.name).cast(c.data_type).alias(c.name) for c in KPI.columns])
