"""Example third-party perpcarry plugin: Hyperliquid spot and USDC perpetuals over ccxt.

This module is what the ``perpcarry`` entry point names (see ``pyproject.toml``). It holds
only the hook implementations, the venue's config model and its default fee table; it
imports nothing heavy, so ``perpcarry plugins`` stays fast. The client lives in
:mod:`perpcarry_example_hyperliquid.venue` and is imported when a client is built.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

from loguru import logger
from pydantic import SecretStr

from perpcarry.config.settings import VenueConfig
from perpcarry.money.fees import TableFeeModel
from perpcarry.plugins.hookspecs import hookimpl
from perpcarry.venues.protocol import VenueCapabilities, VenueContext, VenueSpec

# A library never configures log sinks; the perpcarry CLI enables what it shows.
logger.disable(__name__)

VENUE_ID = "hyperliquid"


class HyperliquidConfig(VenueConfig):
    """``[venues.hyperliquid]``. Hyperliquid has no API key/secret pair: an account is a
    wallet address, and requests are signed with that wallet's (or an API wallet's) key."""

    required_credentials: ClassVar[tuple[str, ...]] = ("wallet_address", "private_key")

    wallet_address: SecretStr | None = None
    private_key: SecretStr | None = None


def _client(config: HyperliquidConfig, context: VenueContext):
    from perpcarry_example_hyperliquid.venue import HyperliquidVenue  # ccxt loads only here

    return HyperliquidVenue(config, context)


@hookimpl
def register_venues(register):
    register(VenueSpec(
        venue_id=VENUE_ID,
        display_name="Hyperliquid (example plugin)",
        config_model=HyperliquidConfig,
        capabilities=VenueCapabilities(
            spot=True, linear_perp=True,
            # metaAndAssetCtxs answers every perp's funding in one request ...
            bulk_funding=True,
            # ... but there is no bulk best-bid/ask endpoint (l2Book is one coin a request).
            bulk_books=False,
            funding_history=True,
            # Every Hyperliquid perp settles funding hourly.
            funding_intervals_hours=(1,)),
        factory=_client,
        offline_snapshot=Path(__file__).parent / "snapshot" / "snapshot.json",
        # The session stands for 2025-04-17 12:05 UTC: the asset contexts of 12:00 (their
        # HTTP Date) and the 12:00 settlement, published 5 minutes after it
        # (cassettes/PROVENANCE.md).
        offline_instant=datetime(2025, 4, 17, 12, 5, tzinfo=UTC),
    ))


@hookimpl
def register_fee_models(register):
    # Tier 0 (< $5M 14-day volume) base rates, Hyperliquid docs "Trading > Fees"
    # (hyperliquid.gitbook.io/hyperliquid-docs/trading/fees), as also encoded in
    # ccxt 4.5.90's hyperliquid `fees`; read 2026-11. Perps 0.045 % taker / 0.015 % maker,
    # spot 0.070 % taker / 0.040 % maker.
    register(TableFeeModel(
        venue_id=VENUE_ID,
        spot_maker=Decimal("0.0004"), spot_taker=Decimal("0.0007"),
        perp_maker=Decimal("0.00015"), perp_taker=Decimal("0.00045"),
        detail="Hyperliquid tier-0 schedule, docs read 2026-11"))
