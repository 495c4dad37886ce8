"""market_state_frame and SequenceData on the synthetic book: values, embargo and no leakage.

The helpers ``synthetic_features`` and ``calendar_selection`` are shared with test_cnn_lstm.
"""

from __future__ import annotations

import math
from datetime import datetime
from functools import cache

import numpy as np
import polars as pl
import pytest
import torch

from hedge_pipeline.quant.daycount import SECONDS_PER_YEAR
from hedge_pipeline.stages.cnn_lstm.market_state import (
    FEATURE_COLUMNS,
    SPLITS,
    TARGET_COLUMNS,
    SequenceData,
    Standardizer,
    market_state_frame,
)
from hedge_pipeline.stages.market_data.features import compute_features
from hedge_pipeline.stages.market_data.sources.synthetic import SyntheticSource

CODES = ("3CN5", "3IN5")
HORIZON = 12
LENGTH = 24


@cache
def synthetic_raw(codes: tuple[str, ...] = CODES) -> pl.DataFrame:
    source = SyntheticSource(codes=codes)
    return pl.concat([source.load(code) for code in codes])


@cache
def synthetic_features(codes: tuple[str, ...] = CODES) -> pl.DataFrame:
    return compute_features(synthetic_raw(codes))


def calendar_selection(
    features: pl.DataFrame, fractions: tuple[float, float] = (0.6, 0.8), options: int = 6
) -> pl.DataFrame:
    """The ``options`` nearest the money of each code (weights 1 and -2 alternating), split
    by calendar time over all codes: the first 60% of the bars train, the next 20% validate."""
    ts = features["ts"].unique().sort()
    first_val, first_test = (int(f * ts.len()) for f in fractions)
    bounds = {
        "train_start": ts[0],
        "train_end": ts[first_val - 1],
        "val_start": ts[first_val],
        "val_end": ts[first_test - 1],
        "test_start": ts[first_test],
        "test_end": ts[-1],
    }
    first_bar = features.filter(pl.col("ts") == pl.col("ts").min().over("weekly_code"))
    picked = (
        first_bar.with_columns(distance=(pl.col("strike") - pl.col("underlying_price")).abs())
        .sort("weekly_code", "distance", "option_symbol")
        .group_by("weekly_code", maintain_order=True)
        .head(options)
        .select("weekly_code", "option_symbol")
    )
    weights = np.where(np.arange(picked.height) % 2 == 0, 1.0, -2.0)
    return picked.with_columns(
        pl.Series("weight", weights), *(pl.lit(v).alias(k) for k, v in bounds.items())
    )


@pytest.fixture(scope="module")
def features() -> pl.DataFrame:
    return synthetic_features()


@pytest.fixture(scope="module")
def selection(features: pl.DataFrame) -> pl.DataFrame:
    return calendar_selection(features)


@pytest.fixture(scope="module")
def frame(features: pl.DataFrame, selection: pl.DataFrame) -> pl.DataFrame:
    return market_state_frame(features, selection, HORIZON)


@pytest.fixture(scope="module")
def data(frame: pl.DataFrame) -> SequenceData:
    return SequenceData.build(frame, LENGTH)


def _bound(selection: pl.DataFrame, name: str) -> datetime:
    return selection[name][0]


# --------------------------------------------------------------------------------------------
# The frame
# --------------------------------------------------------------------------------------------


def test_frame_columns_keys_and_finite_inputs(frame: pl.DataFrame) -> None:
    assert frame.columns == [
        "weekly_code", "ts", "split", *FEATURE_COLUMNS, *TARGET_COLUMNS, "baseline_rv"
    ]  # fmt: skip
    assert 12 <= len(FEATURE_COLUMNS) <= 20
    assert frame.select("weekly_code", "ts").is_duplicated().sum() == 0
    assert frame.equals(frame.sort("weekly_code", "ts"))
    inputs = frame.select(FEATURE_COLUMNS).to_numpy()
    assert np.isfinite(inputs).all()
    assert set(frame["split"]) == {*SPLITS, "embargo"}
    usable = frame.filter(pl.col("split") != "embargo")
    assert np.isfinite(usable.select(*TARGET_COLUMNS, "baseline_rv").to_numpy()).all()
    assert (usable["target_rv"] > 0).all()


def test_only_the_warm_up_rows_are_dropped(features: pl.DataFrame, frame: pl.DataFrame) -> None:
    """Gaps are filled forward; rows go only before realized vol's first estimate (12 bars)."""
    for code in CODES:
        bars = features.filter(pl.col("weekly_code") == code)["ts"].unique().sort()
        kept = frame.filter(pl.col("weekly_code") == code)["ts"]
        assert kept.to_list() == bars[bars.len() - kept.len() :].to_list()
        assert 1 <= bars.len() - kept.len() <= 13


def test_targets_and_baseline_by_hand(features: pl.DataFrame, frame: pl.DataFrame) -> None:
    code = "3CN5"
    grid = (
        features.filter(pl.col("weekly_code") == code)
        .group_by("ts")
        .agg(pl.col("underlying_price", "atm_iv").first())
        .sort("ts")
    )
    price, ts = grid["underlying_price"].to_numpy(), grid["ts"].to_list()
    r2 = np.diff(np.log(price)) ** 2  # r2[i - 1]: the return into bar i

    def years(a: int, b: int) -> float:
        return (ts[b] - ts[a]).total_seconds() / SECONDS_PER_YEAR

    rows = frame.filter(pl.col("weekly_code") == code)
    for t in (200, 201, 700):
        row = rows.filter(pl.col("ts") == ts[t]).row(0, named=True)
        expected_target = math.sqrt(r2[t : t + HORIZON].sum() / years(t, t + HORIZON))
        expected_baseline = math.sqrt(r2[t - HORIZON : t].sum() / years(t - HORIZON, t))
        assert row["target_rv"] == pytest.approx(expected_target, rel=1e-9)
        assert row["baseline_rv"] == pytest.approx(expected_baseline, rel=1e-9)
        assert row["trailing_rv"] == row["baseline_rv"]
        assert row["log_return"] == pytest.approx(math.log(price[t] / price[t - 1]))
        next_iv, iv = grid["atm_iv"][t + 1], grid["atm_iv"][t]
        assert row["target_atm_iv_change"] == pytest.approx(next_iv - iv)


def test_targets_never_read_past_their_split(frame: pl.DataFrame, selection) -> None:
    ahead = frame.with_columns(
        target_end=pl.col("ts").shift(-HORIZON).over("weekly_code")
    )  # rows are consecutive bars after the warm-up rows, so this is bar t + horizon
    for split in SPLITS:
        rows = ahead.filter(pl.col("split") == split)
        assert rows.height > 0
        assert (rows["target_end"] <= _bound(selection, f"{split}_end")).all()
        assert rows["target_end"].null_count() == 0


def test_embargo_is_the_last_horizon_bars_of_each_segment(frame: pl.DataFrame, selection) -> None:
    """Each run of bars of one split within a code ends with ``horizon`` embargoed bars (all of
    it when shorter, as 3CN5's last 8 bars, the only ones it has in the test period)."""
    label = pl.lit("none")
    for split in SPLITS:
        inside = pl.col("ts").is_between(
            _bound(selection, f"{split}_start"), _bound(selection, f"{split}_end")
        )
        label = pl.when(inside).then(pl.lit(split)).otherwise(label)
    segment = (pl.col("label") != pl.col("label").shift()).fill_null(True).cum_sum()
    expected = (
        frame.with_columns(label=label)
        .with_columns(segment=segment.over("weekly_code"))
        .with_columns(from_end=pl.int_range(pl.len(), 0, -1).over("weekly_code", "segment"))
    )
    assert expected["label"].n_unique() == 3 and expected["segment"].max() >= 3
    assert (frame["split"] == "embargo").to_list() == (expected["from_end"] <= HORIZON).to_list()


def test_bars_outside_every_split_are_embargo(features: pl.DataFrame, selection) -> None:
    """A gap left between train and validation by the selection stays out of every split."""
    gap_end = _bound(selection, "val_start")
    gapped = selection.with_columns(val_start=pl.lit(gap_end) + pl.duration(days=1))
    rows = market_state_frame(features, gapped, HORIZON)
    in_gap = rows.filter(pl.col("ts").is_between(gap_end, gap_end + pl.duration(hours=23)))
    assert in_gap.height > 0 and (in_gap["split"] == "embargo").all()


def test_invalid_inputs_are_refused(features: pl.DataFrame, selection) -> None:
    with pytest.raises(ValueError, match="horizon"):
        market_state_frame(features, selection, 0)
    with pytest.raises(ValueError, match="no rows"):
        market_state_frame(features.filter(pl.col("weekly_code") == "3CN5"), selection, HORIZON)
    disagree = selection.with_columns(
        train_end=pl.when(pl.col("weight") > 0)
        .then(pl.col("train_end"))
        .otherwise(pl.col("val_end"))
    )
    with pytest.raises(ValueError, match="same split bounds"):
        market_state_frame(features, disagree, HORIZON)


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------


def test_shapes(data: SequenceData) -> None:
    for name in SPLITS:
        part = data.split(name)
        n = len(part)
        assert part.x.shape == (n, LENGTH, len(FEATURE_COLUMNS)) and part.x.dtype == torch.float32
        assert part.y.shape == (n, len(TARGET_COLUMNS)) and part.baseline.shape == (n,)
        assert part.keys.columns == ["weekly_code", "ts"] and part.keys.height == n
        assert torch.isfinite(part.x).all() and torch.isfinite(part.y).all()
    assert min(len(data.split(s)) for s in SPLITS) > 100


def test_windows_are_consecutive_bars_of_one_code_with_no_embargo_row(frame: pl.DataFrame) -> None:
    """Tag rows through two input columns (code, row number), then read the tags back."""
    tagged = frame.with_columns(
        log_return=pl.col("weekly_code").rank("dense").cast(pl.Float64),
        log_gap=pl.int_range(pl.len()).cast(pl.Float64),
        tod_sin=(pl.col("split") == "embargo").cast(pl.Float64),
    )
    data = SequenceData.build(tagged, LENGTH)
    column = {name: FEATURE_COLUMNS.index(name) for name in ("log_return", "log_gap", "tod_sin")}
    for name in SPLITS:
        part = data.split(name)
        x = data.inputs.inverse(part.x.double().numpy())
        code, row, embargo = (
            np.rint(x[..., column[c]]) for c in ("log_return", "log_gap", "tod_sin")
        )
        assert (code == code[:, :1]).all()  # one code per window
        assert (np.diff(row, axis=1) == 1).all()  # consecutive rows
        assert (embargo == 0).all()
        last = frame[row[:, -1].astype(int)]
        assert last.select("weekly_code", "ts").equals(part.keys)
        assert (last["split"] == name).all()


def test_standardization_fitted_on_train_only(frame: pl.DataFrame, data: SequenceData) -> None:
    train = frame.filter(pl.col("split") == "train")
    np.testing.assert_allclose(data.inputs.mean, train.select(FEATURE_COLUMNS).to_numpy().mean(0))
    keys = data.split("train").keys
    train_targets = keys.join(frame, on=["weekly_code", "ts"]).select(TARGET_COLUMNS).to_numpy()
    np.testing.assert_allclose(data.targets.mean, train_targets.mean(0))
    np.testing.assert_allclose(data.targets.std, train_targets.std(0))


def test_perturbing_val_and_test_leaves_train_untouched(
    features: pl.DataFrame, selection: pl.DataFrame, frame: pl.DataFrame, data: SequenceData
) -> None:
    """Change every quote after the end of training; rebuild from the raw quotes up."""
    after = pl.col("ts") > _bound(selection, "train_end")
    raw = synthetic_raw().with_columns(
        underlying_price=pl.when(after)
        .then(pl.col("underlying_price") * 1.03)
        .otherwise(pl.col("underlying_price")),
        ask=pl.when(after).then(pl.col("ask") * 1.5).otherwise(pl.col("ask")),
        volume=pl.when(after).then(pl.col("volume") * 7).otherwise(pl.col("volume")),
    )
    changed = market_state_frame(compute_features(raw), selection, HORIZON)
    assert not changed.filter(after).equals(frame.filter(after))  # the perturbation bites
    train = pl.col("split") == "train"
    assert changed.filter(train).equals(frame.filter(train))
    rebuilt = SequenceData.build(changed, LENGTH)
    for name in ("mean", "std"):
        np.testing.assert_array_equal(getattr(rebuilt.inputs, name), getattr(data.inputs, name))
        np.testing.assert_array_equal(getattr(rebuilt.targets, name), getattr(data.targets, name))
    old, new = data.split("train"), rebuilt.split("train")
    assert torch.equal(old.x, new.x) and torch.equal(old.y, new.y)
    assert torch.equal(old.baseline, new.baseline) and old.keys.equals(new.keys)
    assert not torch.equal(data.split("val").x, rebuilt.split("val").x)


def test_given_standardizers_are_applied_as_is(frame: pl.DataFrame, data: SequenceData) -> None:
    shifted = frame.with_columns(pl.col("atm_iv") + 0.5)
    again = SequenceData.build(shifted, LENGTH, inputs=data.inputs, targets=data.targets)
    assert again.inputs is data.inputs and again.targets is data.targets
    column = FEATURE_COLUMNS.index("atm_iv")
    delta = again.split("val").x[..., column] - data.split("val").x[..., column]
    torch.testing.assert_close(delta, torch.full_like(delta, 0.5 / data.inputs.std[column]))


def test_max_windows_subsamples_deterministically(frame: pl.DataFrame, data: SequenceData) -> None:
    small = SequenceData.build(frame, LENGTH, max_windows=50)
    again = SequenceData.build(frame, LENGTH, max_windows=50)
    for name in SPLITS:
        assert len(small.split(name)) == min(50, len(data.split(name)))
        assert torch.equal(small.split(name).x, again.split(name).x)
    keys = small.split("train").keys
    assert keys.join(data.split("train").keys, on=["weekly_code", "ts"]).height == keys.height
    assert set(keys["weekly_code"]) == set(CODES)  # spread over the whole period
    np.testing.assert_array_equal(small.inputs.mean, data.inputs.mean)  # fitted before
    np.testing.assert_array_equal(small.targets.mean, data.targets.mean)


def test_standardizer_round_trip() -> None:
    values = np.array([[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]])
    scaler = Standardizer.fit(values)
    assert scaler.std[1] == 1.0  # a constant column is centred, not divided by zero
    np.testing.assert_allclose(scaler.inverse(scaler.transform(values)), values)
    restored = Standardizer.from_dict(scaler.to_dict())
    np.testing.assert_array_equal(restored.mean, scaler.mean)
    np.testing.assert_array_equal(restored.std, scaler.std)
    with pytest.raises(ValueError, match="no rows"):
        Standardizer.fit(values[:0])
