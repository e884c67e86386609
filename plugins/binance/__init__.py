"""Binance venue plugin: spot and USDⓈ-M perpetuals through ccxt."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from loguru import logger

from perpcarry.fees import TableFeeModel
from perpcarry.hookspecs import hookimpl
from perpcarry.settings import VenueConfig
from perpcarry.types import FeeSchedule
from perpcarry.venue import VenueCapabilities, VenueContext, VenueSpec

logger.disable(__name__)

VENUE_ID = "binance"


class BinanceConfig(VenueConfig):
    """``[venues.binance]``."""

    # Pay USDⓈ-M fees in BNB: 10 % off the futures schedule.
    bnb_fee_discount: bool = False


@dataclass(frozen=True)
class BinanceFeeModel(TableFeeModel):
    def default_schedule(self, config: BinanceConfig) -> FeeSchedule:
        schedule = super().default_schedule(config)
        if not config.bnb_fee_discount:
            return schedule
        discount = Decimal("0.9")
        return FeeSchedule(schedule.venue, schedule.spot_maker, schedule.spot_taker,
                           schedule.perp_maker * discount, schedule.perp_taker * discount,
                           schedule.source, f"{schedule.source_detail}, futures 10% BNB discount")


def _client(config: BinanceConfig, context: VenueContext):
    from perpcarry_binance.venue import BinanceVenue  # ccxt loads only when a client is built

    return BinanceVenue(config, context)


@hookimpl
def register_venues(register):
    register(VenueSpec(
        venue_id=VENUE_ID,
        display_name="Binance",
        config_model=BinanceConfig,
        capabilities=VenueCapabilities(
            spot=True, linear_perp=True, bulk_funding=True, bulk_books=True,
            funding_history=True, funding_intervals_hours=(1, 2, 4, 8)),
        factory=_client,
        offline_snapshot=Path(__file__).parent / "snapshot" / "snapshot.json",
    ))


@hookimpl
def register_fee_models(register):
    # Regular user (VIP0) rates, binance.com/en/fee/schedule and /en/fee/futureFee,
    # as published late 2026.
    register(BinanceFeeModel(
        venue_id=VENUE_ID,
        spot_maker=Decimal("0.0010"), spot_taker=Decimal("0.0010"),
        perp_maker=Decimal("0.0002"), perp_taker=Decimal("0.0005"),
        detail="Binance regular (VIP0) schedule, 2026-11"))
