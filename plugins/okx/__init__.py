"""OKX venue plugin: spot and USDT/USDC-margined swaps through ccxt."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from loguru import logger
from pydantic import SecretStr

from perpcarry.config.settings import FeeOverride, VenueConfig
from perpcarry.money.fees import FeeRates, TableFeeModel
from perpcarry.plugins.hookspecs import hookimpl
from perpcarry.venues.orders import OrderCapabilities, Wallet
from perpcarry.venues.protocol import VenueCapabilities, VenueContext, VenueSpec
from perpcarry_okx.history_files import ScreenerArchive
from perpcarry_okx.streams import STREAMS

logger.disable(__name__)

VENUE_ID = "okx"

# Published tiers, in %, read 2026-11-21. Spot (USDT/USDⓈ/crypto pairs): okx.com/fees, Lv1
# 0.080/0.100. USDT-margined perpetuals: Lv1 0.020/0.050, okx.com/fees as indexed 2026-10-16
# (loweef Crypto Futures Fee Index). Only Lv1 is shipped: the stored okx.com/fees page lists the
# spot rates of Lv2-Lv5 and VIP 1-8 but not their perpetual rates, and a tier needs both.
FEE_TIERS = {
    #                       spot maker, spot taker, perp maker, perp taker
    "Lv1": FeeRates.percent("0.080", "0.100", "0.020", "0.050"),
}
FEE_TIERS_DETAIL = "OKX fee schedule (okx.com/fees), read 2026-11-21"


class OkxFees(FeeOverride):
    """``[venues.okx.fees]``."""

    tiers = tuple(FEE_TIERS)


class OkxConfig(VenueConfig):
    """``[venues.okx]``. OKX API keys come with a passphrase."""

    required_credentials: ClassVar[tuple[str, ...]] = ("api_key", "secret", "passphrase")

    passphrase: SecretStr | None = None
    fees: OkxFees = OkxFees()


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
        streams=STREAMS,
        offline_snapshot=Path(__file__).parent / "snapshot" / "snapshot.json",
        # The trading account (account type 18) holds spot and swaps in one wallet; the
        # funding account (6) is apart (POST /api/v5/asset/transfer). clOrdId allows 1-32
        # letters and digits (v5 "Place order"); demo trading is the sandbox. Read 2026-12-06.
        order_capabilities=OrderCapabilities(
            wallets=(Wallet.UNIFIED, Wallet.FUNDING), separate_wallets=False, sandbox=True),
        # The session stands for 2026-01-20 07:00 UTC, the funding-rate response's `ts`
        # (cassettes/okx/PROVENANCE.md).
        offline_instant=datetime(2026, 1, 20, 7, tzinfo=UTC),
    ))


@hookimpl
def register_fee_models(register):
    register(TableFeeModel(VENUE_ID, *FEE_TIERS["Lv1"],
                           detail=f"regular tier Lv1 of the {FEE_TIERS_DETAIL}",
                           tiers=FEE_TIERS, tiers_detail=FEE_TIERS_DETAIL))


@hookimpl
def register_history_sources(register):
    """The screener archive of OKX current-period rates, for ``backtest --data``."""
    register(ScreenerArchive())
