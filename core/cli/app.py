"""The ``perpcarry`` command line."""

from __future__ import annotations

import errno
import gc
import os
import sys
from dataclasses import asdict
from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from perpcarry.cli import risk
from perpcarry.cli.account import account, orders, paper_app
from perpcarry.cli.backtest import backtest
from perpcarry.cli.common import console, emit_json, load, path_option, state
from perpcarry.cli.dashboard import dashboard
from perpcarry.cli.plan import plan
from perpcarry.cli.pnl import pnl
from perpcarry.cli.run import run_strategy
from perpcarry.cli.scan import scan
from perpcarry.cli.sweep import sweep
from perpcarry.cli.trade import close_position, open_position, positions, reconcile
from perpcarry.cli.watch import watch
from perpcarry.domain.errors import PerpcarryError

# Pretty exceptions would print local variables, which may hold credentials.
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  rich_markup_mode=None,
                  help="Spot-perpetual cash-and-carry across crypto exchanges.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect the configuration.")
app.add_typer(config_app, name="config")

class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


@app.callback()
def main_options(
    config: Annotated[str | None, typer.Option("--config", help="Config file (default: "
                      "$PERPCARRY_CONFIG, ./perpcarry.toml, then the user config dir).")] = None,
    log_level: Annotated[LogLevel, typer.Option("--log-level", case_sensitive=False,
                                                help="Log threshold.")] = LogLevel.WARNING,
    log_json: Annotated[bool, typer.Option("--log-json", help="Log as JSON lines.")] = False,
) -> None:
    from perpcarry.cli.logs import configure_logging

    configure_logging(log_level, log_json)
    state.config_path = path_option(config, "--config")


@app.command()
def plugins(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False):
    """List installed plugins: version, hooks implemented, venues provided."""
    infos = load().registry.plugin_infos()
    if as_json:
        emit_json([info.as_dict() for info in infos])
        return
    table = Table("plugin", "version", "hooks", "venues", "fee models", "executors")
    for info in infos:
        table.add_row(info.name, info.version or "-", ", ".join(info.hooks),
                      ", ".join(info.venues), ", ".join(info.fee_models),
                      ", ".join(info.executors))
    console.print(table)


@app.command()
def venues(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False):
    """List the enabled venues and the capabilities each declares."""
    config = load()
    rows = []
    for venue_id in config.enabled_venues():
        spec = config.registry.venues[venue_id]
        rows.append({"venue": venue_id, "name": spec.display_name, "plugin": spec.plugin,
                     "credentials": config.venues[venue_id].has_credentials,
                     "capabilities": asdict(spec.capabilities)})
    if as_json:
        emit_json(rows)
        return
    if not rows:
        sys.stderr.write("no venues enabled: set enabled = true under [venues.<id>] in "
                         "perpcarry.toml (installed: "
                         f"{', '.join(sorted(config.registry.venues)) or 'none'})\n")
        return
    table = Table("venue", "plugin", "credentials", "capabilities")
    for row in rows:
        caps = row["capabilities"]
        flags = [k for k, v in caps.items() if v is True]
        intervals = "/".join(f"{h}h" for h in caps["funding_intervals_hours"])
        table.add_row(row["venue"], row["plugin"], "yes" if row["credentials"] else "no",
                      f"{', '.join(flags)}; funding intervals {intervals}")
    console.print(table)


app.command()(scan)
app.command()(plan)
app.command()(backtest)
app.command()(account)
app.command()(orders)
app.add_typer(paper_app, name="paper")
app.command("open")(open_position)
app.command("close")(close_position)
app.command()(positions)
app.command()(reconcile)
app.command()(risk.kill)
app.command()(risk.resume)
app.command()(sweep)
app.command("run")(run_strategy)
app.command()(pnl)
app.command()(dashboard)
app.command()(watch)


@config_app.command("show")
def config_show():
    """Print the effective configuration (file + env), every secret redacted."""
    emit_json(load().redacted())


def main() -> None:
    """The ``perpcarry`` console script: one command, then the process ends."""
    # Most of what a command allocates lives until the process ends: importing ccxt alone
    # creates about a million objects. The cyclic collector re-walked that heap as it grew
    # and once more while the interpreter shut down: about 0.8 s of a 2.2 s
    # `scan --offline`. Reference counting still frees everything outside a cycle; a
    # command that runs for hours must turn collection back on.
    gc.disable()
    code = run()
    gc.freeze()  # shutdown frees the modules without walking them for cycles first
    sys.exit(code)


# Errors writing output that the user can fix (free space, quota, file size limit).
_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush of what is still buffered
    fails no second time."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a test's capture
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def run() -> int:
    """Run the command in ``sys.argv``; its exit code."""
    if sys.stdout is None:  # started with stdout closed (`>&-`)
        sys.stderr.write("error: cannot write output: stdout is closed\n")
        return 1
    try:
        result = app(standalone_mode=False, prog_name="perpcarry")
        sys.stdout.flush()  # a full disk or a closed pipe shows here, not at shutdown
    except BrokenPipeError:  # the reader left (`| head`): stop quietly, like other tools
        _discard_stdout()
        return 1
    except SystemExit as exc:  # rich and typer exit on a broken pipe, quietly, with 1
        return exc.code if isinstance(exc.code, int) else 1
    except OSError as exc:
        if exc.errno not in _OUTPUT_ERRNOS:
            raise
        _discard_stdout()
        sys.stderr.write(f"error: cannot write output: {exc.strerror}\n")
        return 1
    except typer.Abort:
        sys.stderr.write("aborted\n")
        return 130
    except typer.TyperException as exc:  # from the click that typer vendors
        message = exc.format_message()
        if "\n" in message:  # no command given: the help
            exc.show()
        else:  # a usage error, on one line like every other error
            context = getattr(exc, "ctx", None)
            hint = f" (see: {context.command_path} --help)" if context is not None else ""
            sys.stderr.write(f"error: {message}{hint}\n")
        return exc.exit_code
    except PerpcarryError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    return result if isinstance(result, int) else 0
