"""Replay: the paper venues and the run loop over recorded market history, on a simulated
clock, far faster than real time (``perpcarry run --paper --replay START..END``).

:class:`ReplayClock` steps through the data's own settlement times; :class:`HistoryMarketData`
is a venue's market data as the history knew it at the clock's instant; :func:`replay_venues`
builds, for each venue in the history, a fresh paper account on both, in a replay-only data
dir.
"""

from perpcarry.replay.clock import ReplayClock
from perpcarry.replay.market_data import HistoryMarketData
from perpcarry.replay.venues import replay_dir, replay_venues

__all__ = ["HistoryMarketData", "ReplayClock", "replay_dir", "replay_venues"]
