"""The shape of the configuration: one frozen pydantic model per section of `conf/base.yaml`.

`jobs.platform.config.load_settings` merges the files and overrides, then validates them here once;
code downstream reads typed attributes (``settings.identity.guards.max_cluster_size``) and can
trust them. Every model forbids unknown keys, so a misspelt key is an error, not a silent default.
Numbers are strict: a quoted "50" or a `true` is not taken for an integer.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, EmailStr, Field, Strict, field_validator, model_validator
from pydantic.dataclasses import dataclass

Int = Annotated[int, Strict()]
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0)]
Share = Annotated[float, Strict(), Field(ge=0, le=1)]       # a probability or a fraction
Port = Annotated[int, Strict(), Field(ge=1, le=65535)]
Name = Annotated[str, Strict(), Field(min_length=1)]


def _spark_value(value: Any) -> Any:
    # Spark properties are strings, but YAML and CDP__SPARK__CONF__ overrides yield numbers and booleans.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


SparkValue = Annotated[str, BeforeValidator(_spark_value)]

TimeUnit = Literal["day", "week"]
SurvivorshipRule = Literal["most_recent", "earliest", "most_frequent", "most_trusted"]
KpiGrain = Literal["day", "week", "month"]
BasketLevel = Literal["category", "product"]
ContactMode = Literal["raw", "hashed"]
ContactField = Literal["email", "phone"]
ConsentChannel = Literal["email", "sms"]
ExportFormat = Literal["csv", "parquet"]
LogLevel = Literal["ALL", "DEBUG", "ERROR", "FATAL", "INFO", "OFF", "TRACE", "WARN"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Paths:
    """Where everything lives; a dataclass so that `dataclasses.replace(settings.paths, ...)` works."""

    landing: Path
    truth: Path
    warehouse: Path
    metastore: Path
    jars: Path
    gx: Path
    airflow_home: Path
    alerts: Path
    exports: Path
    bench: Path
    serving: Path
    serving_users: Path

    def under(self, root: Path) -> Paths:
        """Relative paths resolved against `root` (absolute ones stay as they are)."""
        return Paths(**{f.name: root / getattr(self, f.name) for f in dataclasses.fields(self)})


class DeltaConfig(Section):
    maven_coordinates: Annotated[str, Strict(), Field(pattern=r"^[^:\s]+:[^:\s]+:[^:\s]+$")]


class SparkConfig(Section):
    app_name: Name = "cdp"
    master: Name
    conf: dict[str, SparkValue] = {}
    log_level: LogLevel = "WARN"


class BtydConfig(Section):
    r: PositiveFloat
    alpha: PositiveFloat
    a: PositiveFloat
    b: PositiveFloat
    spend_p: PositiveFloat
    spend_q: PositiveFloat
    spend_gamma: PositiveFloat


class DirtConfig(Section):
    email_case_whitespace: Share
    phone_format_variation: Share
    name_typo: Share
    moved_address: Share
    duplicate_contact: Share
    dob_swapped: Share
    household_share: Share
    missing_field: Share
    exact_duplicate: Share
    replayed_event: Share
    malformed_row: Share
    late_arrival: Share
    outlier_amount: Share


class GeneratorConfig(Section):
    seed: Int
    customers: PositiveInt
    end_date: date
    history_days: PositiveInt
    daily_batches: NonNegativeInt
    customers_per_chunk: PositiveInt
    prospect_share: Share
    test_account_share: Share
    btyd: BtydConfig
    dirt: DirtConfig


class IngestConfig(Section):
    replay_window_days: PositiveInt
    plausible_maximum: dict[str, NonNegativeFloat] = {}     # 'source.column[.field]' -> a contract's limit

    @field_validator("plausible_maximum")
    @classmethod
    def _known_limits(cls, limits: dict[str, float]) -> dict[str, float]:
        from schemas.raw import plausible_ranges

        known = plausible_ranges()
        unknown = sorted(set(limits) - set(known))
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: no plausible maximum of that name in schemas/raw.py "
                             f"(known: {', '.join(sorted(known))})")
        below = sorted(f"{name} ({limit:g} < {known[name].minimum:g})" for name, limit in limits.items()
                       if known[name].minimum is not None and limit < known[name].minimum)
        if below:
            raise ValueError(f"below the contract's minimum, every value would be quarantined: {', '.join(below)}")
        return limits

    def maximums(self) -> dict[str, float]:
        """The plausibility limits in force: the contracts' defaults with this section's changes."""
        from schemas.raw import plausible_maximums

        return plausible_maximums() | self.plausible_maximum


class CleanseConfig(Section):
    default_phone_region: Annotated[str, Strict(), Field(pattern=r"^[A-Z]{2}$")]   # ISO 3166 alpha-2
    reporting_currency: Annotated[str, Strict(), Field(pattern=r"^[A-Z]{3}$")]     # ISO 4217
    session_gap_minutes: PositiveInt
    incremental_events: bool        # bring silver.events up to date from the last day's (jobs/cleanse/incremental.py)
    test_account_email_patterns: tuple[Name, ...]
    email_local_part: Name          # regular expression an address's local part must match to be kept

    @field_validator("email_local_part")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return pattern


class GuardsConfig(Section):
    max_cluster_size: PositiveInt
    large_cluster_size: PositiveInt
    max_large_cluster_share: Share
    max_merged_share_drift: Share
    max_conflicting_share: Share
    max_accounts_per_customer: PositiveInt
    max_changed_id_share: Share


class SurvivorshipConfig(Section):
    source_trust: tuple[Name, ...]          # most trusted first
    rules: dict[str, SurvivorshipRule]      # attribute -> rule


class IdentityConfig(Section):
    match_threshold: Share
    blocking_rules: tuple[Annotated[tuple[Name, ...], Field(min_length=1)], ...] = Field(min_length=1)
    max_block_records: PositiveInt
    max_pairs_per_record: PositiveInt
    training_blocks: tuple[Annotated[tuple[Name, ...], Field(min_length=1)], ...] = Field(min_length=1)
    min_records_to_train: PositiveInt
    training_sample_records: PositiveInt
    training_threads: PositiveInt
    retrain_growth: NonNegativeFloat
    deterministic_recall: Share
    u_sample_pairs: PositiveInt
    em_max_pairs: PositiveInt
    em_max_iterations: PositiveInt
    max_persons_per_contact_point: PositiveInt
    person_evidence: tuple[Name, ...] = Field(min_length=1)
    household_members_apart: bool = True
    person_contradiction: tuple[Name, ...] = ()
    contradiction_max_match_share: Share = 0.02
    refit: bool = False
    incremental: bool = True
    max_accounts_per_device: PositiveInt
    guards: GuardsConfig
    survivorship: SurvivorshipConfig


class GrowthConfig(Section):
    peer_columns: tuple[Name, ...] = Field(min_length=1)   # gold.customer_profile columns: a market segment
    peer_quantile: Share                # the peers' current value a customer could reach
    min_peers: PositiveInt              # smaller segments are compared with every buying customer

    @field_validator("peer_columns")
    @classmethod
    def _profile_columns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from schemas.gold import CUSTOMER_PROFILE

        unknown = [c for c in value if c not in CUSTOMER_PROFILE.column_names]
        if unknown:
            raise ValueError(f"not columns of {CUSTOMER_PROFILE.name}: {', '.join(unknown)}")
        return value


class ClvConfig(Section):
    time_unit: TimeUnit
    holdout_days: PositiveInt
    horizons_days: tuple[PositiveInt, ...] = Field(min_length=1)
    clv_horizon_days: PositiveInt
    period_days: PositiveInt
    annual_discount_rate: NonNegativeFloat
    margin: Share
    referral_credit: Share
    referral_prior_years: NonNegativeFloat  # weight of everyone's referral rate in a customer's own
    growth: GrowthConfig
    churn_window_days: PositiveInt
    churn_max_iterations: PositiveInt      # GBT boosting rounds of the churn classifier
    churn_max_depth: PositiveInt           # depth of each of its trees
    intent_window_days: PositiveInt        # purchase intent: P(a purchase in this many days)
    intent_fit_sample: PositiveInt         # its logistic regression is fitted on at most this many customers
    max_holdout_mae_increase: NonNegativeFloat


Score = Annotated[int, Strict(), Field(ge=1, le=5)]


class RfmSegmentConfig(Section):
    name: Name
    r: tuple[Score, Score]      # inclusive range of r_score
    f: tuple[Score, Score]      # inclusive range of f_score

    @model_validator(mode="after")
    def _ordered(self) -> RfmSegmentConfig:
        if self.r[0] > self.r[1] or self.f[0] > self.f[1]:
            raise ValueError(f"{self.name}: a score range is [low, high]")
        return self


class ClustersConfig(Section):
    k_range: tuple[PositiveInt, PositiveInt]   # inclusive
    fit_sample: PositiveInt
    seed: Int

    @field_validator("k_range")
    @classmethod
    def _k_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not 2 <= value[0] <= value[1]:
            raise ValueError("need 2 <= low <= high (K-means needs at least two clusters)")
        return value


class ValueTiersConfig(Section):
    high_share: Share
    medium_share: Share

    @model_validator(mode="after")
    def _ordered(self) -> ValueTiersConfig:
        if not 0 < self.high_share < self.medium_share <= 1:
            raise ValueError("need 0 < high_share < medium_share <= 1")
        return self


class StrategyConfig(Section):
    investment: Name
    strategy: Name


class StrategiesConfig(Section):
    """One per quadrant of the value matrix (`jobs.segments.segmentation.QUADRANTS`)."""

    platinum: StrategyConfig
    gold: StrategyConfig
    iron: StrategyConfig
    lead: StrategyConfig


class ValueMatrixConfig(Section):
    current_quantile: Share
    potential_quantile: Share
    strategies: StrategiesConfig


class IntentBandsConfig(Section):
    high: Share      # purchase_probability at least this: high purchase intent...
    medium: Share    # ...at least this: medium; else low

    @model_validator(mode="after")
    def _ordered(self) -> IntentBandsConfig:
        if self.medium > self.high:
            raise ValueError("medium must be at most high")
        return self


class SegmentsConfig(Section):
    quantile_error: Annotated[float, Strict(), Field(ge=0, lt=1)]
    rfm_segments: tuple[RfmSegmentConfig, ...]
    clusters: ClustersConfig
    value_tiers: ValueTiersConfig
    value_matrix: ValueMatrixConfig
    intent_bands: IntentBandsConfig

    @field_validator("rfm_segments")
    @classmethod
    def _cover_every_score_pair(cls, rules: tuple[RfmSegmentConfig, ...]) -> tuple[RfmSegmentConfig, ...]:
        # The first matching rule names a customer's segment: a pair no rule covers would leave it unnamed.
        uncovered = [(r, f) for r in range(1, 6) for f in range(1, 6)
                     if not any(x.r[0] <= r <= x.r[1] and x.f[0] <= f <= x.f[1] for x in rules)]
        if uncovered:
            raise ValueError(f"(r_score, f_score) {uncovered} without a segment")
        return rules


LifecycleStage = Literal["prospect", "new", "growing", "mature", "at_risk", "churned"]
LifecycleEvent = Literal["first_purchase", "repeat_purchase", "stable_buying", "warning", "lapsed", "recovered",
                         "reactivated"]


class TransitionConfig(Section):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: tuple[LifecycleStage, ...] = Field(alias="from", min_length=1)
    target: tuple[LifecycleStage, ...] = Field(alias="to", min_length=1)
    when: LifecycleEvent


class RelationshipConfig(Section):
    exploration_max_days: PositiveInt      # exploring while the first purchase is this recent
    trend_days: PositiveInt                # purchases in the last window against the one before it
    stability_min_purchases: PositiveInt   # stable: at least this many purchase days over the two windows
    decline_max_trend: Share               # declining: the last window's purchases at most this share of the one before
    long_term_days: PositiveInt            # long-term retention: first to last purchase at least this long


class LifecycleConfig(Section):
    churned_max_p_alive: Share
    churned_after_days: PositiveInt
    at_risk_max_p_alive: Share
    at_risk_min_churn_probability: Share
    at_risk_after_days: PositiveInt
    new_max_purchases: NonNegativeInt
    mature_min_purchases: PositiveInt
    mature_min_tenure_days: NonNegativeInt
    transitions: tuple[TransitionConfig, ...] = Field(min_length=1)
    actions: dict[LifecycleStage, Name]
    relationship: RelationshipConfig

    @model_validator(mode="after")
    def _every_stage_has_an_action(self) -> LifecycleConfig:
        missing = sorted(set(LifecycleStage.__args__) - set(self.actions))
        if missing:
            raise ValueError(f"actions: no action for {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _churned_is_stricter(self) -> LifecycleConfig:
        # Stages are tested churned first: looser churned thresholds would leave at_risk unreachable.
        if self.churned_max_p_alive > self.at_risk_max_p_alive or self.churned_after_days < self.at_risk_after_days:
            raise ValueError("churned thresholds must be stricter than at_risk ones")
        return self


class KpiConfig(Section):
    periods: dict[KpiGrain, PositiveInt] = Field(min_length=1)   # periods reported per grain
    attribution_days: PositiveInt


class MiningConfig(Section):
    min_support: Annotated[float, Strict(), Field(gt=0, le=1)]
    min_confidence: Share
    max_rules: PositiveInt


class BasketsConfig(Section):
    levels: dict[BasketLevel, MiningConfig] = Field(min_length=1)
    cross_sell_top_n: PositiveInt
    min_lift: NonNegativeFloat


class InsightsConfig(Section):
    kpi: KpiConfig
    baskets: BasketsConfig


class AlertsConfig(Section):
    email_to: tuple[EmailStr, ...] = ()


class PiiConfig(Section):
    # Relative to the project root; empty (e.g. CDP__PII__LOCAL_KEY_DIR=) means none.
    local_key_dir: Annotated[Path | None, BeforeValidator(lambda v: v or None)] = None


class QualityConfig(Section):
    build_data_docs: Annotated[bool, Strict()]


class LdapConfig(Section):
    url: Name                    # hive.server2.authentication.ldap.url, e.g. ldaps://ldap.example.com:636
    base_dn: str | None = None   # ...ldap.baseDN: the user's DN is uid=<user>,<base_dn>
    domain: str | None = None    # ...ldap.Domain: the user binds as <user>@<domain> (Active Directory)


class TlsConfig(Section):
    enabled: Annotated[bool, Strict()] = False
    keystore: Path | None = None                      # a Java keystore (JKS or PKCS12) with the server's key
    keystore_password_env: Name = "CDP_SERVING_KEYSTORE_PASSWORD"   # the variable holding its password

    @model_validator(mode="after")
    def _keystore_when_enabled(self) -> TlsConfig:
        if self.enabled and self.keystore is None:
            raise ValueError("tls.enabled needs tls.keystore")
        return self


class ServingConfig(Section):
    host: Name
    port: Port
    authentication: Literal["password", "ldap"] = "password"
    ldap: LdapConfig | None = None
    tls: TlsConfig = TlsConfig()
    # Users of the users file that `cdp serve --role silver_reader` admits; nobody by default.
    silver_readers: tuple[Name, ...] = ()
    silver_reader_port: Port = 10001

    @model_validator(mode="after")
    def _ldap_when_chosen(self) -> ServingConfig:
        if self.authentication == "ldap" and self.ldap is None:
            raise ValueError("authentication: ldap needs the ldap: settings (url, and base_dn or domain)")
        return self


class DestinationConfig(Section):
    contact: ContactMode
    fields: tuple[ContactField, ...] = Field(min_length=1)
    consent: tuple[ConsentChannel, ...] = Field(min_length=1)


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class AudienceConfig(Section):
    """One audience of conf/audiences.yaml: who (a condition over the audience view, schemas/audience.py),
    where to (a destination of export.destinations, in a format) and when (its schedule)."""

    name: Annotated[str, Strict(), Field(pattern=r"^[A-Za-z0-9_-]+$")]    # also a folder and file name part
    condition: Name
    destination: Name
    format: ExportFormat = "csv"
    # daily; weekly:<weekday>; monthly:<day of month 1-28>
    schedule: Annotated[str, Strict(), Field(pattern=r"^(daily|weekly:(" + "|".join(WEEKDAYS)
                                             + r")|monthly:([1-9]|1[0-9]|2[0-8]))$")] = "daily"

    @model_validator(mode="after")
    def _one_expression(self) -> AudienceConfig:
        from jobs.delivery.conditions import check_condition

        check_condition(self.name, self.condition)
        return self

    def due(self, day: date) -> bool:
        """Whether the audience syncs on `day` (a run's logical date)."""
        kind, _, when = self.schedule.partition(":")
        if kind == "weekly":
            return WEEKDAYS[day.weekday()] == when
        return kind == "daily" or day.day == int(when)


class ExportConfig(Section):
    default_destination: Name
    destinations: dict[str, DestinationConfig] = {}
    # Relative to the project root; the loader reads its `audiences:` into `audiences`, after any given here.
    audiences_file: Path | None = None
    audiences: tuple[AudienceConfig, ...] = ()

    @model_validator(mode="after")
    def _destinations_exist(self) -> ExportConfig:
        named = {self.default_destination} | {a.destination for a in self.audiences}
        unknown = sorted(named - set(self.destinations))
        if unknown:
            raise ValueError(f"destination(s) {unknown} not in export.destinations {sorted(self.destinations)}")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> ExportConfig:
        names = [a.name for a in self.audiences]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"audience name(s) {repeated} defined more than once")
        return self

    def audience(self, name: str) -> AudienceConfig:
        for audience in self.audiences:
            if audience.name == name:
                return audience
        raise KeyError(f"unknown audience {name!r}; audiences: {', '.join(a.name for a in self.audiences)}")


class ClusterConfig(Section):
    host: Name
    port: Port
    ui_port: Port
    workers: PositiveInt
    worker_cores: PositiveInt
    worker_memory: Annotated[str, Strict(), Field(pattern=r"^\d+[kKmMgGtT]?$")]   # Spark's size syntax, e.g. 6g


class SimulatedBtydConfig(Section):
    r: PositiveFloat
    alpha: PositiveFloat
    a: PositiveFloat
    b: PositiveFloat


class SimulatedSpendConfig(Section):
    p: PositiveFloat
    q: PositiveFloat
    gamma: PositiveFloat


class SimulationConfig(Section):
    btyd: SimulatedBtydConfig
    spend: SimulatedSpendConfig
    history_days: PositiveInt
    seed: Int


class BenchTargets(Section):
    pipeline_seconds: PositiveFloat
    pipeline_customers: PositiveInt
    peak_memory_gib: PositiveFloat
    # Customers -> speed-up; keys are lax so that they may come from an environment override as text.
    clv_speedup: dict[Annotated[int, Field(gt=0)], PositiveFloat]
    parameter_tolerance: NonNegativeFloat
    rfm_speedup: dict[Annotated[int, Field(gt=0)], PositiveFloat]
    # Records' people -> our identity time over Splink's, at most (the largest size at or under a list's).
    identity_time_ratio: dict[Annotated[int, Field(gt=0)], PositiveFloat]
    typo_heavy_f1: Share
    identity_precision: Share
    identity_day_two_seconds: PositiveFloat
    identity_ids_kept: Share
    gate_share: Share
    day_two_seconds: PositiveFloat            # day two of the pipeline at pipeline_customers
    demo_seconds: PositiveFloat               # `cdp run` of the demo, in process
    demo_airflow_seconds: PositiveFloat       # `cdp airflow-run` of the demo (the path of `make run`)

    def time_ratio(self, people: int) -> float:
        return self.identity_time_ratio[max((n for n in self.identity_time_ratio if n <= people),
                                            default=min(self.identity_time_ratio))]


class BenchConfig(Section):
    pipeline_customers: tuple[PositiveInt, ...]
    demo_customers: PositiveInt
    transaction_customers: tuple[PositiveInt, ...]
    identity_list_people: tuple[PositiveInt, ...]
    spark_conf: dict[str, SparkValue] = {}
    identity_threads: PositiveInt
    identity_memory: Annotated[str, Strict(), Field(pattern=r"^\d+[KMGT]?B$")]   # DuckDB's size syntax, e.g. 8GB
    simulation: SimulationConfig
    targets: BenchTargets

