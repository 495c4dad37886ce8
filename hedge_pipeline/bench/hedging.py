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

``market="heston"`` is a stochastic-volatility market: by default (``observe_vol``) the
learned hedgers observe the current vol √v_t and every Black–Scholes Greek, the baselines'
delta and the band's centre included, is taken at it (a desk's delta at today's vol; see
:func:`~hedge_pipeline.hedging.simulator.simulate_episodes`). ``observe_vol=False`` keeps the
constant reference vol ``sigma`` everywhere (the misspecified hedger of the first Heston runs).

``peer="pfhedge"`` trains pfhedge 0.23's own hedgers on the same market, book, cost, criterion,
epochs (or ``peer_epochs``: a peer that needs a longer budget than ours gets it) and paths (its
``HestonStock``/``BrownianStock`` and ``EuropeanOption``; its ``MultiLayerPerceptron`` on
log-moneyness, time, volatility and the previous hedge, as in its README's Heston example; the
no-transaction-band net of its README) and evaluates them with pfhedge's own P&L on the same
evaluation paths as every other hedger (rows ``pfhedge_mlp``, ``pfhedge_ntb``). pfhedge is a
benchmark peer, not a dependency: it is imported only then.
``intervals`` then holds, for the strongest baseline and each peer row, every hedger's ES 10 %
minus that row's on the same paths with a 95 % bootstrap interval
(:func:`~hedge_pipeline.hedging.comparison.es_differences`; paths are independent, resampled
in blocks of :data:`PATHS_PER_BLOCK` to bound the bootstrap's memory). :func:`run_costs` runs
several costs into one document.

The module imports neither Dagster nor MLflow; the CLI prints ``run()`` as JSON::

    .venv/bin/python -c "import json; from hedge_pipeline.bench.hedging import run; \\
        print(json.dumps(run(cost=1e-3, criterion='es:0.1')))"
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hedge_pipeline.bench.machine import machine_info
from hedge_pipeline.harness.threads import torch_threads
from hedge_pipeline.hedging.comparison import es_differences, strongest_baseline
from hedge_pipeline.hedging.deep_hedging import TrainHistory, train_deep_hedger
from hedge_pipeline.hedging.evaluation import baselines, pnl_metrics
from hedge_pipeline.hedging.ppo import PPOHistory, train_ppo
from hedge_pipeline.hedging.simulator import (
    VOLATILITY,
    Book,
    Episodes,
    HedgingProblem,
    Policy,
    book_price,
    rollout,
    simulate_episodes,
)
from hedge_pipeline.quant.market_sim import HestonParams
from hedge_pipeline.quant.risk import (
    EntropicRisk,
    ExpectedShortfall,
    RiskMeasure,
    parse_criterion,
)

ALGORITHMS = ("deep_hedging", "ppo")
PEERS = ("pfhedge",)
PFHEDGE_VERSION = "0.23.0"
PATHS_PER_BLOCK = 100
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
    observe_vol: bool = True,
    peer: str | None = None,
    peer_epochs: int | None = None,
) -> dict[str, Any]:
    """Train ``algorithm`` and evaluate it with the baselines; returns the JSON-able document.

    ``market="heston"`` simulates Heston with ``heston`` (keys of
    :class:`~hedge_pipeline.quant.market_sim.HestonParams`: kappa, theta, xi, rho, v0); the
    hedgers observe √v_t and take their Greeks at it, or with ``observe_vol=False`` use
    Black–Scholes features at ``sigma`` (module docstring). ``peer`` adds a library's hedgers
    (``"pfhedge"``, module docstring). ``head`` picks the deep
    hedger's network (``"ntb"`` or ``"mlp"``; ``"ntb,mlp"`` trains one of each, rows
    ``deep_hedging:ntb`` and ``deep_hedging:mlp``) and ``n_layers`` its depth (width 32, PPO's
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
    if peer is not None and peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r}; expected one of {PEERS}")
    risk = parse_criterion(criterion)
    problem = HedgingProblem(
        book=Book(strikes=(strike,), is_call=(option == "call",)),
        sigma=sigma,
        heston=HestonParams(**heston) if market == "heston" else None,
        maturity=maturity,
        n_steps=steps,
        cost=cost,
        context=(VOLATILITY,) if market == "heston" and observe_vol else (),
    )
    if peer == "pfhedge":
        _check_pfhedge_setting(problem, risk)
    # Every learned hedger gets the same seed, budget, threads and depth, so the comparison
    # is between algorithms, not between their settings.
    shared: dict[str, Any] = {
        "seed": seed,
        "time_budget_s": time_budget_s,
        "num_threads": num_threads,
        "n_layers": n_layers,
    }
    learned: dict[str, tuple[Policy, TrainHistory]] = {}
    heads = [name.strip() for name in head.split(",")]
    for each in heads if "deep_hedging" in algorithms else []:
        row = "deep_hedging" if len(heads) == 1 else f"deep_hedging:{each}"
        learned[row] = train_deep_hedger(
            problem,
            risk,
            epochs=epochs,
            paths_per_epoch=paths,
            lr=lr,
            head=each,
            start_at_delta=start_at_delta or None,
            **shared,
        )
    if "ppo" in algorithms:
        learned["ppo"] = train_ppo(
            problem, risk, iterations=epochs, paths_per_iteration=paths, **shared
        )
    eval_generator = torch.Generator().manual_seed(seed + _EVAL_SEED_OFFSET)
    eval_set = simulate_episodes(problem, eval_paths, eval_generator)
    hedgers: dict[str, Policy] = baselines(problem, risk) | {
        name: policy for name, (policy, _) in learned.items()
    }
    results, pnls = {}, {}
    for name, hedger in hedgers.items():
        start = time.perf_counter()
        with torch.no_grad():
            pl = rollout(problem, eval_set, hedger)[0].double()
        eval_seconds = time.perf_counter() - start
        history = learned[name][1] if name in learned else TrainHistory()
        train_steps = history.epochs * paths * steps
        pnls[name] = pl
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
    references = [strongest_baseline(results)]
    if peer == "pfhedge":
        # The market's state on the evaluation paths (the same draws, so the same paths),
        # for pfhedge's volatility feature whether or not our hedgers observe it.
        observed = simulate_episodes(
            dataclasses.replace(problem, context=(VOLATILITY,)),
            eval_paths,
            torch.Generator().manual_seed(seed + _EVAL_SEED_OFFSET),
        )
        for name, (pl, history) in pfhedge_hedgers(
            problem, risk, observed, epochs=peer_epochs or epochs, paths=paths, seed=seed,
            num_threads=num_threads,
        ).items():  # fmt: skip
            pnls[name] = pl
            results[name] = pnl_metrics(pl, risk) | {
                "train_seconds": history.seconds,
                "train_cpu_seconds": history.cpu_seconds,
                "steps_per_second": history.epochs * paths * steps / history.seconds,
                "epochs": history.epochs,
            }
            references.append(name)
    clusters = torch.arange(eval_paths) // PATHS_PER_BLOCK
    intervals = {
        reference: {
            name: row.as_dict()
            for name, row in es_differences(pnls, reference, clusters, seed=seed).items()
            if name != reference
        }
        for reference in references
    }
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
        "observe_vol": observe_vol,
        "observations": list(problem.observations),
        "peer": peer,
        "peer_epochs": peer_epochs or epochs if peer else None,
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
    return {"settings": settings, "results": results, "intervals": intervals}


def run_costs(costs: Sequence[float], **kwargs: Any) -> dict[str, Any]:
    """:func:`run` at each of ``costs`` (same seed, so the same training and evaluation
    paths), side by side in one document: ``{"costs": [...], "runs": [run(cost=c), ...]}``."""
    if not costs:
        raise ValueError("need at least one cost")
    return {"costs": list(costs), "runs": [run(cost=cost, **kwargs) for cost in costs]}


def _check_pfhedge_setting(problem: HedgingProblem, risk: RiskMeasure) -> None:
    """Refuse, before any training, what pfhedge's hedgers cannot be set up for."""
    if not isinstance(risk, ExpectedShortfall | EntropicRisk):
        raise ValueError(f"pfhedge has no criterion matching {risk}; use entropic:A or es:P")
    book = problem.book
    if len(book.strikes) != 1 or book.weights != (1.0,) or problem.instrument is not None:
        raise ValueError("the pfhedge peer hedges one short option with the underlying alone")
    if problem.drift or problem.slippage or problem.fixed_fee:
        raise ValueError("the pfhedge peer's market has no drift, slippage or fixed fee")


def pfhedge_hedgers(
    problem: HedgingProblem,
    risk: RiskMeasure,
    evaluation: Episodes,
    *,
    epochs: int,
    paths: int,
    seed: int,
    num_threads: int | None = None,
) -> dict[str, tuple[Tensor, TrainHistory]]:
    """pfhedge's MLP and no-transaction-band hedgers trained on ``problem``'s market with its
    own simulator and ``Hedger.fit`` (Adam, lr 1e-3, one step per epoch of ``paths`` fresh
    paths), then their P&L by pfhedge's own ``compute_pl`` on ``evaluation``'s spot and
    variance (vol², the episodes observing the vol). Rows ``pfhedge_mlp``, ``pfhedge_ntb``.

    Shape:
        evaluation: spot (n, n_steps + 1), vol (n, n_steps + 1, 1) → each P&L (n,)
    """
    try:
        import pfhedge
        from pfhedge.instruments import BrownianStock, EuropeanOption, HestonStock
        from pfhedge.nn import BlackScholes, Clamp, Hedger, MultiLayerPerceptron
        from pfhedge.nn import EntropicRiskMeasure as PfEntropic
        from pfhedge.nn import ExpectedShortfall as PfShortfall
    except ImportError as error:
        raise RuntimeError(
            f"peer='pfhedge' needs pfhedge: pip install pfhedge=={PFHEDGE_VERSION} (with "
            "--no-deps where it would downgrade numpy; it runs on numpy 2)"
        ) from error
    if pfhedge.__version__ != PFHEDGE_VERSION:
        raise RuntimeError(f"peer='pfhedge' is set up for pfhedge {PFHEDGE_VERSION}, "
                           f"found {pfhedge.__version__}")  # fmt: skip
    _check_pfhedge_setting(problem, risk)
    criterion: nn.Module = (
        PfShortfall(risk.p) if isinstance(risk, ExpectedShortfall) else PfEntropic(risk.a)
    )
    book, h = problem.book, problem.heston

    def derivative() -> Any:
        if h is None:
            stock = BrownianStock(sigma=problem.sigma, cost=problem.cost, dt=problem.dt)
        else:
            stock = HestonStock(
                kappa=h.kappa, theta=h.theta, sigma=h.xi, rho=h.rho, cost=problem.cost,
                dt=problem.dt,
            )  # fmt: skip
        return EuropeanOption(
            stock, call=book.is_call[0], strike=book.strikes[0], maturity=problem.maturity
        )

    class NoTransactionBandNet(nn.Module):
        """pfhedge's README example (Imaki et al. 2021): the previous hedge clamped into a
        band of learned widths around the Black–Scholes delta at the current volatility."""

        def __init__(self, option: Any) -> None:
            super().__init__()
            self.delta = BlackScholes(option)
            self.mlp = MultiLayerPerceptron(out_features=2)
            self.clamp = Clamp()

        def inputs(self) -> list[str]:
            return [*self.delta.inputs(), "prev_hedge"]

        def forward(self, input: Tensor) -> Tensor:
            prev_hedge = input[..., [-1]]
            delta = self.delta(input[..., :-1])
            width = self.mlp(input[..., :-1])
            lower = delta - nn.functional.leaky_relu(width[..., [0]])
            upper = delta + nn.functional.leaky_relu(width[..., [1]])
            return self.clamp(prev_hedge, min=lower, max=upper)

    init_state = (problem.s0,) if h is None else (problem.s0, h.v0)
    results = {}
    with torch_threads(num_threads):
        for name in ("pfhedge_mlp", "pfhedge_ntb"):
            torch.manual_seed(seed)
            option = derivative()
            if name == "pfhedge_mlp":
                # The README's Heston example: volatility among the inputs.
                inputs = ["log_moneyness", "expiry_time", "volatility", "prev_hedge"]
                hedger = Hedger(MultiLayerPerceptron(), inputs, criterion=criterion)
            else:
                model = NoTransactionBandNet(option)
                hedger = Hedger(model, model.inputs(), criterion=criterion)
            start, cpu_start = time.perf_counter(), time.process_time()
            loss = hedger.fit(
                option, n_epochs=epochs, n_paths=paths, init_state=init_state, verbose=False
            )
            history = TrainHistory(
                loss=[float(x) for x in loss],
                seconds=time.perf_counter() - start,
                cpu_seconds=time.process_time() - cpu_start,
            )
            stock = option.ul()
            stock.register_buffer("spot", evaluation.spot)
            if h is not None:
                stock.register_buffer("variance", evaluation.vol[..., 0].square())
            with torch.no_grad():
                pl = hedger.compute_pl(option).double()
            results[name] = (pl, history)
    return results
