"""``hedge bench walkforward``: hedgers trained before a date, tested on the codes listed after it.

For each ``as_of`` date D, on the weekly codes of a ``history`` source (docs/design.md §4):

* **fit** on the codes that expired in the ``train_years`` before D: everything they quote is
  at or before D. The deep hedger trains on the older ones and stops early on the last
  ``validation_weeks`` (the most recent regime, still before D); the minimum-variance delta's
  three coefficients are fitted on both.
* **test** on every code listed after D that expires within ``test_months``: none of its bars
  was seen, and none of the underlying's moves after D either.

Each code contributes its calls, each sold at the mid ``n_steps`` daily bars before expiry
and hedged daily to expiry (``hedging.history_episodes``; P&L in percent of the strike, costs
``cost`` × traded notional). Hedgers: no hedge, BS delta and Whalley–Wilmott at each bar's
implied vol, Hull–White's minimum-variance delta and the deep hedger (the specialists'
no-transaction-band network, trained in the same harness, seeing the ATM implied vol and the
underlying's trailing realized vol). Every hedger is compared with BS delta and with the
strongest baseline by the ES10 difference on the same episodes, with a 95 % bootstrap
interval over blocks of four expiry weeks (a code's calls share one path, and codes four
weeks apart share none): ``hedging.comparison``. The periods are pooled at the end.

**The vol forecast as a hedger's input, retrained** (``forecast_inputs``, the CNN-LSTM
stage's ablation on real dynamics). For each named forecaster, one more deep hedger,
``deep_hedging_with_<name>``, trains with the same seed, episodes and budget as
``deep_hedging`` and one more input: that forecaster's 5-day realized-vol forecast (annualized,
the square root of the variance forecast) at each decision bar, from the models fitted at D
(below). On the training bars those are in-sample forecasts, as the lineage's specialists read
the CNN-LSTM stage's; on the test bars they are the walk-forward's out-of-sample ones; each is
made with the returns up to its own bar. Pooled, each such hedger is compared with
``deep_hedging`` (the same hedger retrained without the input) and with every forecaster named
before it (``FORECAST_INPUTS``: the CNN-LSTM against GARCH(1,1), the strongest vol baseline on
these series), by the same ES10 difference and interval.

The same dates drive the realized-vol forecasts (``quant.vol_forecast``): persistence, EWMA,
GARCH(1,1), HAR-RV and the CNN-LSTM, fitted before D and scored on the trading days of the
following ``test_months`` whose 5-day target is known, by MSE and QLIKE with intervals.

The module imports neither Dagster nor MLflow; ``hedge bench walkforward`` prints ``run()``
as JSON and ``--markdown`` its tables.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from hedge_pipeline.bench.machine import machine_info
from hedge_pipeline.harness.threads import torch_threads
from hedge_pipeline.harness.trainer import SilentReporter, TrainConfig, fit
from hedge_pipeline.hedging.baselines import fit_minimum_variance_delta
from hedge_pipeline.hedging.comparison import compare, es_differences
from hedge_pipeline.hedging.deep_hedging import make_policy
from hedge_pipeline.hedging.evaluation import baselines, evaluate
from hedge_pipeline.hedging.history_episodes import (
    HistoryEpisodes,
    history_episodes,
    history_problem,
)
from hedge_pipeline.hedging.simulator import HedgingProblem, market_features
from hedge_pipeline.quant.risk import RiskMeasure, parse_criterion
from hedge_pipeline.quant.vol_forecast import (
    BASELINES,
    DEFAULT_CNN_LSTM,
    HORIZON,
    CnnLstmSettings,
    daily_series,
    har_features,
    log_returns,
    markdown_report,
    pooled_comparison,
    walk_forward_forecasts,
)
from hedge_pipeline.runtime.markdown import markdown_table
from hedge_pipeline.stages.cnn_lstm.model import CnnLstm, CnnLstmConfig
from hedge_pipeline.stages.market_data.features import compute_features
from hedge_pipeline.stages.market_data.sources.history import (
    History,
    HistorySource,
    daily_closes,
    fit_garch,
)
from hedge_pipeline.stages.specialists.task import HedgingTask

CONTEXT = ("atm_iv", "rv_22d")
BLOCK_DAYS = 28  # a code lives four weeks: codes further apart share no bar
MODEL = "deep_hedging"
#: The forecasters a deep hedger is retrained to read (module docstring), the strongest vol
#: baseline first: each later one is also compared with each earlier one.
FORECAST_INPUTS = ("garch", "cnn_lstm")
FORECASTERS = (*BASELINES, "cnn_lstm")
#: A forecast per trading day: its days (``datetime64[D]``) and the annualized vol.
DailyForecast = tuple[np.ndarray, np.ndarray]


def trailing_realized_vol(history: History) -> pl.DataFrame:
    """``ts`` (UTC) and ``rv_22d`` at each daily close: the annualized realized vol of the last
    22 daily returns (HAR's monthly term, ``quant.vol_forecast.har_features``), null until
    22 returns exist. Only closes at or before a bar enter its value."""
    closes = daily_closes(history.ts)
    monthly = har_features(log_returns(history.close[closes]))[:, -1]
    return pl.DataFrame(
        {
            "ts": pl.Series(history.ts[closes].astype("datetime64[us]")).dt.replace_time_zone(
                "UTC"
            ),
            "rv_22d": pl.Series(np.sqrt(monthly), nan_to_null=True),
        }
    )


def _months_after(day: np.datetime64, months: int) -> np.datetime64:
    """The same day of the month ``months`` later (clipped to that month's end).

    >>> day = np.datetime64("2008-08-31")
    >>> str(_months_after(day, 6)), str(_months_after(day - 2, -1))
    ('2009-02-28', '2008-07-29')
    """
    month = day.astype("datetime64[M]") + np.timedelta64(months, "M")
    offset = day - day.astype("datetime64[M]").astype("datetime64[D]")
    last = (month + np.timedelta64(1, "M")).astype("datetime64[D]") - np.timedelta64(1, "D")
    return min(month.astype("datetime64[D]") + offset, last)


def rolling_as_of(
    first_bar: np.datetime64, last_bar: np.datetime64, train_years: float, test_months: int
) -> list[str]:
    """A walk-forward schedule over a whole history: an ``as_of`` at the end of every
    ``test_months``-th month (June and December for 6), from the first with ``train_years``
    of history before it to the last with ``test_months`` of history after it, so that the
    test periods tile the history without overlap.

    >>> rolling_as_of(np.datetime64("1999-01-04"), np.datetime64("2018-12-31"), 4.0, 6)[:2]
    ['2003-06-30', '2003-12-31']
    >>> rolling_as_of(np.datetime64("1999-01-04"), np.datetime64("2018-12-31"), 4.0, 6)[-1]
    '2018-06-30'
    """
    start = first_bar + np.timedelta64(int(train_years * 365.25), "D")
    dates = []
    month = start.astype("datetime64[M]")
    while True:
        end = (month + np.timedelta64(1, "M")).astype("datetime64[D]") - np.timedelta64(1, "D")
        if _months_after(end, test_months) > last_bar:
            break
        if (month.astype(int) + 1) % test_months == 0 and end >= start:
            dates.append(str(end))
        month += np.timedelta64(1, "M")
    return dates


def _blocks(expiry: np.ndarray) -> torch.Tensor:
    """Cluster of each episode for the bootstrap: its expiry's block of ``BLOCK_DAYS``."""
    days = expiry.astype("datetime64[D]").astype(np.int64)
    return torch.as_tensor(days // BLOCK_DAYS)


def _train_hedger(
    problem: HedgingProblem,
    train: HistoryEpisodes,
    validation: HistoryEpisodes,
    risk: RiskMeasure,
    *,
    epochs: int,
    seed: int,
    checkpoints: Path,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The specialists' deep hedger (NTB head started at the BS delta, inputs scaled on the
    training episodes, the untrained policy competing as epoch 0) on resampled real
    training episodes, stopped early on the validation episodes."""
    torch.manual_seed(seed)
    policy = make_policy("ntb", problem, width=32, n_layers=2, start_at_delta=True)
    policy.inputs.fit(market_features(problem, train.episodes))

    def sample(n: int, generator: torch.Generator):
        pick = torch.randint(len(train), (n,), generator=generator).numpy()
        return train.take(pick).episodes

    task = HedgingTask(problem, sample, risk, validation.episodes, 10, 512, seed)
    config = TrainConfig(
        epochs=epochs,
        lr=1e-3,
        patience=5,
        seed=seed,
        schedule="plateau",
        grad_clip=1.0,
        device="cpu",
        validate_initial=True,
    )
    result = fit(policy, task, config, checkpoints, SilentReporter())
    return result.model.eval(), {"epochs": len(result.history), "best_epoch": result.best_epoch}


def with_forecast(name: str) -> str:
    """The deep hedger that reads forecaster ``name``'s forecast."""
    return f"{MODEL}_with_{name}"


def _on_bars(part: HistoryEpisodes, forecast: DailyForecast, name: str) -> np.ndarray:
    """The forecast of each decision bar's trading day, (n, n_steps, 1); an error naming the
    first day without one (a hedger would act on a guess)."""
    days, vol = forecast
    at = np.minimum(np.searchsorted(days, part.days), days.size - 1)
    values = np.where(days[at] == part.days, vol[at], np.nan)
    if np.isnan(values).any():
        missing = part.days[np.isnan(values)].min()
        raise ValueError(f"no {name} forecast on {missing}, a decision bar's trading day")
    return values[..., None]


def _period(
    episodes: HistoryEpisodes,
    as_of: np.datetime64,
    *,
    forecasts: Mapping[str, DailyForecast],
    problem: HedgingProblem,
    risk: RiskMeasure,
    train_years: float,
    validation_weeks: int,
    test_months: int,
    epochs: int,
    seed: int,
    scratch: Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor]:
    end = as_of + np.timedelta64(1, "D")  # as_of is a date: its whole day is known
    first = end - np.timedelta64(int(train_years * 365.25), "D")
    split = end - np.timedelta64(7 * validation_weeks, "D")
    expiry, start = episodes.expiry, episodes.start
    train = episodes.take((expiry > first) & (expiry < split))
    validation = episodes.take((expiry >= split) & (expiry < end))
    test = episodes.take((start >= end) & (expiry < _months_after(end, test_months)))
    if not (len(train) and len(validation) and len(test)):
        raise ValueError(
            f"as_of {as_of}: {len(train)} training, {len(validation)} validation and "
            f"{len(test)} test episodes; every split needs some (is the date inside the history?)"
        )
    started = time.perf_counter()
    fitted = episodes.take((expiry > first) & (expiry < end))
    mv = fit_minimum_variance_delta(problem, fitted.episodes, fitted.mid)
    policy, training = _train_hedger(
        problem, train, validation, risk, epochs=epochs, seed=seed, checkpoints=scratch / MODEL
    )
    hedgers = baselines(problem, risk) | {"mv_delta": mv, MODEL: policy}
    evaluation = evaluate(problem, test.episodes, hedgers, risk)
    metrics, pnl = dict(evaluation.metrics), dict(evaluation.pnl)
    training["seconds"] = time.perf_counter() - started
    retrained = {}
    for name, forecast in forecasts.items():
        hedger = with_forecast(name)
        sees = replace(problem, context=(*problem.context, f"{name}_vol"))

        def seeing(part: HistoryEpisodes, name: str = name, forecast: DailyForecast = forecast):
            return part.with_context(_on_bars(part, forecast, name))

        started = time.perf_counter()
        model, retrained[hedger] = _train_hedger(
            sees, seeing(train), seeing(validation), risk,
            epochs=epochs, seed=seed, checkpoints=scratch / hedger,
        )  # fmt: skip
        retrained[hedger]["seconds"] = time.perf_counter() - started
        scored = evaluate(sees, seeing(test).episodes, {hedger: model}, risk)
        metrics[hedger], pnl[hedger] = scored.metrics[hedger], scored.pnl[hedger]
    clusters = _blocks(test.expiry)
    vs_delta = es_differences(pnl, "bs_delta", clusters, seed=seed)
    strongest = compare(metrics, pnl, clusters, MODEL, seed=seed)

    def span(part: HistoryEpisodes) -> dict[str, Any]:
        codes = np.unique(part.code)
        return {
            "codes": int(codes.size),
            "episodes": len(part),
            "first_expiry": str(part.expiry.min().astype("datetime64[D]")),
            "last_expiry": str(part.expiry.max().astype("datetime64[D]")),
        }

    report = {
        "as_of": str(as_of),
        "train": span(train),
        "validation": span(validation),
        "test": span(test) | {"blocks": int(torch.unique(clusters).numel())},
        "mv_delta_coefficients": list(mv.coefficients),
        "deep_hedging": training,
        "forecast_inputs": retrained,
        "metrics": metrics,
        "vs_bs_delta": {name: row.as_dict() for name, row in vs_delta.items()},
        "strongest_baseline": strongest.baseline,
        "vs_strongest": {name: row.as_dict() for name, row in strongest.rows.items()},
    }
    return report, pnl, clusters


def run(
    history: str = "sp500",
    as_of: Sequence[str] | None = None,
    *,
    train_years: float = 4.0,
    validation_weeks: int = 26,
    test_months: int = 6,
    n_steps: int = 18,
    cost: float = 5e-4,
    criterion: str = "es:0.1",
    epochs: int = 30,
    seed: int = 0,
    num_threads: int | None = None,
    vol_forecasts: bool = True,
    cnn_lstm: CnnLstmSettings | None = DEFAULT_CNN_LSTM,
    forecast_inputs: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every period of ``as_of`` (module docstring; default :func:`rolling_as_of` over the
    whole history) and their pool; a JSON-able document. ``vol_forecasts`` adds the
    realized-vol forecasts on the same dates (``cnn_lstm`` None: the baselines only);
    ``forecast_inputs`` names the forecasters a deep hedger is retrained to read (of
    :data:`FORECASTERS`; default :data:`FORECAST_INPUTS`, empty: none)."""
    forecast_inputs = FORECAST_INPUTS if forecast_inputs is None else tuple(forecast_inputs)
    unknown = [name for name in forecast_inputs if name not in FORECASTERS]
    if unknown:
        raise ValueError(f"forecast inputs {unknown}: the forecasters are {list(FORECASTERS)}")
    if "cnn_lstm" in forecast_inputs and cnn_lstm is None:
        raise ValueError("the cnn_lstm forecast input needs the CNN-LSTM (cnn_lstm is None)")
    started = time.perf_counter()
    source = HistorySource(history)
    bars = source.history.ts.astype("datetime64[us]").astype("datetime64[D]")
    if as_of is None:
        as_of = rolling_as_of(bars[0], bars[-1], train_years, test_months)
    dates = [np.datetime64(day, "D") for day in as_of]
    if not dates:
        raise ValueError(
            f"no as_of date: the history ({bars[0]} to {bars[-1]}) is shorter than "
            f"{train_years} training years and {test_months} test months"
        )
    # The codes some period reads (a code's name ends with its expiry date), with a month
    # of margin on each side.
    margin = np.timedelta64(31, "D")
    windows = [
        (d - np.timedelta64(int(train_years * 365.25), "D") - margin,
         _months_after(d, test_months) + margin)
        for d in dates
    ]  # fmt: skip
    wanted = [
        code
        for code in source.list_codes()
        if any(lo <= np.datetime64(code[-10:], "D") <= hi for lo, hi in windows)
    ]
    # Per code, as the pipeline's partitions compute them: the implied-vol solve iterates
    # until its whole batch converges, so a batch holding later codes would move earlier
    # codes' vols in the last digits.
    features = pl.concat([compute_features(source.load(code)) for code in wanted])
    market = trailing_realized_vol(source.history)
    episodes = history_episodes(features, n_steps, CONTEXT, market)
    loaded = time.perf_counter() - started
    problem = history_problem(n_steps, cost, CONTEXT)
    risk = parse_criterion(criterion)
    periods, pooled_pnl, pooled_clusters = [], [], []
    with torch_threads(num_threads), tempfile.TemporaryDirectory() as scratch:
        # The forecasts first: each period's hedgers may read them.
        fitted = []
        if vol_forecasts or forecast_inputs:
            # The CNN-LSTM only where its scores or its forecast are asked for; every day's
            # forecasts only where a hedger reads them.
            network = cnn_lstm if vol_forecasts or "cnn_lstm" in forecast_inputs else None
            fitted = _fit_forecasts(
                source.history, as_of, test_months, seed, network, bool(forecast_inputs)
            )
        for i, day in enumerate(dates):
            every = fitted[i]["all_days"] if forecast_inputs else {}
            report, pnl, clusters = _period(
                episodes,
                day,
                forecasts={
                    name: (every["dates"], np.sqrt(every["forecasts"][name]))
                    for name in forecast_inputs
                },
                problem=problem,
                risk=risk,
                train_years=train_years,
                validation_weeks=validation_weeks,
                test_months=test_months,
                epochs=epochs,
                seed=seed,
                scratch=Path(scratch) / f"period-{i}",
            )
            periods.append(report)
            pooled_pnl.append(pnl)
            # Periods never share a block: offset each period's block ids.
            pooled_clusters.append(clusters + 1_000_000 * i)
    vol = _vol_report(fitted) if vol_forecasts else None
    pooled = pool(pooled_pnl, pooled_clusters, MODEL, seed)
    names = [with_forecast(name) for name in forecast_inputs]
    pairs = [(name, MODEL) for name in names] + [(b, a) for a, b in combinations(names, 2)]
    return {
        "settings": {
            "history": history,
            "as_of": list(as_of),
            "train_years": train_years,
            "validation_weeks": validation_weeks,
            "test_months": test_months,
            "n_steps": n_steps,
            "cost": cost,
            "criterion": criterion,
            "epochs": epochs,
            "seed": seed,
            "forecast_inputs": list(forecast_inputs),
            "codes_loaded": len(wanted),
            "episodes": len(episodes),
            "load_seconds": loaded,
            "seconds": time.perf_counter() - started,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine_info("numpy", "torch", "polars")
            | {"torch_threads": num_threads or torch.get_num_threads()},
        },
        "periods": periods,
        "pooled": pooled,
        "forecast_inputs": paired_gains(pooled_pnl, pooled_clusters, pairs, seed),
        "vol_forecasts": vol,
    }


def against_baselines(
    pnls: dict[str, torch.Tensor], clusters: torch.Tensor, model: str, seed: int
) -> dict[str, Any]:
    """Every hedger's ES10 against BS delta's and against the strongest baseline's on the same
    episodes, with block-bootstrap intervals over ``clusters``: the ``vs_bs_delta``,
    ``strongest_baseline`` and ``vs_strongest`` entries of a period or of the pool."""
    vs_delta = es_differences(pnls, "bs_delta", clusters, seed=seed)
    es10 = {name: {"es10": row.hedger} for name, row in vs_delta.items()}
    strongest = compare(es10, pnls, clusters, model, seed=seed)
    return {
        "vs_bs_delta": {name: row.as_dict() for name, row in vs_delta.items()},
        "strongest_baseline": strongest.baseline,
        "vs_strongest": {name: row.as_dict() for name, row in strongest.rows.items()},
    }


def pool(
    pnls: Sequence[dict[str, torch.Tensor]],
    clusters: Sequence[torch.Tensor],
    model: str,
    seed: int,
) -> dict[str, Any]:
    """:func:`against_baselines` over every period's episodes at once; the periods' cluster
    ids must not collide (a period's blocks are its own)."""
    return against_baselines(*_joined(pnls, clusters), model, seed)


def _joined(
    pnls: Sequence[dict[str, torch.Tensor]], clusters: Sequence[torch.Tensor]
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every period's P&L per hedger and cluster ids, one after the other."""
    joined = {name: torch.cat([p[name] for p in pnls]) for name in pnls[0]}
    return joined, torch.cat(list(clusters))


def paired_gains(
    pnls: Sequence[dict[str, torch.Tensor]],
    clusters: Sequence[torch.Tensor],
    pairs: Iterable[tuple[str, str]],
    seed: int,
) -> list[dict[str, Any]]:
    """Each (hedger, what it builds on) pair of ``pairs`` with both in the tables, pooled over
    the periods (whose cluster ids must not collide): the hedger's ES10 minus the other's, with
    its 95 % block-bootstrap interval, as ``{"hedger_name", "builds_on", **difference}``."""
    joined, blocks = _joined(pnls, clusters)
    gains = []
    for hedger, before in pairs:
        if hedger in joined and before in joined:
            pair = {before: joined[before], hedger: joined[hedger]}
            row = es_differences(pair, before, blocks, seed=seed)[hedger]
            gains.append({"hedger_name": hedger, "builds_on": before, **row.as_dict()})
    return gains


def gains_table(gains: Iterable[dict[str, Any]], first: str) -> str:
    """:func:`paired_gains`' rows as a table whose first column is headed ``first``."""
    rows = [
        [
            d["hedger_name"],
            d["builds_on"],
            f"{d['hedger']:.3f}",
            f"{d['baseline']:.3f}",
            f"{d['difference']:+.3f}",
            f"{d['low']:+.3f} to {d['high']:+.3f}",
            d["verdict"],
        ]
        for d in gains
    ]
    header = [first, "builds on", "its ES10", "ES10 before", "Δ", "95 % interval", "verdict"]
    return markdown_table(header, rows, right_from=2)


def _garch_or_arch(returns: np.ndarray) -> tuple[float, float] | None:
    """(α, β) of the history source's variance-targeted GARCH(1,1) fit; where it lands on
    its persistence bound (NASDAQ 1999–2005: α + β ≈ 0.9999), ``arch``'s own three-parameter
    fit's, so that one near-integrated stretch of history does not end the walk-forward."""
    fitted = fit_garch(returns)
    if fitted is not None:
        return fitted
    from arch import arch_model

    params = arch_model(returns, mean="Zero", vol="GARCH", p=1, q=1).fit(disp="off").params
    alpha, beta = float(params["alpha[1]"]), float(params["beta[1]"])
    return (alpha, beta) if alpha >= 0.0 and beta >= 0.0 and alpha + beta < 1.0 else None


def _fit_forecasts(
    history: History,
    as_of: Sequence[str],
    test_months: int,
    seed: int,
    cnn_lstm: CnnLstmSettings | None,
    all_days: bool,
) -> list[dict[str, Any]]:
    """The realized-vol forecasts of ``quant.vol_forecast`` on the hedging periods' dates: each
    fitted before its ``as_of`` (expanding window), tested on the trading days of the next
    ``test_months`` whose 5-day target is known, with the stage's own CNN-LSTM network; with
    ``all_days``, every day's forecasts too."""

    def network(settings: CnnLstmSettings, n_features: int) -> CnnLstm:
        return CnnLstm(CnnLstmConfig(n_features=n_features, n_targets=1, **settings.sizes))

    dates, closes, iv = daily_series(history)
    results = walk_forward_forecasts(
        dates,
        closes,
        as_of,
        fit_garch=_garch_or_arch,
        network=network if cnn_lstm is not None else None,
        # ~21 trading days a month, less the target's 5 days and one of slack.
        test_days=21 * test_months - HORIZON - 1,
        seed=seed,
        cnn_lstm=cnn_lstm or DEFAULT_CNN_LSTM,
        iv=iv,
        all_days=all_days,
    )
    return results


def _vol_report(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The forecasts' scores per period and pooled, without the daily forecasts (thousands of
    numbers, not a report)."""
    pooled = pooled_comparison(results)
    periods = [
        {key: value for key, value in result.items() if key not in ("daily", "all_days")}
        for result in results
    ]
    return {"periods": periods, "pooled": pooled}


def _rows(rows: dict[str, dict[str, Any]], baseline: str) -> list[list[str]]:
    """Table rows of :meth:`PairedDifference.as_dict` documents."""
    out = []
    for name, d in rows.items():
        own = name == baseline
        out.append(
            [
                name,
                f"{d['hedger']:.3f}",
                "baseline" if own else f"{d['difference']:+.3f}",
                "" if own else f"{d['low']:+.3f} to {d['high']:+.3f}",
                "" if own else f"{d['relative']:+.1%}",
                "" if own else d["verdict"],
            ]
        )
    return out


_MARK = {"better": " ✓", "worse": " ✗", "undecided": ""}


def markdown(
    report: dict[str, Any],
    unit: str = "calls",
    intervals: bool = False,
    pnl_unit: str = "% of strike",
) -> str:
    """The document's tables: each test period in a row (every hedger's ES10 minus BS delta's,
    ✓/✗ where its 95 % interval excludes 0: a relative change means little where the hedged
    calls' vol premium leaves BS delta's ES10 near 0), then the pool against BS delta and
    against the strongest baseline with the intervals; then the vol forecasts the same way
    (each period's best baseline's QLIKE in bold, the others' difference). ``unit``: what a
    period's test counts (this bench's calls, ``bench.lineage``'s portfolio windows) and
    ``pnl_unit`` what its P&L is in; ``intervals``: also every period's every hedger with its
    interval, one row each."""
    names = [n for n in report["pooled"]["vs_bs_delta"] if n != "bs_delta"]
    deltas = [f"Δ {n}" for n in names]
    header = ["as_of", "test expiries", unit, "blocks", "bs_delta ES10", *deltas]
    rows = []
    for period in report["periods"]:
        test, vs = period["test"], period["vs_bs_delta"]
        rows.append(
            [
                period["as_of"],
                f"{test['first_expiry']} to {test['last_expiry']}",
                str(test["episodes"]),
                str(test["blocks"]),
                f"{vs['bs_delta']['hedger']:.3f}",
                *(f"{vs[n]['difference']:+.3f}{_MARK[vs[n]['verdict']]}" for n in names),
            ]
        )
    parts = [markdown_table(header, rows, right_from=2), ""]
    pooled = report["pooled"]
    head = ["hedger", f"ES10 ↓ ({pnl_unit})", "Δ vs {}", "95 % interval", "Δ %", "verdict"]
    for baseline, table in (
        ("bs_delta", pooled["vs_bs_delta"]),
        (pooled["strongest_baseline"], pooled["vs_strongest"]),
    ):
        parts.append(
            markdown_table([h.format(baseline) for h in head], _rows(table, baseline), right_from=1)
        )
        parts.append("")
    if report.get("forecast_inputs"):
        parts += [gains_table(report["forecast_inputs"], "deep hedger reading a forecast"), ""]
    if intervals:
        parts += [_period_intervals(report["periods"], names), ""]
    vol = report.get("vol_forecasts")
    if vol:
        parts += [_vol_periods(vol["periods"]), "", markdown_report([], vol["pooled"])]
    return "\n".join(parts)


def _period_intervals(periods: list[dict[str, Any]], names: list[str]) -> str:
    """One row per period and hedger: its ES10, the difference from BS delta's with the 95 %
    interval and verdict, and the period's strongest baseline (a period's table in full)."""
    rows = []
    for period in periods:
        vs = period["vs_bs_delta"]
        for name in names:
            d = vs[name]
            rows.append(
                [
                    period["as_of"],
                    name,
                    f"{d['hedger']:.3f}",
                    f"{d['difference']:+.3f}",
                    f"{d['low']:+.3f} to {d['high']:+.3f}",
                    d["verdict"],
                    period["strongest_baseline"],
                ]
            )
    header = ["as_of", "hedger", "ES10", "Δ vs bs_delta", "95 % interval", "verdict", "strongest"]
    return markdown_table(header, rows, right_from=2)


def _vol_periods(periods: list[dict[str, Any]]) -> str:
    """Each period's best baseline by QLIKE and every other forecaster's QLIKE against it
    (95 % interval; ✓/✗ where it excludes 0): the forecasts' per-period table in one line
    each (``quant.vol_forecast.markdown_report`` has every row)."""
    names = list(periods[0]["losses"])
    rows = []
    for period in periods:
        best = period["best_baseline"]
        found = {
            d["forecaster"]: d
            for d in period["differences"]
            if d["baseline"] == best and d["metric"] == "qlike"
        }
        cells = []
        for name in names:
            d = found.get(name)
            if name == best:
                cells.append(f"**{period['losses'][name]['qlike']:.3f}**")
            else:
                mark = _MARK[d["verdict"]] if d else ""
                cells.append(f"{d['difference']:+.3f}{mark}" if d else "")
        rows.append([period["as_of"], best, *cells])
    header = ["as_of", "best baseline", *(f"QLIKE {n}" for n in names)]
    return markdown_table(header, rows, right_from=2)
