"""Bybit venue plugin: spot and USDT/USDC linear perpetuals through ccxt."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from loguru import logger

from perpcarry.backtest.sources import SupervikCsv
from perpcarry.config.settings import FeeOverride, VenueConfig
from perpcarry.money.fees import FeeRates, TableFeeModel
from perpcarry.plugins.hookspecs import hookimpl
from perpcarry.venues.orders import OrderCapabilities, Wallet
from perpcarry.venues.protocol import VenueCapabilities, VenueContext, VenueSpec
from perpcarry_bybit.streams import STREAMS

logger.disable(__name__)

VENUE_ID = "bybit"

# Published VIP levels, in %: Bybit Help Center "Trading Fee Structure" (article 000001634,
# read 2026-11-21 through the mirror www.bybitgum.org/en-US/help-center/bybitHC_Article?id=
# 000001634), columns "Spot Trading" (crypto pairs) and "Perpetual & Futures Contracts Trading";
# Bybit lists taker before maker. Bybit notes that actual rates may vary by region.
FEE_TIERS = {
    #                        spot maker, spot taker, perp maker, perp taker
    "VIP0": FeeRates.percent("0.1000", "0.1000", "0.0200", "0.0550"),
    "VIP1": FeeRates.percent("0.0675", "0.0800", "0.0180", "0.0400"),
    "VIP2": FeeRates.percent("0.0650", "0.0775", "0.0160", "0.0375"),
    "VIP3": FeeRates.percent("0.0625", "0.0750", "0.0140", "0.0350"),
    "VIP4": FeeRates.percent("0.0500", "0.0600", "0.0120", "0.0320"),
    "VIP5": FeeRates.percent("0.0400", "0.0500", "0.0100", "0.0320"),
    "SupremeVIP": FeeRates.percent("0.0300", "0.0450", "0.0000", "0.0300"),
}
FEE_TIERS_DETAIL = ("Bybit VIP schedule (Help Center \"Trading Fee Structure\", article "
                    "000001634), read 2026-11-21")


class BybitFees(FeeOverride):
    """``[venues.bybit.fees]``."""

    tiers = tuple(FEE_TIERS)


class BybitConfig(VenueConfig):
    """``[venues.bybit]``."""

    fees: BybitFees = BybitFees()


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
        streams=STREAMS,
        offline_snapshot=Path(__file__).parent / "snapshot" / "snapshot.json",
        # A Unified Trading Account holds spot and derivatives in one wallet (accountType
        # UNIFIED); the funding wallet (FUND) is apart, reached by an internal transfer
        # (POST /v5/asset/transfer/inter-transfer). orderLinkId allows 36 characters
        # (v5 "Place Order"); testnet is the sandbox. Read 2026-12-06.
        order_capabilities=OrderCapabilities(
            wallets=(Wallet.UNIFIED, Wallet.FUNDING), separate_wallets=False,
            client_order_id_max=36, sandbox=True),
        # The session stands for 2026-01-20 08:05 UTC: rates at the 08:00 settlement and
        # history up to it, published SETTLEMENT_PUBLISH_LAG (5 min) after it
        # (cassettes/bybit/PROVENANCE.md).
        offline_instant=datetime(2026, 1, 20, 8, 5, tzinfo=UTC),
    ))


@hookimpl
def register_fee_models(register):
    register(TableFeeModel(VENUE_ID, *FEE_TIERS["VIP0"],
                           detail=f"regular tier VIP0 of the {FEE_TIERS_DETAIL}",
                           tiers=FEE_TIERS, tiers_detail=FEE_TIERS_DETAIL))


@hookimpl
def register_history_sources(register):
    """Supervik's Bybit CSVs, for ``backtest --data``."""
    register(SupervikCsv(VENUE_ID))
