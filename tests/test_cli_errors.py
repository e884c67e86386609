"""Hostile and careless input: every case is one line on stderr naming what was wrong and
where (flag, env var or file), the right exit code, and never a traceback."""

from __future__ import annotations

import errno
import json
import os
import sys

import pytest

BAD_UTF8 = b'[scan]\nestimator = "\xff"\n'
DEEP_ARRAY = ("x = " + "[" * 5000 + "]" * 5000 + "\n").encode()
EVERY_PLUGIN = '["binance", "bybit", "okx"]'

# id: (arguments ({config}: the config file's path, {dir}: a folder), env vars, config file bytes,
#      exit code, what the one line must contain)
CASES = {
    "out-is-a-file": (["backtest", "--out", "{config}"], {}, b"", 2,
                      "--out {config}: exists and is not a folder"),
    "out-empty": (["backtest", "--out", ""], {}, None, 2, "--out: empty path"),
    "data-empty": (["backtest", "--data", " "], {}, None, 2, "--data: empty path"),
    "config-empty": (["--config", "", "venues"], {}, None, 2, "--config: empty path"),
    "out-under-a-file": (["backtest", "--out", "{config}/charts"], {}, b"", 2,
                         "is not a folder"),
    "allow-not-json": (["scan", "--offline"], {"PERPCARRY_PLUGINS__ALLOW": "binance"}, None,
                       2, "env PERPCARRY_PLUGINS__ALLOW: not valid JSON"),
    "scan-env-not-json": (["scan", "--offline"], {"PERPCARRY_SCAN": "{bad"}, None, 2,
                          "env PERPCARRY_SCAN: not valid JSON"),
    "venues-env-not-json": (["scan", "--offline"], {"PERPCARRY_VENUES": "[1,2"}, None, 2,
                            "env PERPCARRY_VENUES: not valid JSON"),
    "toml-not-utf8": (["--config", "{config}", "scan", "--offline"], {}, BAD_UTF8, 2,
                      "{config}: not valid TOML: not UTF-8 text (byte 0xff"),
    "toml-nested-deeply": (["--config", "{config}", "scan", "--offline"], {}, DEEP_ARRAY, 2,
                           "{config}: not valid TOML: arrays or tables nested too deeply"),
    "every-plugin-denied": (["scan", "--offline"], {"PERPCARRY_PLUGINS__DENY": EVERY_PLUGIN},
                            None, 2, "no venue to scan: no loaded plugin provides one"),
    "every-plugin-denied-backtest": (["backtest", "--no-plots"],
                                     {"PERPCARRY_PLUGINS__DENY": EVERY_PLUGIN}, None, 2,
                                     "no fee model for binance, bybit, okx: no loaded plugin"),
    "every-plugin-denied-plan": (["plan", "--offline", "--capital", "1000"],
                                 {"PERPCARRY_PLUGINS__DENY": EVERY_PLUGIN}, None, 2,
                                 "no venue to scan: no loaded plugin provides one"),
    "allow-names-no-plugin": (["plugins"], {"PERPCARRY_PLUGINS__ALLOW": '["binanse"]'}, None,
                              2, "env PERPCARRY_PLUGINS__ALLOW: plugins.allow: no installed "
                                 "plugin is named binanse (installed: binance, bybit, okx)"),
    "allow-in-file-names-no-plugin": (["--config", "{config}", "venues"], {},
                                      b'[plugins]\nallow = ["kraken"]\n', 2,
                                      "{config}: plugins.allow: no installed plugin is named "
                                      "kraken"),
    "mixed-case-env": (["venues"], {"Perpcarry_Venues__Binance__Enabled": "maybe"}, None, 2,
                       "env Perpcarry_Venues__Binance__Enabled: venues.binance.enabled:"),
    "mixed-case-env-range": (["scan", "--offline"], {"perpcarry_scan__window_days": "1e6"},
                             None, 2, "env perpcarry_scan__window_days: [scan] window_days: "
                                      "must be a number of days above 0 and at most 3650"),
    "window-huge": (["scan", "--offline", "--window", "1e6"], {}, None, 2,
                    "--window: must be a number of days above 0 and at most 3650, got 1e+06"),
    "window-huge-in-file": (["--config", "{config}", "scan", "--offline"], {},
                            b"[scan]\nwindow_days = 1e6\n", 2,
                            "{config}: [scan] window_days: must be a number of days "
                            "above 0 and at most 3650"),
    "plan-capital-huge": (["plan", "--offline", "--capital", "1e100"], {}, None, 2,
                          "--capital: must be a number above 0 and at most 1e+12, got 1e+100"),
    "backtest-capital-huge": (["backtest", "--capital", "1e308", "--no-plots"], {}, None, 2,
                              "--capital: must be a number above 0 and at most 1e+12"),
    "backtest-capital-huge-in-file": (["--config", "{config}", "backtest", "--no-plots"], {},
                                      b"[backtest]\ncapital = 1e308\n", 2,
                                      "{config}: [backtest] capital: must be a number above 0 "
                                      "and at most 1e+12, got 1e+308"),
    "out-dir-in-file-is-a-file": (["--config", "{config}", "backtest"], {},
                                  b'[backtest]\nout_dir = "given.toml"\n', 2,
                                  "{config}: [backtest] out_dir given.toml: exists and is "
                                  "not a folder"),
    "out-dir-empty-in-env": (["backtest"], {"PERPCARRY_BACKTEST__OUT_DIR": ""}, None, 2,
                             "env PERPCARRY_BACKTEST__OUT_DIR: backtest.out_dir: empty path"),
    "backtest-window-huge-in-file": (["--config", "{config}", "backtest", "--no-plots"], {},
                                     b"[strategy]\nwindow_days = 1e308\n", 2,
                                     "{config}: strategy.window_days: Input should be less "
                                     "than or equal to 3650"),
    "rule-still-in-backtest": (["--config", "{config}", "backtest", "--no-plots"], {},
                               b"[backtest]\nenter_apr = 0.2\n", 2,
                               "{config}: backtest: enter_apr moved to [strategy]: write it "
                               "there ([strategy] enter_apr = 0.2)"),
    "mark-alarm-setting-removed": (["--config", "{config}", "venues"], {},
                                   b"[streams]\nwake_on_mark_move = 0.02\n", 2,
                                   "{config}: streams: wake_on_mark_move was removed: the "
                                   "stream risk decides on every pushed mark of a held perp"),
    "config-is-a-folder": (["--config", "{dir}", "venues"], {}, None, 2,
                           "{dir}: a folder, not a config file"),
    "int-shown-whole": (["plan", "--offline", "--capital", "1000", "--min-positions",
                         "100000000"], {}, None, 2,
                        "--min-positions: must not exceed max_positions (20), got 100000000"),
    "enter-below-exit": (["backtest", "--enter-apr", "0.01", "--exit-apr", "0.05",
                          "--no-plots"], {}, None, 2,
                         "--exit-apr: must not exceed enter_apr (0.01)"),
    "enter-below-default-exit": (["backtest", "--enter-apr", "0.01", "--no-plots"], {}, None,
                                 2, "[strategy] exit_apr (default): must not exceed enter_apr"),
    "plan-cap-percent": (["plan", "--offline", "--capital", "1000", "--venue-cap", "150"], {},
                         None, 2, "--venue-cap: must be a number above 0 and at most 100, "
                                  "got 150"),
    "allocator-in-file": (["--config", "{config}", "plan", "--offline", "--capital", "1000"],
                          {}, b"[allocator]\nleverage = 0\n", 2,
                          "{config}: [allocator] leverage: must be a number at least 1 and "
                          "at most 5, got 0"),
    "scan-in-file": (["--config", "{config}", "scan", "--offline"], {},
                     b"[scan]\nhorizon_days = -1\n", 2,
                     "{config}: [scan] horizon_days: must be a number of days above 0"),
}


@pytest.mark.parametrize(("args", "env", "config", "code", "expected"), CASES.values(),
                         ids=CASES.keys())
def test_bad_input_is_one_line(run_cli, monkeypatch, tmp_path, args, env, config, code,
                               expected):
    path = tmp_path / "given.toml"
    if config is not None:
        path.write_bytes(config)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def filled(text: str) -> str:
        return text.replace("{config}", str(path)).replace("{dir}", str(tmp_path))

    result = run_cli(*map(filled, args))
    assert result.exit_code == code, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert filled(expected) in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_output_paths_are_checked_before_the_backtest_runs(run_cli, monkeypatch, tmp_path):
    import perpcarry.backtest.run

    def never(*args, **kwargs):
        raise AssertionError("the backtest ran before its output folder was checked")

    monkeypatch.setattr(perpcarry.backtest.run, "run_backtest", never)
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    result = run_cli("backtest", "--out", str(existing))
    assert result.exit_code == 2 and "exists and is not a folder" in result.stderr
    assert existing.read_text() == "keep me"


class _Stdout:
    """A stdout whose writes fail the way a full disk or a closed pipe makes them fail."""

    def __init__(self, error: OSError, fd: int) -> None:
        self.error, self.fd = error, fd

    def write(self, text: str) -> int:
        raise self.error

    def flush(self) -> None:
        raise self.error

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:  # rich and the CLI point the descriptor at /dev/null
        return self.fd


@pytest.mark.parametrize("args", [["scan", "--offline"], ["scan", "--offline", "--json"],
                                  ["scan", "--offline", "--csv"], ["plugins", "--json"],
                                  ["plan", "--offline", "--capital", "10000"]],
                         ids=" ".join)
def test_full_disk_is_one_line_and_a_closed_pipe_is_quiet(run_cli, monkeypatch, tmp_path,
                                                          args):
    fd = os.open(tmp_path / "stdout", os.O_WRONLY | os.O_CREAT)
    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(sys, "stdout", _Stdout(full, fd))
    result = run_cli(*args)
    assert result.exit_code == 1
    assert result.stderr == "error: cannot write output: No space left on device\n"

    monkeypatch.setattr(sys, "stdout", _Stdout(BrokenPipeError(errno.EPIPE, "Broken pipe"), fd))
    result = run_cli(*args)
    assert result.exit_code == 1 and result.stderr == ""
    os.close(fd)


def test_empty_credentials_mean_not_set(run_cli, write_config):
    path = write_config('[venues.binance]\nenabled = true\napi_key = ""\nsecret = " "\n')
    result = run_cli("--config", str(path), "venues", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["credentials"] is False
    # One credential given, the other empty: the empty one is the missing one.
    path = write_config('[venues.binance]\nenabled = true\napi_key = "k"\nsecret = ""\n')
    result = run_cli("--config", str(path), "venues")
    assert result.exit_code == 2
    assert "venues.binance: missing credential secret (given: api_key)" in result.stderr


def test_mistyped_env_var_is_named_in_a_warning(run_cli, monkeypatch):
    monkeypatch.setenv("PERPCARRY_SCANN__WINDOW_DAYS", "3")
    monkeypatch.setenv("PERPCARRY_CONFIG_FILE", "x.toml")
    monkeypatch.setenv("perpcarry_config", "x.toml")
    result = run_cli("plugins", "--json")
    assert result.exit_code == 0
    warnings = result.stderr.splitlines()
    assert len(warnings) == 3
    assert "env PERPCARRY_SCANN__WINDOW_DAYS matches no setting and is ignored (did you mean " \
           "PERPCARRY_SCAN?)" in warnings[1]
    assert "env PERPCARRY_CONFIG_FILE matches no setting" in warnings[0]
    assert "env perpcarry_config is ignored: the name is PERPCARRY_CONFIG" in warnings[2]
