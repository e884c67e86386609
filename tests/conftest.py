"""Shared fixtures. The network is blocked for every test (``--block-network`` in
pyproject.toml); HTTP is replayed from cassettes with record mode ``none``."""

from __future__ import annotations

import pytest

from perpcarry.replay import cassette_vcr


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
def vcr(request):
    """A vcrpy instance with perpcarry's one replay configuration."""
    return cassette_vcr()
