"""Binance venue plugin: spot and USDⓈ-M perpetuals through ccxt."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from loguru import logger

from perpcarry.backtest.sources import SupervikCsv
from perpcarry.config.settings import FeeOverride, VenueConfig
from perpcarry.domain.types import FeeSchedule
from perpcarry.money.fees import FeeRates, TableFeeModel
from perpcarry.plugins.hookspecs import hookimpl
from perpcarry.venues.orders import OrderCapabilities, Wallet
from perpcarry.venues.protocol import VenueCapabilities, VenueContext, VenueSpec
from perpcarry_binance.history_files import DailyKlinesCsv, FundingCsv, FundingRateJson
from perpcarry_binance.streams import STREAMS

logger.disable(__name__)

VENUE_ID = "binance"

# Published VIP tiers, in %, read 2026-11-21.
# Spot: Binance announcement "Binance VIP Program Upgrade: Enjoy VIP 9 Equivalent Spot Trading
#   Fees", 2022-05-31 (binance.com/en/support/announcement/40669f3da342426c87b083b659673316):
#   regular 0.1000/0.1000, VIP 1 0.0900/0.1000, VIP 2 0.0800/0.1000; unofficial 2026 pages
#   (i-binance.com/en/w/binance-vip-level) still list these three rows.
# USDⓈ-M: the documented VIP table in nautechsystems/nautilus_trader
#   crates/adapters/binance/src/common/fees.rs @ 27a8e54e; VIP 1-9 equal ccxt 4.5.90's binance
#   linear tiers, and regular 0.02/0.05 is binance.com/en/fee/futureFee as indexed 2026-10-12
#   (loweef Crypto Futures Fee Index).
# VIP 3-9 are left out: their spot rates appear only on unofficial pages that disagree.
FEE_TIERS = {
    #                        spot maker, spot taker, perp maker, perp taker
    "VIP0": FeeRates.percent("0.1000", "0.1000", "0.0200", "0.0500"),
    "VIP1": FeeRates.percent("0.0900", "0.1000", "0.0160", "0.0400"),
    "VIP2": FeeRates.percent("0.0800", "0.1000", "0.0140", "0.0350"),
}
FEE_TIERS_DETAIL = ("Binance VIP schedule (spot: Binance announcement 2022-05-31; USDⓈ-M: "
                    "VIP table in nautilus_trader @ 27a8e54e), read 2026-11-21")
# Paying USDⓈ-M fees in BNB takes 10 % off ("Binance Futures Fee Structure & Fee
# Calculations", binance.com/en/support/faq/360033544231, read 2026-11-21).
BNB_FUTURES_DISCOUNT = Decimal("0.9")


class BinanceFees(FeeOverride):
    """``[venues.binance.fees]``."""

    tiers = tuple(FEE_TIERS)


class BinanceConfig(VenueConfig):
    """``[venues.binance]``."""

    # Pay USDⓈ-M fees in BNB: 10 % off the futures schedule.
    bnb_fee_discount: bool = False
    fees: BinanceFees = BinanceFees()


@dataclass(frozen=True)
class BinanceFeeModel(TableFeeModel):
    def adjusted(self, schedule: FeeSchedule, config: BinanceConfig) -> FeeSchedule:
        """The BNB discount on the futures side, of a tier's rates and of the account's
        (``/fapi/v1/commissionRate`` gives the rates before the discount)."""
        if not config.bnb_fee_discount:
            return schedule
        return replace(schedule, perp_maker=schedule.perp_maker * BNB_FUTURES_DISCOUNT,
                       perp_taker=schedule.perp_taker * BNB_FUTURES_DISCOUNT,
                       source_detail=f"{schedule.source_detail}, futures 10% BNB discount")


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
        streams=STREAMS,
        offline_snapshot=Path(__file__).parent / "snapshot" / "snapshot.json",
        # Spot, USDⓈ-M futures and funding are separate wallets: margin for a short is
        # transferred from spot first (POST /sapi/v1/asset/transfer, types MAIN_UMFUTURE,
        # UMFUTURE_MAIN, FUNDING_MAIN...). newClientOrderId allows 36 characters (spot and
        # USDⓈ-M "New Order" docs); spot testnet and futures testnet are the sandbox.
        # Read 2026-12-06.
        order_capabilities=OrderCapabilities(
            wallets=(Wallet.SPOT, Wallet.FUTURES, Wallet.FUNDING), separate_wallets=True,
            client_order_id_max=36, sandbox=True),
        # The session stands for 2025-09-09 00:05 UTC: quotes of the 00:00 settlement, and
        # 30 days of history up to it, published SETTLEMENT_PUBLISH_LAG (5 min) after it
        # (cassettes/binance/PROVENANCE.md).
        offline_instant=datetime(2025, 9, 9, 0, 5, tzinfo=UTC),
    ))


@hookimpl
def register_fee_models(register):
    register(BinanceFeeModel(VENUE_ID, *FEE_TIERS["VIP0"],
                             detail=f"regular tier VIP0 of the {FEE_TIERS_DETAIL}",
                             tiers=FEE_TIERS, tiers_detail=FEE_TIERS_DETAIL))


@hookimpl
def register_history_sources(register):
    """Binance's own funding files (fundingRate JSON, its CSV exports with their klines)
    and supervik's Binance CSVs, for ``backtest --data``."""
    for source in (FundingRateJson(), FundingCsv(), DailyKlinesCsv(), SupervikCsv(VENUE_ID)):
        register(source)
