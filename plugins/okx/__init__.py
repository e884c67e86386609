"""OKX venue plugin: spot and USDT/USDC-margined swaps through ccxt."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import ClassVar

from loguru import logger
from pydantic import SecretStr

from perpcarry.fees import TableFeeModel
from perpcarry.hookspecs import hookimpl
from perpcarry.settings import VenueConfig
from perpcarry.venue import VenueCapabilities, VenueContext, VenueSpec

logger.disable(__name__)

VENUE_ID = "okx"


class OkxConfig(VenueConfig):
    """``[venues.okx]``. OKX API keys come with a passphrase."""

    required_credentials: ClassVar[tuple[str, ...]] = ("api_key", "secret", "passphrase")

    passphrase: SecretStr | None = None


def _client(config: OkxConfig, context: VenueContext):
    from perpcarry_okx.venue import OkxVenue  # ccxt loads only when a client is built

    return OkxVenue(config, context)


@hookimpl
def register_venues(register):
    register(VenueSpec(
        venue_id=VENUE_ID,
        display_name="OKX",
        config_model=OkxConfig,
        capabilities=VenueCapabilities(
            spot=True, linear_perp=True, bulk_funding=True, bulk_books=True,
            funding_history=True, funding_intervals_hours=(1, 2, 4, 8)),
        factory=_client,
        offline_snapshot=Path(__file__).parent / "snapshot" / "snapshot.json",
    ))


@hookimpl
def register_fee_models(register):
    # Regular user Lv1 rates, okx.com/fees, as published late 2026.
    register(TableFeeModel(
        venue_id=VENUE_ID,
        spot_maker=Decimal("0.0008"), spot_taker=Decimal("0.0010"),
        perp_maker=Decimal("0.0002"), perp_taker=Decimal("0.0005"),
        detail="OKX regular Lv1 schedule, 2026-11"))
