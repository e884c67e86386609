"""Fee schedules: the venue's published tiers, config overrides, and the account's own rates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, NamedTuple

from perpcarry.config.settings import VenueConfig
from perpcarry.domain.errors import ConfigError, InvalidResponse
from perpcarry.domain.parsing import MalformedField, decimal_field
from perpcarry.domain.types import FeeSchedule, FeeSource
from perpcarry.venues.protocol import MarketDataVenue

PERCENT = Decimal(100)


class FeeRates(NamedTuple):
    """One row of a venue's published schedule: maker and taker fees (fractions of notional)
    for spot and perp."""

    spot_maker: Decimal
    spot_taker: Decimal
    perp_maker: Decimal
    perp_taker: Decimal

    @classmethod
    def percent(cls, spot_maker: str, spot_taker: str, perp_maker: str,
                perp_taker: str) -> FeeRates:
        """Rates as the venues publish them, in percent ("0.0200" = 0.02 %)."""
        return cls(*(Decimal(rate) / PERCENT
                     for rate in (spot_maker, spot_taker, perp_maker, perp_taker)))


@dataclass(frozen=True)
class TableFeeModel:
    """A venue's published schedule. Resolution order: a tier named in config, else the
    account's rates (when credentials are configured), else the default table; the venue's
    own adjustment (:meth:`adjusted`) applies to whichever was chosen, and explicit rates in
    config then replace single fields."""

    venue_id: str
    spot_maker: Decimal
    spot_taker: Decimal
    perp_maker: Decimal
    perp_taker: Decimal
    detail: str
    # Published tiers ``[venues.<id>.fees] tier`` may name, and where they were read.
    tiers: Mapping[str, FeeRates] = field(default_factory=dict)
    tiers_detail: str = ""

    def table_schedule(self, config: VenueConfig) -> FeeSchedule:
        """The configured tier's published rates, else the default table."""
        tier = config.fees.tier
        if tier is None:
            return FeeSchedule(self.venue_id, self.spot_maker, self.spot_taker, self.perp_maker,
                               self.perp_taker, FeeSource.DEFAULT, self.detail)
        if tier not in self.tiers:
            # Only when another plugin replaced the venue's fee model with one without tiers.
            raise ConfigError(f"venues.{self.venue_id}.fees.tier: the fee model in use "
                              f"({self.detail}) has no tier {tier!r}")
        return FeeSchedule(self.venue_id, *self.tiers[tier], FeeSource.CONFIG,
                           f"tier {tier} of the {self.tiers_detail}")

    def adjusted(self, schedule: FeeSchedule, config: VenueConfig) -> FeeSchedule:
        """What the venue takes off (or adds to) the chosen rates, such as a discount for
        paying fees in its token; nothing by default."""
        return schedule

    async def fee_schedule(self, config: VenueConfig,
                           venue: MarketDataVenue | None) -> FeeSchedule:
        """The schedule to use, in the order the class docstring gives, with its source."""
        schedule = None
        if config.fees.tier is None and venue is not None and config.has_credentials:
            schedule = await venue.fetch_fee_schedule()
        if schedule is None:
            schedule = self.table_schedule(config)
        schedule = self.adjusted(schedule, config)
        explicit = config.fees.model_dump(exclude={"tier"}, exclude_none=True)
        if explicit:
            names = ", ".join(sorted(explicit))
            schedule = replace(schedule, **explicit, source=FeeSource.CONFIG,
                               source_detail=f"[venues.{self.venue_id}.fees] {names} over "
                                             f"{schedule.describe()}")
        return schedule


def account_fee_schedule(venue_id: str, spot: dict[str, Any], perp: dict[str, Any],
                         detail: str) -> FeeSchedule:
    """The account's own rates from ccxt's trading-fee structures (``maker``/``taker``
    fractions) of one spot and one perp market. A missing or malformed rate is the venue's
    InvalidResponse, never a zero."""
    rates: list[Decimal] = []
    for leg, fee in (("spot", spot), ("perp", perp)):
        try:
            rates += (decimal_field(fee, "maker"), decimal_field(fee, "taker"))
        except MalformedField as err:
            raise InvalidResponse(venue_id, f"invalid {leg} trading fee: {err}") from None
    return FeeSchedule(venue_id, *rates, FeeSource.ACCOUNT, detail)
