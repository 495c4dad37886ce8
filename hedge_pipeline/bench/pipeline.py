"""``hedge bench pipeline``: wall time and peak memory of every stage of ``hedge run``.

Each repeat starts from a fresh data directory (warehouse, registry and Dagster instance all
empty; a ``raw/`` folder of file drops next to it is copied in) and runs the stages of
``hedge run --select all`` one by one, each as its own ``hedge run --select <stage>`` process,
so that each stage is measured as users run it, model loading and Dagster start-up included:

* the full run: every stage on every weekly code of the source but the one the source lists
  last (by expiry, for the synthetic source), which is held back for the incremental case;
* the incremental case: that code arrives, and what the automation runs for a new code runs:
  its ``market_data`` partition, ``portfolio`` (the selection spans every code, and a
  specialist refuses a code the selection has not seen), its ``specialists`` partition (the
  three are ``new_weekly_codes_sensor``'s ``new_code_job``), then ``portfolio_training``
  (meta-controller, joint model, ensemble: ``portfolio_retrain_sensor``'s run). The CNN-LSTM
  is not retrained: specialists use its latest version.

Per stage: wall seconds, peak RSS of the largest process of the stage's tree (the Dagster
process, its per-code workers and their Pipes training children, which are grandchildren and
great-grandchildren of the launcher: ``bench.tree_rss`` says why ``os.wait4`` counts them),
CPU seconds of the whole tree, and success. Greeks rows/s through DuckDB come from the
Dagster event log of the market-data runs: rows each ``greeks_features`` materialization
reported over the seconds from its step's start to its success (read raw quotes from DuckDB,
compute, write, checks). A micro-benchmark then times the two halves of that step on the
largest code's stored quotes: ``compute_features`` and the transactional warehouse write into
a scratch DuckDB file. The document ends with medians over repeats.

The data path (``data_path``; ``hedge bench pipeline --data-path``): the
market-data steps' own bodies, without Dagster's run around them, on every code of a source,
in ranges of codes as a backfill runs them (``--per-run``, default ``HEDGE_CODES_PER_RUN``),
for the code of this checkout and (``--before DIR``) of an older checkout of the repository,
side by side in one command: the synthetic source's 8 codes (~50k quotes each) and a real
history's ~1,000 codes (378 quotes each). Each (checkout, source) runs
``bench/pipeline_steps.py`` in a fresh process under ``bench.tree_rss``: Greeks and raw rows/s
(wall and CPU), and the process's peak RSS, overall and after 1, 8, 64, 512 codes.
"""

import datetime as dt
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hedge_pipeline.bench.machine import machine_info
from hedge_pipeline.cli.selections import PER_CODE_JOBS, SELECTIONS
from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.settings import Settings

# The stages of `hedge run --select all`, in its order: every selection but "all" itself.
STAGES: tuple[str, ...] = tuple(s for s in SELECTIONS if s != "all")
INCREMENTAL = ("market_data", "portfolio", "specialists", "portfolio_training")
PACKAGES = ("dagster", "mlflow", "duckdb", "polars", "torch")
_LOG_TAIL = 2_000
Plan = list[tuple[str, list[str] | None]]  # (stage, its --partition codes or None: all)


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``env`` for the block (the source and the Dagster instance
    are configured from the environment)."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def scratch_env(data_dir: Path) -> dict[str, str]:
    """The environment of a bench's own runs on ``data_dir``: all their state there, Dagster's
    included (a user's ``HEDGE_DAGSTER_POSTGRES_URL`` would send the runs to their database)."""
    return paths.instance_env(data_dir) | {Settings.variable("dagster_postgres_url"): ""}


def _source_env(source: str | None, profile: str, data_dir: Path) -> dict[str, str]:
    env = {**scratch_env(data_dir), "HEDGE_PROFILE": profile}
    if source:
        env["HEDGE_SOURCE"] = source
    return env


def list_codes(env: dict[str, str]) -> list[str]:
    """The source's weekly codes, in its own order, as ``hedge run`` would see them."""
    from hedge_pipeline.orchestration.resources import ChainSourceResource

    with environment(env):
        return list(ChainSourceResource.from_env().build().list_codes())


def measure(command: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run ``command`` under ``bench.tree_rss`` (see its docstring for why a launcher)."""
    out = log.with_suffix(".json")
    launcher = [sys.executable, "-m", "hedge_pipeline.bench.tree_rss", str(out), str(log), "--"]
    subprocess.run(
        [*launcher, *command], env={**os.environ, **env}, cwd=paths.REPO_ROOT, check=True
    )
    return json.loads(out.read_text(encoding="utf-8"))


def _stage(stage: str, codes: list[str] | None, profile: str, source: str | None) -> list[str]:
    command = [sys.executable, "-m", "hedge_pipeline.cli.main", "run", "--select", stage]
    command += ["--profile", profile] + (["--source", source] if source else [])
    for code in codes or ():
        command += ["--partition", code]
    return command


def run_stages(
    plan: Plan,
    env: dict[str, str],
    logs: Path,
    profile: str,
    source: str | None,
    phase: str,
) -> list[dict[str, Any]]:
    """Run the plan's stages in order, measuring each; stop after the first that fails (the
    next ones would only fail on its missing output)."""
    results = []
    for stage, codes in plan:
        command = _stage(stage, codes, profile, source)
        log = logs / f"{phase}-{stage}.log"
        result = {"stage": stage, "codes": codes, **measure(command, env, log)}
        # The machines are shared: the load as the stage ends says how far to trust its time.
        result["load_average_1m"] = os.getloadavg()[0]
        result["success"] = result.pop("returncode") == 0
        result["command"] = shlex.join(["hedge", *command[3:]])
        if not result["success"]:
            result["log_tail"] = log.read_text(encoding="utf-8", errors="replace")[-_LOG_TAIL:]
        results.append(result)
        if not result["success"]:
            break
    return results


def greeks_from_event_log(env: dict[str, str]) -> dict[str, dict[str, float]]:
    """Per weekly code: rows its latest ``greeks_features`` materialization reported and the
    seconds from its step's start to its success, from the instance's event log (any job). A
    step that wrote a range of codes (``HEDGE_CODES_PER_RUN``) has its seconds shared among
    them by rows, so a phase's total is still its steps' time."""
    import dagster as dg

    start, success = dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS
    wanted = {start, success, dg.DagsterEventType.ASSET_MATERIALIZATION}
    out: dict[str, dict[str, float]] = {}
    with environment(env), dg.DagsterInstance.get() as instance:
        for run in reversed(instance.get_runs()):  # oldest first: a later run of a code wins
            events = [
                e
                for e in instance.all_logs(run.run_id, of_type=wanted)
                if e.step_key == "greeks_features"
            ]
            times = {e.dagster_event.event_type: e.timestamp for e in events}
            rows = {
                m.partition: int(m.metadata["dagster/row_count"].value)
                for e in events
                if (m := e.asset_materialization) is not None and m.partition is not None
            }
            if success not in times or not rows:
                continue
            seconds = times[success] - times[start]
            total = sum(rows.values()) or 1
            for code, n in rows.items():
                out[code] = {"rows": n, "seconds": seconds * n / total}
    return out


def greeks_write_path(data_dir: Path, repeats: int) -> dict[str, Any]:
    """Time ``compute_features`` and the warehouse write on the largest code's stored quotes."""
    from hedge_pipeline.stages.market_data.features import compute_features
    from hedge_pipeline.tables import warehouse

    with warehouse.connect(data_dir / "warehouse.duckdb", read_only=True) as con:
        largest = warehouse.query(
            con,
            "SELECT weekly_code, count(*) AS n FROM raw_option_chains GROUP BY 1 ORDER BY 2 DESC",
        )
        code = largest["weekly_code"][0]
        raw = warehouse.read_partition(con, "raw_option_chains", code)
    compute, write = [], []
    scratch = data_dir / "bench-write-path.duckdb"
    for _ in range(repeats):
        started = time.perf_counter()
        features = compute_features(raw)
        compute.append(time.perf_counter() - started)
        scratch.unlink(missing_ok=True)
        with warehouse.connect(scratch) as con:
            started = time.perf_counter()
            warehouse.replace_partition(con, code, {"greeks_features": features})
            write.append(time.perf_counter() - started)
    scratch.unlink(missing_ok=True)
    compute_s, write_s = statistics.median(compute), statistics.median(write)
    rows = raw.height
    return {
        "weekly_code": code,
        "rows": rows,
        "compute_features_s": compute_s,
        "duckdb_write_s": write_s,
        "compute_rows_per_s": rows / compute_s,
        "duckdb_write_rows_per_s": rows / write_s,
        "rows_per_s": rows / (compute_s + write_s),
    }


def _totals(per_code: dict[str, dict[str, float]], codes: list[str]) -> dict[str, float]:
    rows = sum(int(per_code[c]["rows"]) for c in codes if c in per_code)
    seconds = sum(per_code[c]["seconds"] for c in codes if c in per_code)
    return {
        "codes": len([c for c in codes if c in per_code]),
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds if seconds else 0.0,
    }


def plans(codes: list[str], incremental: bool, until: str) -> tuple[Plan, Plan]:
    """The full run's stages and the incremental case's, up to ``until`` (see the module
    docstring). With ``incremental`` the last code is held back from the full run."""
    if not codes or (incremental and len(codes) < 2):
        raise ValueError(f"the source lists {len(codes)} weekly codes: {codes}")
    stages = STAGES[: STAGES.index(until) + 1]
    held = codes[:-1] if incremental else codes
    full = [(s, list(held) if s == "market_data" else None) for s in stages]
    if not incremental:
        return full, []
    new = [codes[-1]]
    return full, [(s, new if s in PER_CODE_JOBS else None) for s in INCREMENTAL if s in stages]


def run_once(
    data_dir: Path, profile: str, source: str | None, incremental: bool, until: str
) -> dict[str, Any]:
    """One repeat in ``data_dir`` (fresh): the full run, then the incremental case."""
    env = _source_env(source, profile, data_dir)
    codes = list_codes(env)
    try:
        full_plan, incremental_plan = plans(codes, incremental, until)
    except ValueError as exc:
        raise SystemExit(f"hedge bench pipeline: {exc}") from None
    new = codes[-1] if incremental else None
    full_codes = full_plan[0][1] or []
    logs = data_dir / "bench-logs"
    logs.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"data_dir": str(data_dir), "codes": full_codes, "new_code": new}
    report["full"] = run_stages(full_plan, env, logs, profile, source, "full")
    if incremental_plan and all(r["success"] for r in report["full"]):
        report["incremental"] = run_stages(
            incremental_plan, env, logs, profile, source, "incremental"
        )
    per_code = greeks_from_event_log(env)
    report["greeks_event_log"] = {
        "full": _totals(per_code, full_codes),
        "incremental": _totals(per_code, [new] if new else []),
        "per_code": per_code,
    }
    return report


def _summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians per stage over the repeats that ran it."""
    by_stage: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        by_stage.setdefault(result["stage"], []).append(result)
    return [
        {
            "stage": stage,
            "command": runs[0]["command"],
            "repeats": len(runs),
            "success": all(r["success"] for r in runs),
            **{
                f"{key}_median": statistics.median(r[key] for r in runs)
                for key in ("wall_s", "peak_rss_mib", "cpu_s")
            },
            "wall_s_runs": [r["wall_s"] for r in runs],
        }
        for stage, runs in by_stage.items()
    ]


def _phase_summary(runs: list[dict[str, Any]], phase: str) -> dict[str, Any]:
    done = [r[phase] for r in runs if phase in r]
    totals = [sum(s["wall_s"] for s in stages) for stages in done]
    return {
        "stages": _summary([s for stages in done for s in stages]),
        "total_wall_s_median": statistics.median(totals) if totals else None,
        "peak_rss_mib_max": max((s["peak_rss_mib"] for st in done for s in st), default=None),
    }


def run(
    profile: str = "smoke",
    source: str | None = None,
    repeats: int = 1,
    data_dir: Path | str | None = None,
    incremental: bool = True,
    until: str = STAGES[-1],
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Run the suite; a JSON-serialisable report (see the module docstring).

    ``data_dir`` holds one ``run-<i>`` data directory per repeat, kept afterwards; its ``raw/``
    (file drops for the ``files`` source) is copied into each. Without it, a temporary
    directory is used and removed. ``until`` stops the lineage after that stage.
    """
    if until not in STAGES:
        raise ValueError(f"until={until!r}; one of {STAGES}")
    started = dt.datetime.now(dt.UTC)
    root = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="hedge-bench-"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        baseline = measure([sys.executable, "-c", "pass"], {}, root / "bench-python.log")
        runs = []
        for i in range(1, repeats + 1):
            runs.append(run_once(_fresh(root, i), profile, source, incremental, until))
        write_path = greeks_write_path(Path(runs[-1]["data_dir"]), max(repeats, 3))
    finally:
        if data_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    from hedge_pipeline.orchestration.identity import code_version

    full, inc = _phase_summary(runs, "full"), _phase_summary(runs, "incremental")
    greeks = [r["greeks_event_log"] for r in runs]
    return {
        "suite": "pipeline",
        "date": started.isoformat(timespec="seconds"),
        "command": shlex.join(["hedge", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(*PACKAGES),
        "code_version": code_version(),
        "profile": profile,
        "source": source or Settings.from_env().source,
        "repeats": repeats,
        "until": until,
        "memory": (
            "peak RSS of the largest single process in the stage's tree (os.wait4 of a lean "
            "launcher's child: the Dagster process and the training children it waits for)"
        ),
        "python_baseline_rss_mib": baseline["peak_rss_mib"],
        "success": all(
            s["success"] for r in runs for p in ("full", "incremental") for s in r.get(p, [])
        ),
        "full": full,
        "incremental": inc,
        "greeks": {
            "event_log_full_rows_per_s_median": statistics.median(
                g["full"]["rows_per_s"] for g in greeks
            ),
            "event_log": greeks,
            "write_path": write_path,
        },
        "runs": runs,
    }


def _fresh(root: Path, index: int) -> Path:
    """``root/run-<index>``, empty but for a copy of ``root/raw`` (file drops)."""
    target = root / f"run-{index}"
    if target.exists():
        raise SystemExit(f"hedge bench pipeline: {target} exists; give an empty --data-dir")
    target.mkdir(parents=True)
    if (root / "raw").is_dir():
        shutil.copytree(root / "raw", target / "raw")
    return target


STEPS_SCRIPT = Path(__file__).with_name("pipeline_steps.py")
# The sources of the data path: (label, environment, codes: None for all of them).
DATA_PATH_SOURCES: tuple[tuple[str, dict[str, str], int | None], ...] = (
    ("synthetic, 8 codes", {"HEDGE_SOURCE": "synthetic"}, None),
    ("history sp500, every code", {"HEDGE_SOURCE": "history", "HEDGE_HISTORY": "sp500"}, None),
)


def steps_of(
    checkout: Path, env: dict[str, str], data_dir: Path, limit: int | None, per_run: int
) -> dict[str, Any]:
    """``pipeline_steps.py`` (this checkout's) on ``checkout``'s package, in a fresh
    ``data_dir``, ranges of ``per_run`` codes, under ``tree_rss``: its report plus the
    process's wall, CPU and peak RSS."""
    data_dir.mkdir(parents=True)
    out = data_dir / "report.json"  # measure() writes steps.json beside steps.log
    command = [sys.executable, str(STEPS_SCRIPT), str(out), str(data_dir), f"--per-run={per_run}"]
    command += [f"--limit={limit}"] if limit else []
    env = scratch_env(data_dir) | env | {"PYTHONPATH": str(checkout.resolve())}
    process = measure(command, env, data_dir / "steps.log")
    if process["returncode"] != 0:
        log = (data_dir / "steps.log").read_text(encoding="utf-8", errors="replace")
        raise RuntimeError(f"the data path failed on {checkout}: {log[-_LOG_TAIL:]}")
    report = json.loads(out.read_text(encoding="utf-8"))
    if Path(report["package"]) != (checkout / "hedge_pipeline").resolve():
        raise RuntimeError(f"measured {report['package']}, not {checkout}'s package")
    return report | {"process": process}


def data_path(
    before: Path | str | None = None,
    data_dir: Path | str | None = None,
    sources: tuple[tuple[str, dict[str, str], int | None], ...] = DATA_PATH_SOURCES,
    per_run: int | None = None,
) -> dict[str, Any]:
    """The data path of this checkout, and of ``before`` if given, on each of ``sources``
    (see the module docstring), in ranges of ``per_run`` codes (default: as a backfill cuts
    them, ``HEDGE_CODES_PER_RUN``): one row per (source, checkout), in one command."""
    per_run = per_run or Settings.from_env().codes_per_run
    started = dt.datetime.now(dt.UTC)
    checkouts = {"after": paths.REPO_ROOT} | ({"before": Path(before)} if before else {})
    root = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="hedge-data-path-"))
    rows = []
    try:
        for i, (label, env, limit) in enumerate(sources):
            for name, checkout in checkouts.items():
                result = steps_of(checkout, env, root / f"{i}-{name}", limit, per_run)
                # The label, not the driver's source kind, names the row.
                rows.append(result | {"source": label, "checkout": name, "path": str(checkout)})
    finally:
        if data_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return {
        "suite": "pipeline-data-path",
        "date": started.isoformat(timespec="seconds"),
        "machine": machine_info(*PACKAGES),
        "commits": {name: _commit(path) for name, path in checkouts.items()},
        "results": rows,
        "table": [_data_path_line(r) for r in rows],
    }


def _commit(checkout: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(checkout), "describe", "--always", "--dirty"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.stdout.strip() or "unknown"


def _data_path_line(result: dict[str, Any]) -> dict[str, Any]:
    """One (source, checkout) in a line: what ``benchmarks/pipeline.md`` tabulates."""
    greeks, raw = result["greeks"], result["raw"]
    return {
        "source": result["source"],
        "checkout": result["checkout"],
        "codes": result["codes"],
        "codes_per_run": result["per_run"],
        "greeks_rows": greeks["rows"],
        "greeks_rows_per_s": round(greeks["rows_per_s"]),
        "greeks_rows_per_cpu_s": round(greeks["rows_per_cpu_s"]),
        "raw_rows_per_s": round(raw["rows_per_s"]),
        "peak_rss_mib": round(result["process"]["peak_rss_mib"], 1),
        "peak_rss_mib_after_codes": result["peak_rss_mib_after_codes"],
        "floor_rows_per_s": round(result["floor"]["rows_per_s"]),
        "process_wall_s": round(result["process"]["wall_s"], 1),
    }
