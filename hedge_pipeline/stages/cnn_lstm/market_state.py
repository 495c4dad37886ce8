"""The market state the CNN-LSTM reads: one row per (weekly_code, bar), then windows of bars.

``market_state_frame`` turns the ``greeks_features`` rows of the selected codes into one row per
(weekly_code, ts) with the model's inputs (``FEATURE_COLUMNS``), its targets
(``TARGET_COLUMNS``), the persistence forecast (``baseline_rv``) and the row's split.
``SequenceData`` cuts the rows into windows of ``sequence_length`` bars, standardizes them with
statistics fitted on the training split only, and holds the tensors of each split.

Targets look ahead ``horizon`` bars, so the last ``horizon`` rows of every split segment (and of
every code) are marked ``'embargo'``: their targets would read bars of the next split or bars that
do not exist. A window is kept only when none of its rows is 'embargo', so every kept window lies
inside one split, inputs and target alike (purging, in López de Prado's sense).

Gaps: the bar grid of a code is every timestamp at which any of its rows was published. Level
features (realized vol, ATM IV, skew, tau and the book aggregates) are carried forward within the
code over bars where they are missing (no ok IV at the money, no selected option quoted); the
book's volume and coverage are 0 at such bars, which is what happened. Rows before every input is
known, a code's first hour while its realized vol warms up, are dropped. Nothing is filled
backwards, so no input reads a later bar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from hedge_pipeline.quant.daycount import SECONDS_PER_YEAR

SPLITS = ("train", "val", "test")
EMBARGO = "embargo"
_BOUND_COLUMNS = ("train_start", "train_end", "val_start", "val_end", "test_start", "test_end")

FEATURE_COLUMNS: tuple[str, ...] = (
    "log_return",  # the underlying's log return since the code's previous bar
    "log_gap",  # log1p(minutes since the previous bar): overnight, weekend and outage gaps
    "trailing_rv",  # realized vol over the last `horizon` bars (the persistence forecast)
    "realized_vol",  # features.realized_vol: the last session (75 bars)
    "atm_iv",
    "atm_iv_change",  # ATM IV change since the previous bar
    "iv_skew",  # slope of the smile in standardized moneyness
    "sqrt_tau",  # √(years to the code's expiry): gamma and theta scale with it
    "book_iv",  # |weight|-weighted mean IV of the selected options
    "book_rel_spread",  # |weight|-weighted mean spread / mid
    "book_log_volume",  # log1p(contracts of the selected options traded in the bar)
    "book_abs_delta",  # |weight|-weighted mean |delta|
    "book_log_gamma_f",  # log1p(|weight|-weighted mean gamma·F): tames the blow-up near expiry
    "book_log_abs_moneyness",  # log1p(mean |std_moneyness|): the book's distance from the money
    "book_coverage",  # share of the book's |weight| with an ok IV in the bar
    "tod_sin",  # time of day (UTC) on the unit circle
    "tod_cos",
)
TARGET_COLUMNS: tuple[str, ...] = ("target_rv", "target_atm_iv_change")

# Carried forward over bars where they are missing (see the module docstring).
_LEVEL_COLUMNS = (
    "realized_vol",
    "atm_iv",
    "iv_skew",
    "tau",
    "book_iv",
    "book_rel_spread",
    "book_abs_delta",
    "book_gamma_f",
    "book_abs_std_moneyness",
)
_KEY = ("weekly_code", "ts")


def market_state_frame(
    features: pl.DataFrame, selection: pl.DataFrame, horizon: int
) -> pl.DataFrame:
    """One row per (weekly_code, ts) of the selected codes: split, inputs, targets, baseline.

    Args:
        features: ``greeks_features`` rows; all of a code's options, or only the selected ones.
        selection: ``portfolio_selection`` rows (weekly_code, option_symbol, weight and the six
            split bounds, inclusive UTC datetimes, the same for every option of a code).
        horizon: bars ahead the realized-vol target covers, and bars behind its baseline.

    Codes on one underlying share its realized vol: give them the same calendar bounds, or one
    code's validation targets are another's training targets.

    Returns:
        ``weekly_code, ts, split, *FEATURE_COLUMNS, *TARGET_COLUMNS, baseline_rv`` sorted by
        (weekly_code, ts). Inputs are finite on every row; targets are null only on some
        'embargo' rows (those near a code's last bar).
    """
    if horizon < 1:
        raise ValueError(f"horizon must be at least one bar, got {horizon}")
    bounds = _split_bounds(selection, features.schema["ts"])
    codes = bounds["weekly_code"]
    rows = features.filter(pl.col("weekly_code").is_in(codes.implode()))
    missing = sorted(set(codes) - set(rows["weekly_code"].unique()))
    if missing:
        raise ValueError(f"the features hold no rows of the selected codes {missing}")
    frame = (
        _market_levels(rows)
        .join(_book_levels(rows, selection), on=_KEY, how="left")
        .sort(_KEY)
        .with_columns(
            pl.col(_LEVEL_COLUMNS).pipe(_finite_or_null).forward_fill().over("weekly_code"),
            pl.col("book_volume", "book_coverage").fill_null(0.0),
        )
    )
    frame = _with_splits(_with_targets(_with_inputs(frame, horizon), horizon), bounds, horizon)
    return (
        frame.with_columns(pl.col(FEATURE_COLUMNS).pipe(_finite_or_null))
        .drop_nulls(FEATURE_COLUMNS)
        .select(*_KEY, "split", *FEATURE_COLUMNS, *TARGET_COLUMNS, "baseline_rv")
    )


def _split_bounds(selection: pl.DataFrame, ts_dtype: pl.DataType) -> pl.DataFrame:
    """The split bounds of each selected code (one row per code)."""
    bounds = selection.select("weekly_code", *_BOUND_COLUMNS).unique()
    if bounds.height != bounds["weekly_code"].n_unique():
        raise ValueError("the options of a weekly code must share the same split bounds")
    return bounds.with_columns(pl.col(_BOUND_COLUMNS).cast(ts_dtype))


def _finite_or_null(expr: pl.Expr) -> pl.Expr:
    """NaN and ±inf become null, so that filling and dropping treat every gap alike."""
    return pl.when(expr.is_finite()).then(expr)


def _market_levels(rows: pl.DataFrame) -> pl.DataFrame:
    """Per (code, ts): the underlying and the chain-wide features (the same on every row)."""
    return rows.group_by(_KEY).agg(
        pl.col("underlying_price", "realized_vol", "atm_iv", "iv_skew", "tau").first()
    )


def _book_levels(rows: pl.DataFrame, selection: pl.DataFrame) -> pl.DataFrame:
    """Per (code, ts): |weight|-weighted aggregates of the selected options quoted in the bar."""
    book = selection.select("weekly_code", "option_symbol", _w=pl.col("weight").abs())
    book_weight = book.group_by("weekly_code").agg(_book_w=pl.col("_w").sum())
    ok = pl.col("iv_status") == "ok"
    return (
        rows.join(book, on=["weekly_code", "option_symbol"])
        .join(book_weight, on="weekly_code")
        .group_by(_KEY)
        .agg(
            book_iv=_weighted_mean(pl.col("iv")),
            book_rel_spread=_weighted_mean(
                pl.when(pl.col("mid") > 0).then(pl.col("spread") / pl.col("mid"))
            ),
            book_volume=pl.col("volume").sum().cast(pl.Float64),
            book_abs_delta=_weighted_mean(pl.col("delta").abs()),
            book_gamma_f=_weighted_mean(pl.col("gamma") * pl.col("forward")),
            book_abs_std_moneyness=_weighted_mean(pl.col("std_moneyness").abs()),
            book_coverage=pl.col("_w").filter(ok).sum() / pl.col("_book_w").first(),
        )
    )


def _weighted_mean(x: pl.Expr) -> pl.Expr:
    """Mean of ``x`` weighted by ``_w`` over the rows where ``x`` is known (NaN where none is)."""
    return (x * pl.col("_w")).sum() / pl.col("_w").filter(x.is_not_null()).sum()


def _with_inputs(frame: pl.DataFrame, horizon: int) -> pl.DataFrame:
    """The model inputs derived from the levels (returns, gaps, trailing vol, time of day)."""
    code = "weekly_code"
    day_fraction = (
        pl.col("ts").dt.hour() * 3600 + pl.col("ts").dt.minute() * 60 + pl.col("ts").dt.second()
    ) / 86_400.0
    log_return = pl.col("underlying_price").log().diff()
    return frame.with_columns(
        log_return=log_return.over(code),
        log_gap=(pl.col("ts").diff().dt.total_seconds() / 60.0).log1p().over(code),
        atm_iv_change=pl.col("atm_iv").diff().over(code),
        sqrt_tau=pl.col("tau").clip(lower_bound=0.0).sqrt(),
        book_log_volume=pl.col("book_volume").log1p(),
        book_log_gamma_f=pl.col("book_gamma_f").log1p(),
        book_log_abs_moneyness=pl.col("book_abs_std_moneyness").log1p(),
        tod_sin=(2 * math.pi * day_fraction).sin(),
        tod_cos=(2 * math.pi * day_fraction).cos(),
        # Running sums within the code: a window's Σr² and its years are differences of them.
        _sum_r2=(log_return**2).fill_null(0.0).cum_sum().over(code),
        _years=(pl.col("ts") - pl.col("ts").first()).dt.total_microseconds().over(code)
        / 1e6
        / SECONDS_PER_YEAR,
    ).with_columns(
        # Before `horizon` bars have passed, the baseline reads back to the code's first bar,
        # the convention of features.realized_vol.
        trailing_rv=_realized_vol(
            pl.col("_sum_r2") - pl.col("_sum_r2").shift(horizon).fill_null(0.0),
            pl.col("_years") - pl.col("_years").shift(horizon).fill_null(0.0),
        ).over(code),
    )


def _realized_vol(sum_r2: pl.Expr, years: pl.Expr) -> pl.Expr:
    """Annualized as features.realized_vol is: √(Σr² / elapsed years)."""
    return (sum_r2 / years).sqrt()


def _with_targets(frame: pl.DataFrame, horizon: int) -> pl.DataFrame:
    """Realized vol over the next ``horizon`` bars, the next ATM IV change (null past the end)."""
    return frame.with_columns(
        target_rv=_realized_vol(
            pl.col("_sum_r2").shift(-horizon) - pl.col("_sum_r2"),
            pl.col("_years").shift(-horizon) - pl.col("_years"),
        ).over("weekly_code"),
        target_atm_iv_change=(pl.col("atm_iv").shift(-1) - pl.col("atm_iv")).over("weekly_code"),
        baseline_rv=pl.col("trailing_rv"),
    )


def _with_splits(frame: pl.DataFrame, bounds: pl.DataFrame, horizon: int) -> pl.DataFrame:
    """Each row's split; 'embargo' where its target window leaves the split or the data."""
    split = pl.lit(EMBARGO)
    for name in reversed(SPLITS):
        inside = pl.col("ts").is_between(pl.col(f"{name}_start"), pl.col(f"{name}_end"))
        split = pl.when(inside).then(pl.lit(name)).otherwise(split)
    segment = (pl.col("split") != pl.col("split").shift()).fill_null(True).cum_sum()
    leaves = pl.col("_segment").shift(-horizon) != pl.col("_segment")
    return (
        frame.join(bounds, on="weekly_code")
        .with_columns(split=split)
        .with_columns(_segment=segment.over("weekly_code"))
        .with_columns(
            split=pl.when(leaves.over("weekly_code").fill_null(True))
            .then(pl.lit(EMBARGO))
            .otherwise(pl.col("split"))
        )
    )


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standardizer:
    """Per-column ``(x - mean) / std``, fitted once on training rows and stored with the model.

    A column that is constant on the training rows gets std 1 (it is centred, not blown up).
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Standardizer:
        """Statistics of ``values`` [N, C] (float64); N must be positive."""
        if values.shape[0] == 0:
            raise ValueError("cannot fit a standardizer on no rows (is the train split empty?)")
        std = values.std(axis=0)
        return cls(values.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-friendly, for the model's artifacts; ``from_dict`` reads it back."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, state: dict[str, list[float]]) -> Standardizer:
        return cls(np.asarray(state["mean"], np.float64), np.asarray(state["std"], np.float64))


@dataclass(frozen=True)
class SplitTensors:
    """The windows of one split.

    Shape:
        - x: (N, T, F) standardized inputs, float32; T = sequence_length, F = len(FEATURE_COLUMNS)
        - y: (N, n_targets) standardized targets, float32
        - baseline: (N,) persistence forecast of target_rv, original units, float32
        - keys: N rows (weekly_code, ts) of each window's last bar
    """

    x: torch.Tensor
    y: torch.Tensor
    baseline: torch.Tensor
    keys: pl.DataFrame

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass(frozen=True)
class SequenceData:
    """Windows of ``sequence_length`` bars per split, standardized with training statistics.

    Build with ``SequenceData.build(frame, sequence_length)`` on a ``market_state_frame``.
    ``inputs`` and ``targets`` are the fitted transforms; pass them back to ``build`` to cut
    windows of new data exactly as the model was trained.
    """

    sequence_length: int
    inputs: Standardizer
    targets: Standardizer
    splits: dict[str, SplitTensors]

    @property
    def n_features(self) -> int:
        return len(FEATURE_COLUMNS)

    def split(self, name: str) -> SplitTensors:
        return self.splits[name]

    @classmethod
    def build(
        cls,
        frame: pl.DataFrame,
        sequence_length: int,
        *,
        max_windows: int | None = None,
        inputs: Standardizer | None = None,
        targets: Standardizer | None = None,
    ) -> SequenceData:
        """Cut windows (never across codes, none holding an 'embargo' row) and standardize.

        ``max_windows`` keeps at most that many windows per split, evenly spaced in (code,
        time) order: deterministic, and every part of the period stays represented.
        Statistics come from the train split alone (its rows for inputs, its windows' targets
        for targets) unless given.
        """
        if sequence_length < 1:
            raise ValueError(f"sequence_length must be positive, got {sequence_length}")
        frame = frame.sort(_KEY)
        split = frame["split"].to_numpy()
        features = frame.select(FEATURE_COLUMNS).to_numpy().astype(np.float64)
        target_values = frame.select(TARGET_COLUMNS).to_numpy().astype(np.float64)
        ends = _window_ends(frame["weekly_code"].to_numpy(), split == EMBARGO, sequence_length)
        inputs = inputs or Standardizer.fit(features[split == "train"])
        targets = targets or Standardizer.fit(target_values[ends[split[ends] == "train"]])

        x_all = inputs.transform(features).astype(np.float32)
        y_all = targets.transform(target_values).astype(np.float32)
        baseline = frame["baseline_rv"].to_numpy().astype(np.float32)
        offsets = np.arange(1 - sequence_length, 1)
        splits = {}
        for name in SPLITS:
            chosen = _subsample(ends[split[ends] == name], max_windows)
            splits[name] = SplitTensors(
                x=torch.from_numpy(x_all[chosen[:, None] + offsets]),
                y=torch.from_numpy(y_all[chosen]),
                baseline=torch.from_numpy(baseline[chosen]),
                keys=frame.select(_KEY)[chosen],
            )
        return cls(sequence_length, inputs, targets, splits)


def _window_ends(codes: np.ndarray, embargo: np.ndarray, length: int) -> np.ndarray:
    """Row indices ending a window of ``length`` rows of one code with no 'embargo' row."""
    end = np.arange(length - 1, codes.size)
    start = end - length + 1
    embargoed = np.concatenate([[0], np.cumsum(embargo)])
    clean = embargoed[end + 1] == embargoed[start]
    # Rows are sorted by code: the same code at both ends means one code throughout.
    return end[clean & (codes[end] == codes[start])]


def _subsample(indices: np.ndarray, limit: int | None) -> np.ndarray:
    if limit is None or indices.size <= limit:
        return indices
    return indices[np.unique(np.linspace(0, indices.size - 1, limit).round().astype(np.int64))]
