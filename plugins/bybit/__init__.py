"""Bybit venue plugin: spot and USDT/USDC linear perpetuals through ccxt."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from loguru import logger

from perpcarry.fees import TableFeeModel
from perpcarry.hookspecs import hookimpl
from perpcarry.settings import VenueConfig
from perpcarry.venue import VenueCapabilities, VenueContext, VenueSpec

logger.disable(__name__)

VENUE_ID = "bybit"


class BybitConfig(VenueConfig):
    """``[venues.bybit]``."""


def _client(config: BybitConfig, context: VenueContext):
    from perpcarry_bybit.venue import BybitVenue  # ccxt loads only when a client is built

    return BybitVenue(config, context)


@hookimpl
def register_venues(register):
    register(VenueSpec(
        venue_id=VENUE_ID,
        display_name="Bybit",
        config_model=BybitConfig,
        capabilities=VenueCapabilities(
            spot=True, linear_perp=True, bulk_funding=True, bulk_books=True,
            funding_history=True, funding_intervals_hours=(1, 2, 4, 8)),
        factory=_client,
        offline_snapshot=Path(__file__).parent / "snapshot" / "snapshot.json",
    ))


@hookimpl
def register_fee_models(register):
    # Non-VIP rates, bybit.com/en/help-center fee structure, as published late 2026.
    register(TableFeeModel(
        venue_id=VENUE_ID,
        spot_maker=Decimal("0.0010"), spot_taker=Decimal("0.0010"),
        perp_maker=Decimal("0.0002"), perp_taker=Decimal("0.00055"),
        detail="Bybit non-VIP schedule, 2026-11"))
