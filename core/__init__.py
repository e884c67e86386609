"""perpcarry: spot-perpetual cash-and-carry across crypto exchanges."""

from importlib.metadata import PackageNotFoundError, version

from loguru import logger

try:
    __version__ = version("perpcarry")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

# A library never configures log sinks; the CLI enables this logger.
logger.disable("perpcarry")
