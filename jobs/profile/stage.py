"""The profile stage: the published identity graph + silver -> gold.customer_profile, gated, published."""

from __future__ import annotations

from jobs.platform.context import RunContext
from jobs.profile.customer_profile import Survivorship, build_customer_profile
from schemas import gold


def run_profile(ctx: RunContext) -> dict[str, int]:
    """Rebuild the customer profile from the identity graph and silver; publish it if it passes."""
    survivorship = Survivorship.from_conf(ctx.settings.identity.survivorship)
    profile = ctx.stage_overwrite(build_customer_profile(ctx.read(gold.IDENTITY_GRAPH), ctx.silver_sources(),
                                                         survivorship, ctx.as_of), gold.CUSTOMER_PROFILE)
    ctx.gate({gold.CUSTOMER_PROFILE: profile})
    ctx.publish()
    return {gold.CUSTOMER_PROFILE.name: profile.count()}
