"""``perpcarry backtest`` as a user runs it: exit codes, messages, JSON, charts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_bundled_run_prints_json_and_writes_three_charts(run_cli, tmp_path):
    out = tmp_path / "charts"
    result = run_cli("backtest", "--venue", "bybit,okx", "--start", "2023-01-01",
                     "--end", "2024-07-01", "--json", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["entries"] > 0 and summary["funding_income"] > 0
    assert set(summary["per_venue"]) <= {"bybit", "okx"}
    for key in ("total_return", "apr", "annual_volatility", "sharpe", "max_drawdown",
                "fees_paid", "turnover", "time_in_market", "per_asset"):
        assert key in summary
    charts = sorted(p.name for p in out.iterdir())
    assert charts == ["equity.html", "equity.png", "funding_heatmap.png", "venue_yield.png"]
    assert all((out / name).stat().st_size > 10_000 for name in charts if name.endswith("png"))
    # The interactive chart: self-contained (no network), its data the run's equity curve.
    html = (out / "equity.html").read_text()
    assert "http" not in html and "<script src" not in html
    data = json.loads(html.split('type="application/json">')[1].split("</script>")[0])
    assert data["equity"][-1] == round(summary["final_equity"], 2)
    assert len(data["t"]) == len(data["funding"]) > 500


def test_unknown_data_format_is_one_line_and_exit_code_2(run_cli):
    target = SHARED_DATA / "eddysan-binance" / "exchange_info.json"
    result = run_cli("backtest", "--data", str(target), "--no-plots")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error:") and "unknown funding data format" in result.stderr


def test_imported_folder_runs_and_bad_option_is_a_usage_error(run_cli):
    result = run_cli("backtest", "--data", str(SHARED_DATA / "aha-3exch"), "--no-plots",
                     "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["series"] == 6
    result = run_cli("backtest", "--min-hold-hours", "-1", "--no-plots")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "--min-hold-hours" in result.stderr


def test_a_chart_that_fails_to_write_leaves_the_previous_file_whole(tmp_path):
    from perpcarry.backtest.plots import _replace

    chart = tmp_path / "equity.html"
    chart.write_text("the previous chart")

    def disk_full(partial: Path) -> None:
        partial.write_text("half a ch")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        _replace(chart, disk_full)
    assert chart.read_text() == "the previous chart"
    assert [p.name for p in tmp_path.iterdir()] == ["equity.html"]
    _replace(chart, lambda partial: partial.write_text("the new chart"))
    assert chart.read_text() == "the new chart"
    assert [p.name for p in tmp_path.iterdir()] == ["equity.html"]


def test_the_heatmap_title_is_inside_the_figure(run_cli, monkeypatch, tmp_path):
    import perpcarry.backtest.plots as plots

    save = plots._save
    checked = []

    def save_checked(plt, fig, path):
        fig.tight_layout()
        renderer = fig.canvas.get_renderer()
        for axis in fig.axes:
            title = axis.title.get_window_extent(renderer)
            assert title.x0 >= 0 and title.x1 <= fig.bbox.x1 and title.y1 <= fig.bbox.y1, path
        checked.append(path.name)
        return save(plt, fig, path)

    monkeypatch.setattr(plots, "_save", save_checked)
    # One asset and few months: the narrowest figure, where the title was clipped.
    result = run_cli("backtest", "--venue", "okx", "--symbol", "BTC", "--start", "2024-01-01",
                     "--end", "2024-03-01", "--out", str(tmp_path / "charts"))
    assert result.exit_code == 0, result.stderr
    assert "funding_heatmap.png" in checked


def test_rule_flags_override_the_strategy_section_and_off_turns_a_rule_off(run_cli, tmp_path):
    config = tmp_path / "perpcarry.toml"
    config.write_text("[strategy]\nspike_exit = 0.05\nmin_hold_hours = 24\n")
    base = ("--config", str(config), "backtest", "--venue", "bybit,okx", "--no-plots", "--json")
    spiky = json.loads(run_cli(*base).stdout)
    assert spiky["settings"]["strategy"]["spike_exit"] == 0.05
    assert spiky["exits_by_rule"]["spike_exit"] > 0
    calm = run_cli(*base, "--spike-exit", "off")
    assert calm.exit_code == 0, calm.stderr
    calm = json.loads(calm.stdout)
    assert calm["settings"]["strategy"]["spike_exit"] is None
    assert "spike_exit" not in calm["exits_by_rule"] and calm["exits"] < spiky["exits"]
    assert sum(calm["exits_by_rule"].values()) == calm["exits"]
    bad = run_cli(*base, "--exit-premium", "0.002", "--enter-premium", "0.001")
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr == ("error: --exit-premium: must not exceed enter_premium (0.001): a pair "
                          "enters at or above enter_premium and leaves below exit_premium, "
                          "got 0.002\n")
