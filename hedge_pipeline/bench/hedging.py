"""``hedge bench hedging``: baselines and learned hedgers on one set of evaluation paths.

The defaults are the reference experiment E1 (docs/notes.md, E1): GBM, σ = 0.2,
a short at-the-money call with 30 daily rebalances, proportional cost c, and 200,000 fresh
evaluation paths drawn from a seed separate from training's, the same paths for every hedger,
so differences between hedgers are not Monte Carlo noise between path sets.

Each hedger reports ``price`` (the criterion's cash, lower is better), ``mean_pl``,
``std_pl``, ``es10`` (expected shortfall at 10 %, whatever the criterion), ``train_seconds``
(0 for the baselines; ``train_cpu_seconds`` the process CPU time, the fairer figure on shared
cores) and ``steps_per_second``: path-steps per second of training for a
learned hedger (epochs · paths · n_steps / train_seconds), of evaluation for a baseline.
``algorithm`` names the learned hedgers, comma-separated: ``deep_hedging`` and/or ``ppo``
(PPO's epochs are its iterations of ``paths`` fresh paths; it also reports
``rollout_steps_per_second``, experience collection alone).
Metrics are computed in float64 from float32 rollouts.

The module imports neither Dagster nor MLflow; the CLI prints ``run()`` as JSON::

    .venv/bin/python -c "import json; from hedge_pipeline.bench.hedging import run; \\
        print(json.dumps(run(cost=1e-3, criterion='es:0.1')))"
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import torch

from hedge_pipeline.bench.machine import machine_info
from hedge_pipeline.hedging.deep_hedging import TrainHistory, train_deep_hedger
from hedge_pipeline.hedging.evaluation import baselines, pnl_metrics
from hedge_pipeline.hedging.ppo import PPOHistory, train_ppo
from hedge_pipeline.hedging.simulator import (
    Book,
    HedgingProblem,
    Policy,
    book_price,
    rollout,
    simulate_paths,
)
from hedge_pipeline.quant.market_sim import HestonParams
from hedge_pipeline.quant.risk import parse_criterion

ALGORITHMS = ("deep_hedging", "ppo")
# Offsets the evaluation seed far from any training seed a sweep would use.
_EVAL_SEED_OFFSET = 1_000_003


def run(
    market: str = "gbm",
    cost: float = 1e-3,
    criterion: str = "entropic:1",
    steps: int = 30,
    maturity: float = 30 / 250,
    strike: float = 1.0,
    option: str = "call",
    sigma: float = 0.2,
    heston: dict[str, float] | None = None,
    algorithm: str = "deep_hedging",
    epochs: int = 200,
    paths: int = 10_000,
    eval_paths: int = 200_000,
    seed: int = 0,
    *,
    head: str = "ntb",
    lr: float = 1e-3,
    time_budget_s: float | None = None,
    num_threads: int | None = None,
    n_layers: int = 4,
    start_at_delta: bool = False,
) -> dict[str, Any]:
    """Train ``algorithm`` and evaluate it with the baselines; returns the JSON-able document.

    ``market="heston"`` simulates Heston with ``heston`` (keys of
    :class:`~hedge_pipeline.quant.market_sim.HestonParams`: kappa, theta, xi, rho, v0) while
    the hedgers keep using Black–Scholes features at ``sigma``. ``head`` picks the deep
    hedger's network (``"ntb"`` or ``"mlp"``) and ``n_layers`` its depth (width 32, PPO's
    networks too); ``lr`` is the deep hedger's, PPO keeps its own (3e-4). ``start_at_delta``
    starts the deep hedger at the BS delta hedge (zero band) instead of pfhedge's random band. The
    Whalley–Wilmott risk aversion is the
    entropic parameter a when the criterion is entropic, else 1.
    """
    if market not in ("gbm", "heston"):
        raise ValueError(f"unknown market {market!r}; expected 'gbm' or 'heston'")
    algorithms = [name.strip() for name in algorithm.split(",")]
    if not algorithms or any(name not in ALGORITHMS for name in algorithms):
        raise ValueError(f"unknown algorithm {algorithm!r}; expected some of {ALGORITHMS}")
    if option not in ("call", "put"):
        raise ValueError(f"option must be 'call' or 'put', got {option!r}")
    risk = parse_criterion(criterion)
    problem = HedgingProblem(
        book=Book(strikes=(strike,), is_call=(option == "call",)),
        sigma=sigma,
        heston=HestonParams(**heston) if market == "heston" else None,
        maturity=maturity,
        n_steps=steps,
        cost=cost,
    )
    # Every learned hedger gets the same seed, budget, threads and depth, so the comparison
    # is between algorithms, not between their settings.
    shared: dict[str, Any] = {
        "seed": seed,
        "time_budget_s": time_budget_s,
        "num_threads": num_threads,
        "n_layers": n_layers,
    }
    learned: dict[str, tuple[Policy, TrainHistory]] = {}
    if "deep_hedging" in algorithms:
        learned["deep_hedging"] = train_deep_hedger(
            problem,
            risk,
            epochs=epochs,
            paths_per_epoch=paths,
            lr=lr,
            head=head,
            start_at_delta=start_at_delta or None,
            **shared,
        )
    if "ppo" in algorithms:
        learned["ppo"] = train_ppo(
            problem, risk, iterations=epochs, paths_per_iteration=paths, **shared
        )
    eval_generator = torch.Generator().manual_seed(seed + _EVAL_SEED_OFFSET)
    eval_set = simulate_paths(problem, eval_paths, eval_generator)
    hedgers: dict[str, Policy] = baselines(problem, risk) | {
        name: policy for name, (policy, _) in learned.items()
    }
    results = {}
    for name, hedger in hedgers.items():
        start = time.perf_counter()
        with torch.no_grad():
            pl = rollout(problem, eval_set, hedger)[0].double()
        eval_seconds = time.perf_counter() - start
        history = learned[name][1] if name in learned else TrainHistory()
        train_steps = history.epochs * paths * steps
        results[name] = pnl_metrics(pl, risk) | {
            "train_seconds": history.seconds,
            "train_cpu_seconds": history.cpu_seconds,
            "steps_per_second": (
                train_steps / history.seconds
                if name in learned
                else eval_paths * steps / eval_seconds
            ),
        }
        if name in learned:
            results[name]["epochs"] = history.epochs
        if isinstance(history, PPOHistory):
            results[name]["rollout_steps_per_second"] = history.rollout_steps_per_second
    settings = {
        "market": market,
        "cost": cost,
        "criterion": criterion,
        "steps": steps,
        "maturity": maturity,
        "strike": strike,
        "option": option,
        "sigma": sigma,
        "heston": heston,
        "algorithm": algorithm,
        "head": head,
        "n_layers": n_layers,
        "start_at_delta": start_at_delta,
        "epochs": epochs,
        "paths": paths,
        "eval_paths": eval_paths,
        "seed": seed,
        "lr": lr,
        "time_budget_s": time_budget_s,
        "bs_price": book_price(problem),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info("numpy", "torch")
        | {"torch_threads": num_threads or torch.get_num_threads()},
    }
    return {"settings": settings, "results": results}
