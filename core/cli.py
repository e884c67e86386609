"""The ``perpcarry`` command line."""

from __future__ import annotations

import gc
import json
import sys
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from perpcarry.commands.backtest import backtest
from perpcarry.commands.plan import plan
from perpcarry.commands.scan import scan
from perpcarry.commands.sweep import sweep
from perpcarry.errors import PerpcarryError

# Pretty exceptions would print local variables, which may hold credentials.
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  rich_markup_mode=None,
                  help="Spot-perpetual cash-and-carry across crypto exchanges.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect the configuration.")
app.add_typer(config_app, name="config")

console = Console()
err_console = Console(stderr=True)


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class State:
    config_path: Path | None = None


state = State()


@app.callback()
def main_options(
    config: Annotated[Path | None, typer.Option("--config", help="Config file (default: "
                      "$PERPCARRY_CONFIG, ./perpcarry.toml, then the user config dir).")] = None,
    log_level: Annotated[LogLevel, typer.Option("--log-level", case_sensitive=False,
                                                help="Log threshold.")] = LogLevel.WARNING,
    log_json: Annotated[bool, typer.Option("--log-json", help="Log as JSON lines.")] = False,
) -> None:
    from perpcarry.logs import configure_logging

    configure_logging(log_level, log_json)
    state.config_path = config


def load():
    from perpcarry.config import load_config

    return load_config(state.config_path)


def emit_json(payload) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


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
app.command()(sweep)


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


def run() -> int:
    """Run the command in ``sys.argv``; its exit code."""
    try:
        result = app(standalone_mode=False, prog_name="perpcarry")
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
