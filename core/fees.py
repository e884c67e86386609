"""Fee schedules: the venue's default table, config overrides, and the account's own rates."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from perpcarry.settings import VenueConfig
from perpcarry.types import FeeSchedule, FeeSource
from perpcarry.venue import MarketDataVenue


@dataclass(frozen=True)
class TableFeeModel:
    """A venue's published default schedule. Resolution order: explicit rates in config,
    else the account's rates (when credentials are configured), else this table."""

    venue_id: str
    spot_maker: Decimal
    spot_taker: Decimal
    perp_maker: Decimal
    perp_taker: Decimal
    detail: str

    def default_schedule(self, config: VenueConfig) -> FeeSchedule:
        return FeeSchedule(self.venue_id, self.spot_maker, self.spot_taker, self.perp_maker,
                           self.perp_taker, FeeSource.DEFAULT, self.detail)

    async def fee_schedule(self, config: VenueConfig,
                           venue: MarketDataVenue | None) -> FeeSchedule:
        schedule = None
        if venue is not None and config.has_credentials:
            schedule = await venue.fetch_fee_schedule()
        if schedule is None:
            schedule = self.default_schedule(config)
        overrides = {k: v for k, v in config.fees.model_dump().items() if v is not None}
        if overrides:
            names = ", ".join(sorted(overrides))
            schedule = replace(schedule, **overrides, source=FeeSource.CONFIG,
                               source_detail=f"[venues.{self.venue_id}.fees] {names} over "
                                             f"{schedule.describe()}")
        return schedule
