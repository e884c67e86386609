"""``perpcarry dashboard``: the web dashboard over a journal (docs/dashboard.md)."""

from __future__ import annotations

import socket
from typing import Annotated

import typer

from perpcarry.cli.common import console, load, path_option
from perpcarry.cli.trade import LiveOption, OfflineOption, PaperOption


def dashboard(
    host: Annotated[str, typer.Option("--host", help="Address to listen on (loopback by "
                                      "default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port.")] = 8765,
    show_token: Annotated[bool, typer.Option(
        "--token", help="Print the action token (made on first use) and exit.")] = False,
    paper: PaperOption = False, live: LiveOption = False,
    replay: Annotated[bool, typer.Option(
        "--replay", help="The journal of the last `run --replay`.")] = False,
    journal: Annotated[str | None, typer.Option(
        "--journal", metavar="PATH", help="Another journal file (read-only: no close).")]
    = None,
    offline: OfflineOption = False,
    read_only: Annotated[bool, typer.Option(
        "--read-only", help="No actions (kill, resume, close); loopback only.")] = False,
) -> int:
    """Serve the dashboard: overview, positions, opportunities, operations, a JSON API
    under /api/, and the kill switch, resume and close behind a token."""
    from perpcarry.dashboard.security import check_listen, load_or_create_token, token_path

    if show_token:
        console.print(load_or_create_token(token_path()), highlight=False, soft_wrap=True)
        return 0
    from perpcarry.execution.journal import Journal

    config = load()
    book = _book(config, paper, live, replay, journal)
    with Journal.open(book.path, trading=False):
        pass  # a file that is no journal (or a newer one) is refused now, in one line
    token = None if read_only else load_or_create_token(token_path())
    check_listen(host, token)
    import uvicorn

    from perpcarry.dashboard.app import create_app
    from perpcarry.dashboard.security import is_loopback

    hosts = None if is_loopback(host) else [host]
    app = create_app(config, book, token, offline=offline, allowed_hosts=hosts)
    listening = _listen(host, port)
    console.print(f"dashboard of the {book.label} journal {book.path}: "
                  f"http://{host}:{port}/ (Ctrl-C stops it)", highlight=False, soft_wrap=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listening])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``; one line naming why it cannot be (uvicorn would log
    a traceback-like line and exit)."""
    from perpcarry.domain.errors import UsageError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
        listening = socket.socket(family, kind, proto)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
    except OSError as err:
        raise UsageError(f"--host {host} --port {port}: cannot listen there: "
                         f"{err.strerror or err}") from None
    return listening


def _book(config, paper: bool, live: bool, replay: bool, journal: str | None):
    """The journal chosen by --paper (default), --live, --replay or --journal."""
    from perpcarry.dashboard.documents import Book
    from perpcarry.domain.errors import UsageError
    from perpcarry.execution.service import journal_path
    from perpcarry.run.replay import replay_journal

    chosen = [flag for flag, on in (("--paper", paper), ("--live", live),
                                    ("--replay", replay), ("--journal", journal is not None))
              if on]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)}: choose one journal")
    if journal is not None:
        path = path_option(journal, "--journal")
        if not path.is_file():
            raise UsageError(f"--journal {journal}: no such file")
        return Book(path, str(path), paper=True)
    if replay:
        path = replay_journal(config.data_dir)
        if not path.is_file():
            raise UsageError(f"--replay: no replay journal at {path}; run `perpcarry run "
                             "--paper --replay START..END` first")
        return Book(path, "replay", paper=True)
    return Book(journal_path(config.data_dir, not live), "live" if live else "paper",
                paper=not live)
