"""Third-party plugins are real: the example distribution under tests/example_plugin installs
through its own pyproject.toml and entry point, is listed, can be enabled, and passes the
conformance kit. It is installed into a scratch directory, so the environment is left as
it was found."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent / "example_plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    scratch = tmp_path_factory.mktemp("example-plugin")
    source = scratch / "source"
    shutil.copytree(EXAMPLE, source)  # setuptools writes build/ and egg-info next to the source
    target = scratch / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        check=True, capture_output=True, text=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPCARRY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    env["HOME"] = str(scratch)
    return env


def _perpcarry(env, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perpcarry", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_plugins_lists_the_installed_example(installed):
    listed = {p["name"]: p for p in json.loads(_perpcarry(installed, "plugins", "--json").stdout)}
    assert set(listed) == {"binance", "bybit", "okx", "executors", "checks",
                           "hyperliquid_example"}
    example = listed["hyperliquid_example"]
    assert example["version"] == "0.1.0" and example["venues"] == ["hyperliquid"]
    assert example["hooks"] == ["register_fee_models", "register_venues"]


def test_enabling_the_example_venue_in_config_works(installed, tmp_path):
    (tmp_path / "perpcarry.toml").write_text("[venues.hyperliquid]\nenabled = true\n")
    result = _perpcarry(installed, "venues", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [v["venue"] for v in json.loads(result.stdout)] == ["hyperliquid"]
    # its own config model validates its section
    (tmp_path / "perpcarry.toml").write_text("[venues.hyperliquid]\nenabled = true\nfoo = 1\n")
    bad = _perpcarry(installed, "venues", cwd=tmp_path)
    assert bad.returncode == 2 and "venues.hyperliquid.foo: unknown key" in bad.stderr


def test_without_the_plugin_its_venue_is_unknown(tmp_path):
    (tmp_path / "perpcarry.toml").write_text("[venues.hyperliquid]\nenabled = true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPCARRY_")}
    result = _perpcarry(env, "venues", cwd=tmp_path)
    assert result.returncode == 2
    assert "venue is enabled but no installed plugin provides it" in result.stderr


def test_the_example_passes_the_conformance_kit_and_its_own_tests(installed, tmp_path):
    """Run from the example's own folder (its pyproject's pytest settings), every test of
    the kit ran and passed there, none skipped."""
    import xml.etree.ElementTree as ET

    from perpcarry.testing import VenueConformance

    report = tmp_path / "junit.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", f"--junitxml={report}"],
        env=installed, capture_output=True, text=True, timeout=300, cwd=EXAMPLE)
    assert result.returncode == 0, result.stdout[-3000:]
    cases = ET.parse(report).getroot().iter("testcase")
    outcomes = {}
    for case in cases:
        failed = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
        outcomes[(case.get("classname"), case.get("name").split("[")[0])] = failed
    assert all(not failed for failed in outcomes.values()), outcomes
    kit = {name for name in dir(VenueConformance) if name.startswith("test_")}
    ran = {name for (classname, name) in outcomes if classname.endswith("test_conformance."
                                                                         "TestConformance")}
    assert ran == kit
