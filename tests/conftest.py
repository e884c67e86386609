"""Shared fixtures. The network is blocked for every test (``--block-network`` in
pyproject.toml, from pytest-recording); HTTP is replayed from cassettes by
``perpcarry.ccxt.replay.replaying``, which never records."""

from __future__ import annotations

import sys
from contextlib import suppress
from dataclasses import dataclass

import pytest


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test reads the developer's config, env or cache."""
    import os

    for name in list(os.environ):
        if name.startswith("PERPCARRY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """Trading state and caches of the test's own: the journals and paper accounts go to
    the returned folder (``PERPCARRY_DATA_DIR``), caches beside it."""
    path = tmp_path / "data"
    monkeypatch.setenv("PERPCARRY_DATA_DIR", str(path))
    monkeypatch.setenv("PERPCARRY_CACHE_DIR", str(tmp_path / "cache"))
    return path


def _logged(level: str):
    """perpcarry's messages at ``level`` and above during a test, in order (the package
    disables its logger as a library; the CLI enables it, as this does)."""
    from loguru import logger

    messages: list[str] = []
    sink = logger.add(lambda message: messages.append(message.record["message"]),
                      level=level)
    logger.enable("perpcarry")
    yield messages
    logger.disable("perpcarry")
    with suppress(ValueError):  # a CLI run in the test replaces every sink
        logger.remove(sink)


@pytest.fixture
def logged_warnings():
    """The messages perpcarry logs at WARNING and above during the test."""
    yield from _logged("WARNING")


@pytest.fixture
def caplog_info():
    """The messages perpcarry logs at INFO and above during the test."""
    yield from _logged("INFO")


@dataclass
class CliRun:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run a command in-process as the ``perpcarry`` entry point does (without its
    process-wide collector settings): exit code, stdout, stderr."""
    from perpcarry.cli.app import run

    def run_command(*args: str) -> CliRun:
        monkeypatch.setattr(sys, "argv", ["perpcarry", *args])
        capsys.readouterr()
        code = run()
        out, err = capsys.readouterr()
        return CliRun(code, out, err)

    return run_command


@pytest.fixture
def write_config(tmp_path):
    def write(text: str, name: str = "perpcarry.toml"):
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


# The example third-party plugin is its own distribution with its own tests; the test in
# test_example_plugin.py installs it into a scratch directory and runs them there.
collect_ignore = ["example_plugin"]
