"""Bad configuration: one readable line naming the source and the field, exit code 2."""

from __future__ import annotations

import json

import pytest

BAD_CONFIGS = [
    ("[venues.kraken]\n", "venues.kraken: unknown venue (installed venues: binance, bybit, okx)"),
    (
        "[venues.kraken]\nenabled = true\n",
        "venues.kraken: venue is enabled but no installed plugin provides it",
    ),
    (
        '[venues.binance]\nenabled = "maybe"\n',
        "venues.binance.enabled: Input should be a valid boolean",
    ),
    ("[venues.binance]\nenabld = true\n", "venues.binance.enabld: unknown key"),
    (
        '[venues.binance]\nenabled = true\napi_key = "k"\n',
        "venues.binance: missing credential secret (given: api_key)",
    ),
    (
        '[venues.okx]\nenabled = true\napi_key = "k"\nsecret = "s"\n',
        "venues.okx: missing credential passphrase (given: api_key, secret)",
    ),
    ("[venues.binance\nenabled = true\n", "not valid TOML: Expected ']'"),
    ("[scan]\nhorizon_days = inf\n", "scan.horizon_days: Input should be a finite number"),
    ("[scan]\nmin_net_apr = nan\n", "scan.min_net_apr: Input should be a finite number"),
    ("surprise = 1\n", "surprise: unknown key"),
    (
        '[venues.binance.fees]\ntier = "VIP12"\n',
        "venues.binance.fees.tier: unknown tier 'VIP12' (valid tiers: VIP0, VIP1, VIP2)",
    ),
    (
        '[venues.bybit.fees]\ntier = "Supreme VIP"\n',
        "venues.bybit.fees.tier: unknown tier 'Supreme VIP' (valid tiers: VIP0, VIP1, VIP2, "
        "VIP3, VIP4, VIP5, SupremeVIP)",
    ),
    ('[venues.okx.fees]\ntier = "VIP1"\n',
     "venues.okx.fees.tier: unknown tier 'VIP1' (valid tiers: Lv1)"),
]


@pytest.mark.parametrize(("toml", "expected"), BAD_CONFIGS)
def test_bad_config_is_one_line_exit_2(run_cli, write_config, toml, expected):
    path = write_config(toml)
    result = run_cli("--config", str(path), "venues")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {path}: ")
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_bad_env_var_is_named(run_cli, monkeypatch):
    monkeypatch.setenv("PERPCARRY_VENUES__BINANCE__ENABLED", "notabool")
    result = run_cli("venues")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: env PERPCARRY_VENUES__BINANCE__ENABLED: venues.binance.enabled:"
    )


def test_missing_config_file(run_cli, tmp_path):
    result = run_cli("--config", str(tmp_path / "nope.toml"), "venues")
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'nope.toml'}: config file not found\n"


def test_unreadable_config_file(run_cli, write_config, monkeypatch):
    import pathlib

    path = write_config("[venues.binance]\nenabled = true\n")
    real_open = pathlib.Path.open

    def denied(self, *args, **kwargs):  # chmod 0 does not stop root, who runs CI
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", denied)
    result = run_cli("--config", str(path), "venues")
    assert result.exit_code == 2
    assert result.stderr == f"error: {path}: cannot read config file: Permission denied\n"


def test_config_path_from_env_and_cwd(run_cli, write_config, monkeypatch, tmp_path):
    write_config("[venues.bybit]\nenabled = true\n")  # ./perpcarry.toml
    assert "bybit" in run_cli("venues", "--json").stdout
    other = write_config("[venues.okx]\nenabled = true\n", name="other.toml")
    monkeypatch.setenv("PERPCARRY_CONFIG", str(other))
    out = run_cli("venues", "--json").stdout
    assert '"okx"' in out and '"bybit"' not in out


def test_env_overrides_file(run_cli, write_config, monkeypatch):
    path = write_config("[venues.binance]\nenabled = false\n")
    monkeypatch.setenv("PERPCARRY_VENUES__BINANCE__ENABLED", "true")
    result = run_cli("--config", str(path), "venues", "--json")
    assert result.exit_code == 0 and '"venue": "binance"' in result.stdout


def test_config_show_redacts_every_secret(run_cli, write_config, monkeypatch):
    path = write_config(
        '[venues.okx]\nenabled = true\napi_key = "key-from-file-123"\n'
        'secret = "secret-from-file-456"\npassphrase = "pass-from-file-789"\n'
    )
    monkeypatch.setenv("PERPCARRY_VENUES__BINANCE__API_KEY", "env-key-abc")
    monkeypatch.setenv("PERPCARRY_VENUES__BINANCE__SECRET", "env-secret-def")
    result = run_cli("--config", str(path), "--log-level", "DEBUG", "config", "show")
    assert result.exit_code == 0
    for secret in (
        "key-from-file-123",
        "secret-from-file-456",
        "pass-from-file-789",
        "env-key-abc",
        "env-secret-def",
    ):
        assert secret not in result.stdout and secret not in result.stderr
    assert result.stdout.count('"**********"') == 5


def test_example_config_documents_and_validates(run_cli):
    from pathlib import Path

    from perpcarry.config.settings import (
        AllocatorConfig,
        BacktestConfig,
        FeeOverride,
        ScanConfig,
        Settings,
        StrategyConfig,
        StreamsConfig,
    )
    from perpcarry_binance import BinanceConfig
    from perpcarry_okx import OkxConfig

    example = Path(__file__).parents[1] / "perpcarry.example.toml"
    text = example.read_text()
    for model in (Settings, ScanConfig, AllocatorConfig, BacktestConfig, StrategyConfig,
                  StreamsConfig, BinanceConfig,
                  OkxConfig, FeeOverride):
        for name in model.model_fields:
            assert name in text, f"perpcarry.example.toml does not document {name}"
    result = run_cli("--config", str(example), "venues", "--json")
    assert result.exit_code == 0, result.stderr


def test_log_json_writes_json_lines_without_secrets(run_cli, write_config):
    path = write_config('[venues.bybit]\nenabled = true\napi_key = "k-123456"\nsecret = "s-7890"\n')
    result = run_cli("--config", str(path), "--log-level", "DEBUG", "--log-json", "plugins")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "DEBUG logs the plugins it loads"
    for line in lines:
        record = json.loads(line)
        assert {"text", "record"} <= set(record)
    assert "k-123456" not in result.stderr and "s-7890" not in result.stderr
