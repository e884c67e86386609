"""The dashboard's action token and where it may listen.

Every state-changing request (kill, resume, close) carries the token in the
``X-Perpcarry-Token`` header. A browser sends a custom header across origins only after a
CORS preflight, which this app never grants, so the header is also the protection against
cross-site request forgery; a request whose ``Origin`` is not the app's own is refused
before the token is even read. The token is made on first start, kept owner-only
(0600) in the config dir, and never shown on a page.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import stat
from pathlib import Path

from perpcarry.domain.errors import ConfigError, UsageError

TOKEN_HEADER = "X-Perpcarry-Token"
TOKEN_NAME = "dashboard-token"


def token_path() -> Path:
    """``dashboard-token`` in the user config dir (``$XDG_CONFIG_HOME/perpcarry``)."""
    import platformdirs

    return Path(platformdirs.user_config_dir("perpcarry")) / TOKEN_NAME


def load_or_create_token(path: Path) -> str:
    """The token in ``path``, made (random, 0600) when the file does not exist. A file
    others can read, or an empty one, is refused with what to do."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    except OSError as err:
        raise ConfigError(f"dashboard token {path}: cannot create it: {err.strerror}") from None
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
    return _read(path)


def _read(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as err:
        raise ConfigError(f"dashboard token {path}: cannot read it: {err.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"dashboard token {path}: readable by others (mode "
                          f"{stat.S_IMODE(mode):o}); run: chmod 600 {path}")
    if len(text) < 16:
        raise ConfigError(f"dashboard token {path}: shorter than 16 characters; delete the "
                          "file and a new token is made on the next start")
    return text


def token_matches(given: str | None, token: str) -> bool:
    """Whether ``given`` is the token, compared in constant time."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen(host: str, token: str | None) -> None:
    """Refuse a non-loopback address unless the actions are protected by a token."""
    if not is_loopback(host) and not token:
        raise UsageError(f"--host {host}: not a loopback address, and no action token; "
                         "the dashboard listens beyond this machine only with one")
