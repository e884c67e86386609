"""The extension points of perpcarry. Specs only; see docs/writing-a-plugin.md.

Every hook is called with keyword arguments. The ``register_*`` hooks hand the plugin a
``register`` callback instead of collecting return values, so core can stamp each object
with the plugin that registered it and refuse clashes. ``pre_trade_check`` is a gate: its
answers are collected. All implementations are called; none stops early.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("perpcarry")
hookimpl = pluggy.HookimplMarker("perpcarry")


@hookspec
def register_venues(register):
    """Register venue implementations.

    Called once, when core first builds its registry after loading plugins.
    ``register(spec)`` takes a ``perpcarry.venues.protocol.VenueSpec``: the venue id, the pydantic
    model of its ``[venues.<id>]`` config section, its declared capabilities and the
    factory that builds a market-data client. Two plugins registering the same venue id
    is an error naming both. Returns nothing.
    """


@hookspec
def register_fee_models(register):
    """Register fee models that resolve a venue's fee schedule for spot and perp.

    Called once, when core first builds its registry. ``register(model, override=False)``
    takes an object satisfying ``perpcarry.venues.protocol.FeeModel`` (its ``venue_id`` says which
    venue it prices). A venue plugin registers its default model; another plugin replaces
    it by registering with ``override=True``. Two defaults, or two overrides, for one venue
    is an error naming both plugins. Returns nothing.
    """


@hookspec
def register_executors(register):
    """Register execution strategies that place the two legs of a carry position.

    Called once, when core first builds its registry. ``register(executor)`` takes an
    object satisfying ``perpcarry.execution.engine.Executor``; its ``name`` must be unique across
    plugins (a clash is an error naming both). Returns nothing.
    """


@hookspec
def register_history_sources(register):
    """Register funding-history file formats the backtest can import with ``--data``.

    Called once, when core first builds its registry. ``register(source)`` takes an object
    satisfying ``perpcarry.venues.protocol.HistorySource``: a unique ``name``,
    ``recognises(path)`` (judged by content, not by a venue name in the file name where the
    content can tell) and ``load(path)`` returning the normalised history table. A name
    registered by two plugins is an error naming both; so is a file two sources recognise,
    when it is read. Returns nothing.
    """


@hookspec
def pre_trade_check(order, context):
    """Veto an order before it is sent.

    Called before every order an executor sends that builds or closes a position (never
    before an unwind, which only removes an unhedged excess), after the order is journalled
    and before the request leaves. ``order`` is the ``perpcarry.venues.orders.OrderRequest``;
    ``context`` a ``perpcarry.execution.checks.TradeContext`` (venue, action, reference
    price, balances read when the intent began, leverage, caps, kill switch). Returns a
    reason (one line) to veto the order, or None to allow it; any reason vetoes, and a veto
    of the second leg unwinds the first.
    """
