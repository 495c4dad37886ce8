"""The ``hedge`` command (docs/design.md §6).

Every subcommand first points Dagster at the data directory (``paths.instance_env``) so that
runs started here show up in the UI of ``hedge ui`` and two data directories never mix.

Errors the user can fix (a bad ``HEDGE_*`` value, an unknown template, model or alias) are
``UserError``: printed as one line, ``hedge: error: <message>``, exit status 2; ``--verbose``
prints the traceback above that line. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from hedge_pipeline.cli import backfill
from hedge_pipeline.cli.selections import PER_CODE_JOBS, SELECTIONS
from hedge_pipeline.harness.progress import duration
from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.locks import file_lock
from hedge_pipeline.runtime.settings import ProfileName, Settings, SourceKind, UserError
from hedge_pipeline.stages.selection.templates import SplitMode
from hedge_pipeline.stages.specialists.config import Forecasts

if TYPE_CHECKING:  # the registry imports MLflow: seconds a command that needs none should not pay
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from hedge_pipeline.registry.lineage import ModelRef

# The console shows progress lines and warnings; every event stays in the run's event log.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# A Python warning filter (PYTHONWARNINGS syntax): Dagster's preview notice, once per
# training step, matched by the start of its message.
PIPES_PREVIEW = "ignore:Function `PipesMessageReader.expected_writer_count` is currently in preview"


@contextmanager
def _user_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """Re-raise the domain errors ``kinds`` as ``UserError`` (the original chained, for
    ``--verbose``).

    Only where the command knows that such an error can only come from what the user asked for
    (an unknown name, a bad reference): the same class raised elsewhere may be a bug, so the
    domain modules do not derive from ``UserError`` themselves.
    """
    try:
        yield
    except kinds as exc:
        raise UserError(str(exc)) from exc


def _set_environment(source: str | None, profile: str | None = None) -> None:
    """The data directory's instance for this process and every process it starts.

    ``DAGSTER_HOME`` is the repo root (its ``dagster.yaml``) unless the user set one, as the
    Makefile's ``DAGSTER_HOME ?=`` and Dagster's own commands do: an operator's copy of
    ``dagster.yaml`` (another run launcher, other queue limits) then governs ``hedge run``'s runs.
    """
    env = paths.instance_env()
    os.environ.update(
        {**env, "DAGSTER_HOME": os.environ.get("DAGSTER_HOME") or env["DAGSTER_HOME"]}
    )
    if source:
        os.environ["HEDGE_SOURCE"] = source
    if profile:
        os.environ["HEDGE_PROFILE"] = profile


def _instance():
    """The Dagster instance of the data directory, its storage initialised by one process at a
    time (see ``hedge_pipeline.runtime.locks``)."""
    import dagster as dg

    with file_lock(paths.dagster_dir() / ".init.lock"):
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)
        instance.get_dynamic_partitions("weekly_code")
        instance.all_instigator_state()
    return instance


def _outcome(result, started: float):
    """The console's outcome (``run_queue.RunOutcome``) of an in-process run's ``result``."""
    from hedge_pipeline.cli.run_queue import RunOutcome

    failures = tuple(
        f"{event.step_key}: {event.step_failure_data.error.message.strip()}"
        for event in result.all_events
        if event.is_step_failure and event.step_failure_data.error
    )
    return RunOutcome(result.success, result.run_id, time.perf_counter() - started, failures)


def _alive_in_source(lifetimes, as_of: str | None, listed: int) -> tuple[str, list[str]]:
    """``as_of`` (default: ``latest_complete_as_of``, said on the console) and the codes of a
    source that lists their lifetimes (a history) alive then: the only ones the run ingests,
    since the selection will hold no other."""
    from hedge_pipeline.stages.selection.book import (
        SelectionError,
        alive_or_explain,
        latest_bar,
        latest_complete_as_of,
        parse_as_of,
    )

    if as_of is None:
        when = latest_complete_as_of(lifetimes)
        as_of = when.isoformat()
        print(
            f"as_of not given: {as_of}, the latest whose weekly codes are quoted to expiry "
            "(--as-of picks another; --as-of latest the codes alive at the last bar)"
        )
    with _user_errors(SelectionError):
        codes = alive_or_explain(lifetimes, parse_as_of(as_of, latest_bar(lifetimes)))
    print(f"as_of {as_of}: {len(codes)} of {listed} weekly codes alive")
    return as_of, codes


def _active_codes(instance, as_of: str) -> list[str]:
    """The weekly codes alive at ``as_of`` that the selection just made gave a book: the only
    ones whose specialists the run trains (a history of ~1,000 codes trains its 4-5 active
    ones; a walk-forward split skips those with too few bars before ``as_of``)."""
    import dagster as dg

    event = instance.get_latest_materialization_event(dg.AssetKey("portfolio_selection"))
    metadata = event.asset_materialization.metadata
    active = sorted(metadata["options_per_code"].value)
    print(f"active weekly codes at {as_of}: {', '.join(active)}", flush=True)
    skipped = metadata["skipped_codes"].value
    for code, why in sorted(skipped.items()):
        print(f"  no book for {code}: {why}", flush=True)
    return active


def _run_console() -> None:
    """The console of ``hedge run``, in every process it starts (the code server and run
    workers of per-code runs, and the training children, which inherit the environment):
    without two kinds of noise, Dagster's notice that a Pipes API it calls is in preview, once
    per training step, and MLflow's INFO lines ("Creating initial MLflow database tables..."),
    neither about anything the user did (MLflow's warnings still show; ``MLFLOW_LOGGING_LEVEL``
    set by the user wins), nor MLflow's "Downloading artifacts" progress bars each time a stage
    loads a model (a bar of a few files, drawn in the middle of the epoch lines); with a line
    per training epoch (``HEDGE_PROGRESS``)."""
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    # The per-code runs' workers are processes of the code server, not of this one: the notice
    # reaches them as a filter of every interpreter started from here, by its message (a filter
    # by category there would import dagster in each interpreter as it starts).
    filters = [f for f in os.environ.get("PYTHONWARNINGS", "").split(",") if f]
    os.environ["PYTHONWARNINGS"] = ",".join(dict.fromkeys([*filters, PIPES_PREVIEW]))
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if Settings.from_env().progress is None:  # HEDGE_PROGRESS=0 keeps it off
        os.environ[Settings.variable("progress")] = "1"


def _check_template(name: str | None) -> None:
    """Load the portfolio template before any run starts.

    An unknown or malformed template (or a bad ``HEDGE_PORTFOLIO_DIR``) is the user's to fix;
    found here it costs a second and one line, where the ``portfolio_selection`` step would
    fail with a Dagster traceback after minutes of market data.
    """
    from hedge_pipeline.stages.selection.templates import (
        DEFAULT_TEMPLATE,
        TemplateError,
        load_template,
    )

    with _user_errors(TemplateError):
        load_template(name or DEFAULT_TEMPLATE)


# The steps of a ``hedge run`` plan that train, and the op (the asset) each one's config goes to.
TRAINING_OPS = {
    "cnn_lstm_model": "cnn_lstm_model",
    "specialists": "specialist_agents",
    "meta_controller": "meta_controller",
    "joint_model": "joint_model",
    "hedge_ensemble": "hedge_ensemble",
}


def stage_run_config(
    step: str, forecasts: str | None = None, seed: int | None = None
) -> dict[str, Any]:
    """The run config of ``hedge run``'s runs of ``step`` (a plan's step: an asset, or a
    per-code stage): quiet, and what the command line chose for a training step's op: its
    ``seed`` (every training stage; the joint model's members take it and the next ones), the
    specialists' ``forecasts``. Where nothing is chosen the op keeps its config's defaults."""
    chosen: dict[str, Any] = {}
    if seed is not None and step in TRAINING_OPS:
        chosen["seed"] = seed
    if forecasts and step == "specialists":
        chosen["forecasts"] = forecasts
    if not chosen:
        return {**QUIET}
    return {**QUIET, "ops": {TRAINING_OPS[step]: {"config": chosen}}}


def _cmd_run(args: argparse.Namespace) -> int:
    _set_environment(args.source, args.profile)
    # Imported after the environment is set: the definitions read it when they load.
    import dagster as dg

    _run_console()

    from hedge_pipeline.cli.run_queue import RunQueue, report
    from hedge_pipeline.definitions import defs
    from hedge_pipeline.orchestration.partitions import weekly_code_partitions
    from hedge_pipeline.orchestration.resources import ChainSourceResource
    from hedge_pipeline.stages.selection.templates import HISTORY_TEMPLATE
    from hedge_pipeline.tables.schema import UnknownWeeklyCodeError

    if args.select not in SELECTIONS:
        choices = ", ".join(SELECTIONS)
        raise UserError(f"--select {args.select!r}: expected one of {choices}")
    plan = SELECTIONS[args.select]
    chains = ChainSourceResource.from_env()
    # A history lists ~1,000 weekly codes over 20 years: its run works on the codes alive at
    # one as_of, with the template sized for daily bars, unless told otherwise.
    history = chains.kind == "history"
    as_of = args.as_of
    template = args.template or (HISTORY_TEMPLATE if history else None)
    if "portfolio_selection" in plan:
        _check_template(template)
        if args.split_mode == "as_of" and as_of is None and not history:
            # Found here it costs one line; in portfolio_selection, the market data first.
            raise UserError(
                "--split-mode as_of needs --as-of: the date that ends training and starts the test"
            )
    instance = _instance()
    name = weekly_code_partitions.name
    if "market_data" in plan:
        source = chains.build()
        available = source.list_codes()
        codes = args.partition or sorted(available)
        if not args.partition and hasattr(source, "lifetimes") and (as_of or history):
            as_of, codes = _alive_in_source(source.lifetimes(), as_of, len(available))
        unknown = [c for c in codes if c not in available]
        if unknown:
            # A KeyError: its message as written is args[0] (str() would quote it).
            raise UserError(UnknownWeeklyCodeError(unknown[0], sorted(available)).args[0])
        missing = [c for c in codes if not instance.has_dynamic_partition(name, c)]
        if missing:
            instance.add_dynamic_partitions(name, missing)
    else:
        codes = args.partition or sorted(instance.get_dynamic_partitions(name))
    global_job = defs.resolve_implicit_global_asset_job_def()
    timings: dict[str, float] = {}
    queue: RunQueue | None = None
    with ExitStack() as stack:
        for asset in plan:
            started = time.perf_counter()
            if asset in PER_CODE_JOBS:
                if queue is None:  # started once, for the first per-code stage
                    queue = stack.enter_context(RunQueue(instance))
                label = PER_CODE_JOBS[asset].removesuffix("_job").replace("_", " ")
                run_config = stage_run_config(asset, args.forecasts, args.seed)
                if not queue.run_per_code(PER_CODE_JOBS[asset], asset, codes, label, run_config):
                    return 1
                timings[asset] = time.perf_counter() - started
                continue
            run_config = stage_run_config(asset, seed=args.seed)
            if asset == "portfolio_selection":
                chosen = {"template": template, "as_of": as_of, "split_mode": args.split_mode}
                config = {key: value for key, value in chosen.items() if value is not None}
                if config:
                    run_config["ops"] = {asset: {"config": config}}
            result = global_job.execute_in_process(
                asset_selection=[dg.AssetKey(asset)],
                instance=instance,
                run_config=run_config,
                raise_on_error=False,
            )
            if not report(asset, _outcome(result, started)):
                return 1
            timings[asset] = time.perf_counter() - started
            if asset == "portfolio_selection" and as_of:
                codes = _active_codes(instance, as_of)
    _print_summary(instance, codes, timings)
    _print_where_to_look("hedge_ensemble" in plan)
    return 0


# The registered models each training asset's materialization names (``version``/``versions``).
MODELS = {
    "cnn_lstm_model": "hedge-cnn-lstm",
    "meta_controller": "hedge-meta-controller",
    "joint_model": "hedge-joint",
    "hedge_ensemble": "hedge-ensemble",
}


def _print_summary(instance, codes: list[str], timings: dict[str, float]) -> None:
    """What the run trained, the verdict on the ensemble against the strongest baseline (with
    its interval and windows), and where the time went."""
    import dagster as dg

    def latest(asset: str) -> dict:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        metadata = event.asset_materialization.metadata if event else {}
        return {key: value.value for key, value in metadata.items()}

    trained = []
    for asset in timings:
        if asset == "specialists":
            trained.append(f"{len(codes)} specialists (hedge-specialist-<code>)")
        elif asset in MODELS:
            found = latest(asset)
            numbers = found.get("versions") or [found.get("version")]
            versions = ", ".join(f"v{v}" for v in numbers if v is not None)
            trained.append(f"{MODELS[asset]} {versions}".strip())
    print("\nsummary")
    if trained:
        print(f"  trained: {'; '.join(trained)}")
    if "hedge_ensemble" in timings:
        ensemble = latest("hedge_ensemble")
        print(
            f"  hedge-ensemble v{ensemble.get('version')}: {ensemble.get('promotion')}: "
            f"{ensemble.get('promotion_reason')}"
        )
        if "verdict" in ensemble:
            print(f"  test (replay): {ensemble['verdict']}")
    total = sum(timings.values())
    parts = "; ".join(f"{asset} {duration(seconds)}" for asset, seconds in timings.items())
    print(f"  time: {parts}; total {duration(total)}")


def _make(target: str) -> str:
    """``make <target>`` as it must be typed here to reach this run's data.

    The Makefile's targets run the venv's commands (``hedge``, ``mlflow`` are not on the PATH
    after ``make run``) on ``$HEDGE_DATA_DIR``, by default the repo's ``data/``; a run on
    another data directory, or from another working directory, needs both said.
    """
    command = f"make {target}"
    if Path.cwd().resolve() != paths.REPO_ROOT:
        command = f"make -C {shlex.quote(str(paths.REPO_ROOT))} {target}"
    if paths.data_dir() != (paths.REPO_ROOT / "data").resolve():
        command = f"HEDGE_DATA_DIR={shlex.quote(str(paths.data_dir()))} {command}"
    return command


def _print_where_to_look(evaluated: bool) -> None:
    """The last lines of ``hedge run``: commands that work as printed (Makefile targets)."""
    rows = [
        (_make("ui"), "Dagster UI on http://127.0.0.1:3000: runs, assets, lineage"),
        (_make("mlflow"), "MLflow UI on http://127.0.0.1:5000: the registered models"),
    ]
    if evaluated:
        rows.append((_make("evaluate"), f"the ensemble's evaluation, under {paths.reports_dir()}"))
    width = max(len(command) for command, _ in rows)
    print(f"\nwarehouse: {paths.warehouse_path()}")
    print("where to look:")
    for command, what in rows:
        print(f"  {command.ljust(width)}  {what}")


def _cmd_ui(args: argparse.Namespace) -> int:
    """Become ``dagster dev`` (webserver and daemon) on the data directory's instance.

    The storage is created first under the lock ``hedge run`` takes, so a ``hedge run`` started
    at the same moment on a fresh data directory does not race it. Then this process *is*
    replaced by ``dagster dev`` (exec, not a child), so SIGTERM from a process manager or
    ``kill`` reaches it and it stops the webserver, the daemon and the code server cleanly; a
    child would leave them running. SIGINT and SIGTERM are reset to their defaults first:
    started in the background of a script they are inherited as ignored, and ``dagster dev``
    then ignores both.
    """
    _set_environment(None)
    _instance()
    command = [
        sys.executable, "-m", "dagster", "dev",
        "-w", str(paths.REPO_ROOT / "workspace.yaml"),
        "-h", args.host, "-p", str(args.port),
    ]  # fmt: skip
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(paths.REPO_ROOT)
    os.execv(sys.executable, command)
    return 1  # not reached: execv replaces the process or raises


def _cmd_portfolios(args: argparse.Namespace) -> int:
    _set_environment(None)
    from hedge_pipeline.stages.selection.report import list_templates, template_info
    from hedge_pipeline.stages.selection.templates import TemplateError

    if args.action == "info" and not args.name:
        raise UserError("hedge portfolios info needs a template NAME (hedge portfolios list)")
    with _user_errors(TemplateError):
        if args.action == "list":
            print(list_templates())
        else:
            print(template_info(args.name, paths.warehouse_path()))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    """Exit 2 for a reference that resolves to nothing, 1 when the lineage has broken links
    (after printing what could be read), 0 otherwise.

    ``show`` prints the headline of each version (``cli.models``); ``--all`` every tag and
    metric (``registry.catalog``); ``--json`` the whole document, whatever the view.
    """
    from hedge_pipeline.cli import models as concise
    from hedge_pipeline.registry import catalog as model_catalog
    from hedge_pipeline.registry import lineage
    from hedge_pipeline.registry import versions as registry

    client = registry.client()
    broken: list[str] = []
    with _user_errors(registry.UnknownModelVersionError, lineage.ReferenceSyntaxError):
        if args.action == "list":
            doc = model_catalog.list_models(client)
            text = model_catalog.render_list(doc, client.tracking_uri)
        elif (ref := lineage.ModelRef.parse(args.ref)).version is None and ref.alias is None:
            doc = model_catalog.model_versions(client, ref.name)
            if args.all or args.json:
                text = model_catalog.render_versions(doc)
            else:
                summaries = [
                    concise.summarize(client, client.get_model_version(ref.name, v["version"]), k)
                    for k, v in enumerate(doc["versions"])
                ]
                text = concise.render_versions(ref.name, summaries, doc["aliases"])
        else:
            version = _resolve_or_explain(client, ref)
            doc = model_catalog.version_detail(client, version)
            if args.all or args.json:
                text = model_catalog.render_detail(doc)
            else:
                summary = concise.summarize(client, version)
                text = concise.render_detail(summary, doc, str(ref))
            broken = doc["broken_links"]
    print(json.dumps(doc, indent=2) if args.json else text)
    for message in broken:
        print(f"hedge models show: broken lineage: {message}", file=sys.stderr)
    return 1 if broken else 0


def _resolve_or_explain(
    client: MlflowClient, ref: ModelRef, command: str = "hedge models show"
) -> ModelVersion:
    """The version ``ref`` names; for an alias no version carries (``@champion`` before any
    promotion), a ``UserError`` that says what there is instead: the latest version, its
    status and why it was not promoted, and the ``command`` that shows it."""
    from hedge_pipeline.registry import lineage
    from hedge_pipeline.registry import versions as registry

    try:
        return lineage.resolve(client, ref)
    except registry.UnknownModelVersionError as missing:
        if ref.alias is None:
            raise
        model = registry.registered_model(client, ref.name)  # unknown model: its own error
        numbers = registry.version_numbers(client, ref.name)
        if ref.alias in model.aliases or not numbers:
            raise
        latest = client.get_model_version(ref.name, str(numbers[-1]))
        flags = ", ".join(sorted(latest.aliases)) or "no alias"
        gated = ref.alias == registry.CHAMPION and "promotion" in latest.tags
        never = " (none has been promoted yet)" if gated else ""
        reason = latest.tags.get("promotion_reason")
        aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(model.aliases.items())) or "none"
        raise UserError(
            f"{ref.name} has no version aliased {ref.alias!r}{never}; its latest is "
            f"v{latest.version} [{flags}]" + (f": {reason}" if reason else "") + f"; aliases: "
            f"{aliases}; instead: {command} {ref.name}@latest"
        ) from missing


def _cmd_evaluate(args: argparse.Namespace) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from hedge_pipeline.registry import lineage, reports
    from hedge_pipeline.registry import versions as registry

    client = registry.client()
    with _user_errors(
        registry.UnknownModelVersionError,
        lineage.ReferenceSyntaxError,
        reports.MissingReportError,
    ):
        version, note = (
            (_resolve_or_explain(client, lineage.ModelRef.parse(args.ref), "hedge evaluate"), None)
            if args.ref
            else reports.default_version(client)
        )
        report = reports.fetch(client, version)
    if note:
        print(f"note: {note}", file=sys.stderr)
    aliases = f" [{', '.join(sorted(version.aliases))}]" if version.aliases else ""
    print(f"{report.name} v{report.version}{aliases}, source run {version.run_id}\n")
    print(reports.summary(report.markdown) or f"({reports.REPORT_MD} holds no table)")
    print(f"\nwritten to {report.directory}:")
    for path in report.files:
        print(f"  {path}")
    return 0


def _parse_heston(text: str | None) -> dict[str, float] | None:
    """``kappa=2,theta=0.04,xi=0.5,rho=-0.7,v0=0.04`` -> a dict (None when not given)."""
    if not text:
        return None
    try:
        return {k.strip(): float(v) for k, v in (item.split("=", 1) for item in text.split(","))}
    except ValueError as exc:
        raise UserError(f"--heston {text!r}: expected k=v,... ({exc})") from exc


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.suite == "greeks":
        from hedge_pipeline.bench.greeks import run

        report = run(n=args.n, repeats=args.repeats)
    elif args.suite == "env":
        from hedge_pipeline.bench.env import run

        report = run(num_envs=args.num_envs, ppo=not args.no_ppo)
    elif args.suite == "cnn-lstm":
        from hedge_pipeline.bench.cnn_lstm import run

        report = run(batch_size=args.batch_size, steps=args.steps)
    elif args.suite == "walkforward":
        from hedge_pipeline.bench.walkforward import markdown, run

        report = run(
            history=args.history, as_of=args.as_of, train_years=args.train_years,
            test_months=args.test_months, cost=args.cost, criterion=args.criterion,
            epochs=args.epochs, seed=args.seed, num_threads=args.threads,
            forecast_inputs=args.forecast_inputs,
        )  # fmt: skip
        if args.markdown:
            print(markdown(report))
            return 0
    elif args.suite == "lineage":
        from hedge_pipeline.bench.lineage import markdown, run

        report = run(
            history=args.history, as_of=args.as_of, weeks=args.weeks, profile=args.profile,
            seed=args.seed, data_dir=args.data_dir,
        )  # fmt: skip
        if args.markdown:
            print(markdown(report))
            return 0
    elif args.suite == "ablation":
        from hedge_pipeline.bench.ablation import markdown, run

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # as evaluate

        report = run(args.with_dir, args.without, args.seed)
        if args.markdown:
            print(markdown(report))
            return 0
    elif args.suite == "pipeline" and args.data_path:
        from hedge_pipeline.bench.pipeline import DATA_PATH_SOURCES, data_path

        sources = DATA_PATH_SOURCES
        if args.history:
            env = {"HEDGE_SOURCE": "history", "HEDGE_HISTORY": args.history}
            sources = ((f"history {args.history}, every code", env, None),)
        sources = tuple((label, env, args.limit) for label, env, _ in sources)
        report = data_path(args.before, args.data_dir, sources, args.per_run)
        print(json.dumps(report, indent=2))
        return 0
    elif args.suite == "pipeline":
        from hedge_pipeline.bench.pipeline import run

        report = run(
            profile=args.profile, source=args.source, repeats=args.repeats,
            data_dir=args.data_dir, incremental=args.incremental, until=args.until,
        )  # fmt: skip
        print(json.dumps(report, indent=2))
        return 0 if report["success"] else 1
    else:
        from hedge_pipeline.bench.hedging import run_costs

        costs = [float(c) for c in args.cost.split(",")]
        report = run_costs(
            costs, market=args.market, criterion=args.criterion, steps=args.steps,
            maturity=args.maturity, strike=args.strike, option=args.option, sigma=args.sigma,
            heston=_parse_heston(args.heston), algorithm=args.algorithm, epochs=args.epochs,
            paths=args.paths, eval_paths=args.eval_paths, seed=args.seed, head=args.head,
            n_layers=args.layers, num_threads=args.threads, start_at_delta=args.start_at_delta,
            observe_vol=not args.constant_vol, peer=args.peer, peer_epochs=args.peer_epochs,
        )  # fmt: skip
        report = report["runs"][0] if len(costs) == 1 else report
    print(json.dumps(report, indent=2))
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks; each prints one JSON document")
    bench.set_defaults(func=_cmd_bench)
    suites = bench.add_subparsers(dest="suite", required=True)
    greeks = suites.add_parser("greeks", help="prices + Greeks and implied vol vs peers")
    greeks.add_argument("--n", type=int, default=1_000_000, help="options per batch")
    greeks.add_argument("--repeats", type=int, default=5)
    env = suites.add_parser(
        "env", help="batched hedging env vs the single-path gymnasium env; PPO vs SB3's PPO"
    )
    env.add_argument("--num-envs", type=int, default=1024)
    env.add_argument(
        "--no-ppo", action="store_true", help="skip PPO vs Stable-Baselines3 (minutes; dev extra)"
    )
    cnn = suites.add_parser("cnn-lstm", help="CNN-LSTM training samples/s")
    cnn.add_argument("--batch-size", type=int, default=256)
    cnn.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    pipeline = suites.add_parser(
        "pipeline", help="wall time and peak memory of each stage of hedge run; incremental case"
    )
    pipeline.add_argument(
        "--data-path", action="store_true",
        help="instead of the lineage: parse, validate, Greeks and write, on the synthetic "
        "codes and the S&P 500 history (--before DIR: an older checkout beside this one)",
    )  # fmt: skip
    pipeline.add_argument("--before", type=Path, help="--data-path: an older checkout to compare")
    pipeline.add_argument("--limit", type=int, help="--data-path: the first N codes of each source")
    pipeline.add_argument(
        "--history",
        help="--data-path: this history only (sp500, nasdaq, wti or a CSV/Parquet path; "
        "HEDGE_HISTORY_WEEKS applies), instead of the synthetic codes and the S&P 500",
    )  # fmt: skip
    pipeline.add_argument(
        "--per-run", type=int,
        help="--data-path: weekly codes per run, as a backfill cuts them (default "
        "HEDGE_CODES_PER_RUN; 1: one code per run)",
    )  # fmt: skip
    pipeline.add_argument("--profile", choices=get_args(ProfileName), default="smoke")
    pipeline.add_argument("--source", choices=get_args(SourceKind), help="HEDGE_SOURCE")
    pipeline.add_argument("--repeats", type=int, default=1, help="fresh data directories in turn")
    pipeline.add_argument(
        "--data-dir",
        help="keep run-<i>/ data directories here (its raw/ is copied in); default: a temp dir",
    )
    pipeline.add_argument(
        "--incremental",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="hold the last weekly code back, then add it and run what it needs",
    )
    pipeline.add_argument(
        "--until", choices=[s for s in SELECTIONS if s != "all"], default="portfolio_training",
        help="stop the lineage after this stage",
    )  # fmt: skip
    hedging = suites.add_parser("hedging", help="hedgers on one set of evaluation paths (E1)")
    hedging.add_argument("--market", choices=["gbm", "heston"], default="gbm")
    hedging.add_argument("--cost", default="1e-3", help="one cost, or several: 0,1e-3")
    hedging.add_argument("--criterion", default="entropic:1", help="entropic:A | es:P | meanvar:L")
    hedging.add_argument("--steps", type=int, default=30, help="rebalancing steps")
    hedging.add_argument("--maturity", type=float, default=30 / 250)
    hedging.add_argument("--strike", type=float, default=1.0)
    hedging.add_argument("--option", choices=["call", "put"], default="call")
    hedging.add_argument("--sigma", type=float, default=0.2)
    hedging.add_argument("--heston", help="kappa=…,theta=…,xi=…,rho=…,v0=…")
    hedging.add_argument("--algorithm", default="deep_hedging")
    hedging.add_argument("--epochs", type=int, default=200)
    hedging.add_argument("--paths", type=int, default=10_000, help="training paths per epoch")
    hedging.add_argument("--eval-paths", type=int, default=200_000)
    hedging.add_argument("--seed", type=int, default=0)
    hedging.add_argument("--layers", type=int, default=4, help="hidden layers of the policy")
    hedging.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    hedging.add_argument(
        "--start-at-delta",
        action="store_true",
        help="start the deep hedger's network at the BS delta hedge (zero band / correction)",
    )
    hedging.add_argument("--head", default="ntb", help="ntb | mlp | ntb,mlp (one of each)")
    hedging.add_argument("--constant-vol", action="store_true", help="heston: hedge at --sigma")
    hedging.add_argument("--peer", choices=["pfhedge"], help="also train pfhedge 0.23's hedgers")
    hedging.add_argument("--peer-epochs", type=int, help="the peer's budget (default: --epochs)")
    walk = suites.add_parser(
        "walkforward",
        help="hedgers and vol forecasts fitted before each as_of, tested on what follows "
        "(a real price history)",
    )
    _history_and_dates(walk, "every June and December end with enough history before and after")
    walk.add_argument("--train-years", type=float, default=4.0)
    walk.add_argument("--test-months", type=int, default=6)
    walk.add_argument("--cost", type=float, default=5e-4, help="proportional cost x notional")
    walk.add_argument("--criterion", default="es:0.1", help="the deep hedger's training loss")
    walk.add_argument("--epochs", type=int, default=30)
    walk.add_argument("--seed", type=int, default=0)
    walk.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    walk.add_argument(
        "--forecast-inputs",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        help="forecasters whose vol forecast a deep hedger is retrained to read, each against "
        "the one without (comma-separated; '' for none; default: garch,cnn_lstm)",
    )
    walk.add_argument("--markdown", action="store_true", help="print the tables, not JSON")
    lineage = suites.add_parser(
        "lineage",
        help="the whole lineage trained at each as_of of a history (hedge run --split-mode "
        "as_of), every stage tested on what followed",
    )
    _history_and_dates(lineage, "walkforward's, every June and December end")
    lineage.add_argument("--weeks", type=int, default=8, help="HEDGE_HISTORY_WEEKS of the runs")
    lineage.add_argument("--profile", choices=get_args(ProfileName), default="default")
    lineage.add_argument("--seed", type=int, default=0)
    lineage.add_argument(
        "--data-dir", type=Path, help="keep the runs' state here (default: a temporary dir)"
    )
    lineage.add_argument("--markdown", action="store_true", help="print the tables, not JSON")
    ablation = suites.add_parser(
        "ablation",
        help="each stage retrained without the CNN-LSTM's forecast (a data directory run with "
        "hedge run --forecasts training_mean) against the same stage with it",
    )
    ablation.add_argument("--with", dest="with_dir", type=Path, required=True,
                          help="data directory of a plain hedge run")  # fmt: skip
    ablation.add_argument("--without", type=Path, required=True,
                          help="data directory of hedge run --forecasts training_mean")  # fmt: skip
    ablation.add_argument("--seed", type=int, default=0)
    ablation.add_argument("--markdown", action="store_true", help="print the tables, not JSON")


def _history_and_dates(parser: argparse.ArgumentParser, default_dates: str) -> None:
    """``--history`` and ``--as-of`` (comma-separated dates) of the walk-forward benches."""
    parser.add_argument(
        "--history", default="sp500", help="sp500, nasdaq, wti or a CSV/Parquet path"
    )
    parser.add_argument(
        "--as-of",
        type=lambda text: [d.strip() for d in text.split(",") if d.strip()],
        help=f"comma-separated dates (default: {default_dates})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hedge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="materialize assets from the command line")
    run.add_argument("--select", default="all", help=f"one of: {', '.join(SELECTIONS)}")
    run.add_argument("--partition", action="append", help="weekly code (repeatable); default all")
    # The choices are the settings' own, so a source added there is offered here too.
    run.add_argument("--source", choices=get_args(SourceKind), help="HEDGE_SOURCE")
    run.add_argument("--profile", choices=get_args(ProfileName), help="HEDGE_PROFILE")
    run.add_argument("--template", help="portfolio template (default: atm_book)")
    run.add_argument(
        "--as-of",
        help="portfolio_selection's as_of (ISO date or time): select, and train specialists "
        "for, only the weekly codes alive then",
    )
    run.add_argument(
        "--split-mode",
        choices=get_args(SplitMode),
        help="the template's time split, unless given; as_of (with --as-of): train and "
        "validate on the bars up to as_of, test on those after it (a walk-forward test)",
    )
    run.add_argument(
        "--forecasts",
        choices=get_args(Forecasts),
        help="the specialists' forecasts, unless given: cnn_lstm; training_mean (the CNN-LSTM's "
        "training mean on every bar) retrains the specialists and every stage after them "
        "without the forecast's information: the ablation, in its own data directory",
    )
    run.add_argument(
        "--seed",
        type=int,
        help="every training stage's seed (the CNN-LSTM, the specialists, the meta-controller, "
        "the ensemble; the joint members take it and the next ones), unless given: 0. Another "
        "seed over the same data measures how much a result owes to the draw",
    )
    run.set_defaults(func=_cmd_run)

    ui = sub.add_parser("ui", help="the Dagster UI and daemon on 127.0.0.1")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=_cmd_ui)

    portfolios = sub.add_parser("portfolios", help="portfolio templates: list, or info NAME")
    portfolios.add_argument("action", choices=["list", "info"])
    portfolios.add_argument("name", nargs="?")
    portfolios.set_defaults(func=_cmd_portfolios)

    models = sub.add_parser("models", help="registered models: list, or show NAME[@alias|:version]")
    models.set_defaults(func=_cmd_models)
    model_actions = models.add_subparsers(dest="action", required=True)
    listing = model_actions.add_parser("list", help="every registered model")
    show = model_actions.add_parser(
        "show", help="NAME: its versions and key metrics; NAME@alias or NAME:version: one version"
    )
    show.add_argument("ref", metavar="NAME[@alias|:version]")
    for action in (listing, show):
        action.add_argument("--json", action="store_true", help="print one JSON document")
    show.add_argument(
        "--all",
        action="store_true",
        help="every tag and metric of the source run (default: the headline metrics)",
    )

    evaluate = sub.add_parser(
        "evaluate", help="fetch a version's evaluation report and print its table"
    )
    evaluate.add_argument(
        "ref",
        nargs="?",
        metavar="NAME[@alias|:version]",
        help="default: hedge-ensemble@champion, else the latest hedge-ensemble",
    )
    evaluate.set_defaults(func=_cmd_evaluate)

    backfill.add_parser(sub)
    _add_bench(sub)
    _add_verbose(parser)
    return parser


def _add_verbose(parser: argparse.ArgumentParser, top: bool = True) -> None:
    """``--verbose`` on ``parser`` and every subcommand below it, so that ``hedge --verbose run``
    and ``hedge run --verbose`` both work. Below the top it defaults to SUPPRESS: a subcommand
    that was not given the flag leaves the top level's value alone."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="on an error, print the traceback as well as its one-line message",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                _add_verbose(child, top=False)


def _one_line(error: BaseException) -> str:
    """The message on one line: a message of several lines (one per problem) joined by '; '."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``hedge`` command; its exit status (2 for a ``UserError``, as argparse does for a
    bad command line)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"hedge: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `hedge models list | head` closed the pipe: what was wanted was read.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command a closed pipe ended


if __name__ == "__main__":
    raise SystemExit(main())
