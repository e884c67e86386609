"""Paper trading: every venue's order half simulated on its real market data.

:func:`open_paper_venue` builds the paper twin of an installed venue from the config; the
executor, ``perpcarry account --paper`` and the order conformance kit use it through
:class:`perpcarry.venues.orders.OrderVenue` like any live venue. See docs/orders.md.
"""

from __future__ import annotations

from datetime import timedelta

from perpcarry.config.loader import Config
from perpcarry.domain.errors import UsageError
from perpcarry.paper.faults import PaperFaults
from perpcarry.paper.ledger import WalletModel
from perpcarry.paper.prices import MarketView
from perpcarry.paper.store import PaperStore, state_path
from perpcarry.paper.venue import PaperVenue
from perpcarry.venues.protocol import VenueContext

__all__ = ["PaperFaults", "PaperVenue", "open_paper_venue", "paper_wallets"]


def paper_wallets(config: Config, venue_id: str) -> WalletModel:
    """The wallet model ``venue_id``'s paper account copies from its declared capabilities."""
    spec = config.registry.venues[venue_id]
    if spec.order_capabilities is None:
        raise UsageError(f"--paper: {venue_id} declares no order capabilities (its plugin "
                         f"{spec.plugin or 'unknown'} is market data only), so its wallets "
                         "cannot be simulated")
    return WalletModel.of(spec.order_capabilities)


def open_paper_venue(config: Config, venue_id: str, context: VenueContext,
                     faults: PaperFaults | None = None) -> PaperVenue:
    """The paper account of ``venue_id``: its state file in the data dir (created with the
    configured starting balances), over a market-data client built with ``context``."""
    model = paper_wallets(config, venue_id)
    paper = config.settings.paper
    spec = config.registry.venues[venue_id]
    venue_config = config.venues[venue_id]
    store = PaperStore(state_path(config.data_dir, venue_id), venue_id, model.spot,
                       paper.starting_balances(venue_id), context.clock())
    try:
        client = spec.factory(venue_config, context)
    except BaseException:
        store.close()
        raise
    view = MarketView(client, paper.half_spread_bps,
                      timedelta(seconds=paper.quote_max_age_seconds), context.clock)
    fee_model = config.registry.fee_model(venue_id)
    return PaperVenue(venue_id, view, lambda: fee_model.fee_schedule(venue_config, client),
                      store, model, paper.maintenance_margin_rate, context.clock, faults)
