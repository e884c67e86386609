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


# Event hooks: told what happened while trading (see perpcarry.events). They are called
# in the trading process, on its event loop, so they must be quick: hand slow work (a
# database, a network call) to a thread or queue. One that raises is logged with the
# plugin's name and counted; trading and the other listeners go on.


@hookspec
def on_fill(fill):
    """React to a fill.

    Called by the event bus when an order the executor sent has filled, in full or in part,
    and will fill no further (entries, exits and unwinds alike), before the ``fill`` or
    ``unwind`` event is emitted. ``fill`` is the order's final
    ``perpcarry.venues.orders.OrderState``: venue, symbol, side, ``filled_quantity``,
    ``average_price`` and ``fees`` (Decimals). Returns nothing.
    """


@hookspec
def on_funding_payment(payment):
    """React to a funding payment.

    Called by the event bus when the ledger books a funding payment from a venue (paper
    or live), before the ``funding`` event is emitted. ``payment`` is a
    ``perpcarry.venues.orders.FundingPayment``: venue, symbol, ``amount`` (Decimal, positive
    when received), currency, time and the venue's ``payment_id``. Returns nothing.
    """


@hookspec
def on_risk_alarm(alarm):
    """React to a risk alarm.

    Called by the event bus for every event of a risk kind (``naked_leg``,
    ``margin_alarm``, ``breaker``, ``kill``, ``venue_down``), before ``on_event``. ``alarm``
    is the ``perpcarry.events.Event``: kind, severity, venue, subject, a one-line message
    and its figures in ``data``. Returns nothing; to stop new entries, use
    ``pre_trade_check``.
    """


@hookspec
def on_event(event):
    """React to any event.

    Called by the event bus for every event (fills, unwinds, naked legs, funding, risk
    alarms, the kill switch, a venue down, the daily summary), after it is journalled and
    before it is handed to the alerts. ``event`` is the ``perpcarry.events.Event``. Returns
    nothing.
    """


@hookspec
def register_alert_channels(register):
    """Register channels the alerts are also sent to.

    Called once, when core first builds its registry. ``register(channel)`` takes an object
    satisfying ``perpcarry.alerts.channels.AlertChannel``: a unique ``name`` and
    ``async send(title, body, event)``, which raises (any exception) when it could not
    deliver. A channel receives the alerts ``[alerts]`` selects, after rate limiting, like
    the configured apprise URLs. A name registered by two plugins is an error naming both.
    Returns nothing.
    """
