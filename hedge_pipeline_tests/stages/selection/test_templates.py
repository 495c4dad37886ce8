"""Portfolio templates: every packaged one loads, every mistake is named at load time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from hedge_pipeline.stages.market_data.features import REALIZED_VOL_MIN_DAILY_BARS
from hedge_pipeline.stages.selection.book import split_bars
from hedge_pipeline.stages.selection.report import list_templates, template_info
from hedge_pipeline.stages.selection.templates import (
    DEFAULT_TEMPLATE,
    ENV_DIR,
    HISTORY_TEMPLATE,
    PACKAGED_DIR,
    TemplateError,
    load_template,
    load_template_file,
    template_files,
    with_split_mode,
)

PACKAGED = (
    "atm_book",
    "best_liquidity_single",
    "daily_history",
    "delta_gamma_book",
    "single_atm_call",
)


@pytest.fixture(autouse=True)
def _no_user_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_DIR, raising=False)


def _valid(name: str = "mine") -> dict[str, Any]:
    return {
        "name": name,
        "description": "a test book",
        "selection_criteria": {
            "option_type": "both",
            "strike_range": [30, 70],
            "weekly_codes": "all",
            "min_data_size": 10,
            "sort_by": "atm_distance",
        },
        "max_options": 4,
        "position_weights": "equal",
        "training_params": {"horizon": 12},
        "time_series_params": {
            "split_ratios": {"train": 0.7, "validation": 0.15, "test": 0.15},
            "split_mode": "per_code",
            "embargo_bars": 12,
        },
    }


def _write(folder: Path, data: dict[str, Any] | str, name: str = "mine") -> Path:
    path = folder / f"{name}.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_every_packaged_template_loads_under_its_file_name():
    assert tuple(template_files()) == PACKAGED
    for name in PACKAGED:
        template = load_template(name)
        assert template.name == name
        assert template.description
        assert template_files()[name].path.parent == PACKAGED_DIR


def test_the_default_is_a_book_of_calls_and_puts_and_only_delta_gamma_names_a_hedge():
    default = load_template()
    assert default.name == DEFAULT_TEMPLATE == "atm_book"
    assert default.selection_criteria.option_type == "both"
    assert default.selection_criteria.weekly_codes == "all"
    assert [n for n in PACKAGED if load_template(n).hedge_option] == ["delta_gamma_book"]
    gamma = load_template("delta_gamma_book")
    assert gamma.selection_criteria == default.selection_criteria


def test_defaults_fill_what_a_template_leaves_out(tmp_path):
    data = {"name": "mine", "description": "minimal", "max_options": 2}
    template = load_template_file(_write(tmp_path, data))
    assert template.position_weights == "equal"
    assert template.selection_criteria.strike_range == (0.0, 100.0)
    assert template.time_series_params.split_mode == "per_code"
    assert template.time_series_params.embargo_bars >= template.training_params.horizon
    ratios = template.time_series_params.split_ratios
    assert ratios.train + ratios.validation + ratios.test == pytest.approx(1.0)


def test_training_params_accept_typed_extras(tmp_path):
    data = _valid()
    data["training_params"] = {"epochs": 3, "hidden_size": 64, "risk_measure": "cvar"}
    params = load_template_file(_write(tmp_path, data)).training_params
    assert params.epochs == 3
    assert params.model_extra == {"hidden_size": 64, "risk_measure": "cvar"}


def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[leaf] = value
    return data


INVALID = [
    ("colour", "red", "colour: unknown field (fields here: name, description, selection_"),
    (
        "selection_criteria.strikes",
        [1, 2],
        "selection_criteria.strikes: unknown field (fields here: option_type, strike_range,",
    ),
    (
        "hedge_option",
        {"sort": "volume"},
        "hedge_option.sort: unknown field (fields here: option_type, strike_range, sort_by)",
    ),
    (
        "selection_criteria.strike_range",
        [60, 40],
        "selection_criteria.strike_range: percentile range [60, 40] must have lo < hi",
    ),
    (
        "selection_criteria.strike_range",
        [50, 50],
        "selection_criteria.strike_range: percentile range [50, 50] must have lo < hi",
    ),
    (
        "selection_criteria.strike_range",
        [-5, 50],
        "selection_criteria.strike_range.0: Input should be greater than or equal to 0",
    ),
    (
        "selection_criteria.strike_range",
        [10, 120],
        "selection_criteria.strike_range.1: Input should be less than or equal to 100",
    ),
    (
        "time_series_params.split_ratios",
        {"train": 0.7, "validation": 0.2, "test": 0.2},
        "time_series_params.split_ratios: train + validation + test must be 1, "
        "got 0.7 + 0.2 + 0.2 = 1.1",
    ),
    (
        "position_weights",
        [1, -0.5, 1, 1],
        "position_weights: weights are units short and must be non-negative, got -0.5",
    ),
    (
        "position_weights",
        [1, 1],
        "position_weights: 2 weights given but max_options is 4",
    ),
    ("position_weights", [0, 0, 0, 0], "position_weights: at least one weight must be positive"),
    ("position_weights", "random", "position_weights: expected 'equal', 'vega' or a list"),
    (
        "selection_criteria.option_type",
        "X",
        "selection_criteria.option_type: Input should be 'C', 'P' or 'both' (got 'X')",
    ),
    (
        "selection_criteria.weekly_codes",
        "some",
        "selection_criteria.weekly_codes: expected 'all' or a non-empty list of weekly codes",
    ),
    (
        "selection_criteria.weekly_codes",
        ["3CN5", "a,b"],
        "selection_criteria.weekly_codes: 'a,b' is not a weekly code",
    ),
    ("selection_criteria.min_data_size", 0, "selection_criteria.min_data_size"),
    ("selection_criteria.sort_by", "gamma", "selection_criteria.sort_by"),
    (
        "time_series_params.embargo_bars",
        4,
        "time_series_params: embargo_bars 4 < training_params.horizon 12",
    ),
    ("max_options", 0, "max_options: Input should be greater than or equal to 1"),
]


@pytest.mark.parametrize(("field", "value", "message"), INVALID, ids=[i[0] for i in INVALID])
def test_invalid_templates_name_the_file_the_field_and_the_reason(tmp_path, field, value, message):
    path = _write(tmp_path, _set(_valid(), field, value))
    with pytest.raises(TemplateError) as raised:
        load_template_file(path)
    assert f"{path}: {message}" in str(raised.value)


def test_a_missing_field_invalid_json_and_a_mismatched_name_are_named(tmp_path):
    data = _valid()
    del data["max_options"]
    with pytest.raises(TemplateError, match="max_options: required field is missing"):
        load_template_file(_write(tmp_path, data))
    with pytest.raises(TemplateError, match="not valid JSON"):
        load_template_file(_write(tmp_path, "{'name': 1", name="broken"))
    with pytest.raises(TemplateError, match=r"'other' does not match the file name 'mine\.json'"):
        load_template_file(_write(tmp_path, _valid("other")))


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(TemplateError) as raised:
        load_template("atm_bok")
    assert "unknown portfolio template 'atm_bok'" in str(raised.value)
    known = "known: atm_book, best_liquidity_single, daily_history, delta_gamma_book"
    assert known in str(raised.value)


def test_portfolio_dir_adds_templates_and_overrides_packaged_names(tmp_path, monkeypatch):
    mine = _valid("atm_book")
    mine["max_options"] = 2
    mine["position_weights"] = [2.0, 1.0]
    _write(tmp_path, mine, name="atm_book")
    _write(tmp_path, _valid("mine"))
    _write(tmp_path, {"name": "bad", "description": "x", "max_options": -1}, name="bad")
    monkeypatch.setenv(ENV_DIR, str(tmp_path))

    assert load_template("atm_book").position_weights == [2.0, 1.0]
    assert load_template("single_atm_call").max_options == 1  # packaged ones stay
    listing = list_templates()
    lines = {line.split()[0]: line for line in listing.splitlines() if line and line[0] != " "}
    assert ENV_DIR in lines["atm_book"] and ENV_DIR in lines["mine"]
    assert "packaged" in lines["delta_gamma_book"]
    assert "INVALID" in lines["bad"] and "max_options" in lines["bad"]


def test_portfolio_dir_that_is_not_a_directory_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "missing"))
    with pytest.raises(TemplateError, match="not a directory"):
        template_files()


def test_template_info_shows_the_settings_and_needs_no_warehouse(tmp_path):
    missing = tmp_path / "warehouse.duckdb"
    info = template_info("delta_gamma_book", missing)
    assert "strike range:   moneyness percentiles 20 to 80" in info
    assert "hedge option:   both, moneyness percentiles 25 to 75, by volume" in info
    assert "time split:     per_code, train/validation/test 0.7/0.15/0.15, embargo 12" in info
    assert f"no greeks_features in {missing} yet" in info
    assert not missing.exists()
    with pytest.raises(TemplateError, match="unknown portfolio template 'nope'; known: atm_book"):
        template_info("nope", missing)


@pytest.mark.parametrize("n_bars", [20, 18])
def test_daily_history_fits_a_weekly_code_of_twenty_daily_bars(n_bars: int):
    """A history code is quoted on 21 daily bars, 20 with an ok IV (none at expiry; 18 in a
    month with two closures, December 2018), and greeks_features' realized vol is unknown on
    its first REALIZED_VOL_MIN_DAILY_BARS (the market state drops those rows). The template
    must leave the CNN-LSTM a window in every split and the specialists' one-step episodes
    (n_steps 1, rebalance_bars 1: 2 bars) room in each."""
    template = load_template("daily_history")
    params, series = template.training_params, template.time_series_params
    start = datetime(2008, 9, 19, 20, tzinfo=UTC)
    bars = pl.Series([start + timedelta(days=d) for d in range(n_bars)])
    cut = split_bars(bars, series.split_ratios, series.embargo_bars)
    assert not isinstance(cut, str)
    index = {ts: i for i, ts in enumerate(bars)}
    train_end, val_start, val_end, test_start, test_end = (index[t] for t in cut[1:])
    # Market-state rows known from REALIZED_VOL_MIN_DAILY_BARS on; the last `horizon` of a
    # segment are embargoed; a window needs `sequence_length` rows.
    need = params.sequence_length + params.horizon
    assert train_end + 1 - REALIZED_VOL_MIN_DAILY_BARS >= need
    assert val_end - val_start + 1 >= need and test_end - test_start + 1 >= need
    assert val_end - val_start + 1 >= 2 and test_end - test_start + 1 >= 2
    assert template.selection_criteria.min_data_size <= n_bars


def test_the_split_mode_can_be_overridden_and_only_with_a_known_one():
    daily = load_template(HISTORY_TEMPLATE)
    backtest = with_split_mode(daily, "as_of")
    assert backtest.time_series_params.split_mode == "as_of"
    assert backtest.model_dump(exclude={"time_series_params"}) == daily.model_dump(
        exclude={"time_series_params"}
    )
    with pytest.raises(TemplateError, match="split_mode 'by_week': expected one of per_code"):
        with_split_mode(daily, "by_week")
