"""``hedge backfill --codes A,B [--assets …]``: one asset backfill through a running webserver.

The command does what "Materialize → backfill" does in the UI: it asks the webserver to launch
an asset backfill of the given weekly codes, and the daemon of ``hedge ui`` runs it. Nothing is
executed in this process, so the backfill shows in the UI's Backfills list with its runs, can
be cancelled or re-executed there, and never fights the daemon's runs for the DuckDB lock.
"""

from __future__ import annotations

import argparse
import sys

from hedge_pipeline.cli.ui_client import BackfillState, UIClient, UIError
from hedge_pipeline.runtime.settings import DEFAULT_UI_URL, Settings, UserError

MAX_TITLE = 100  # characters of a backfill title (dagster._core.definitions.utils)
# The per-code lineage up to the specialist; --assets narrows it (e.g. market data only).
DEFAULT_ASSETS = ("raw_option_chains", "greeks_features", "specialist_agents")


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _named(codes: list[str], shown: int = 8) -> str:
    """The codes for a title or a line: all of a few, the first and last of many (a history's
    thousand codes would make a line of 20 kB).

    >>> _named(["A", "B"])
    'A, B'
    >>> _named([f"C{i}" for i in range(1000)])
    'C0, C1, C2, C3 … C996, C997, C998, C999 (1000 codes)'
    """
    if len(codes) <= shown:
        return ", ".join(codes)
    half = shown // 2
    return f"{', '.join(codes[:half])} … {', '.join(codes[-half:])} ({len(codes)} codes)"


def _title(codes: list[str]) -> str:
    """The backfill's title in the UI: Dagster refuses one over 100 characters (a backfill of
    a dozen history codes), so many codes are named by their count and ends.

    >>> _title(["3CN5", "3IN5"])
    'hedge backfill 3CN5,3IN5'
    >>> _title([f"SP500-2001-01-{day:02d}" for day in range(1, 29)])
    'hedge backfill of 28 codes, SP500-2001-01-01 to SP500-2001-01-28'
    """
    title = f"hedge backfill {','.join(codes)}"
    if len(title) > MAX_TITLE:
        title = f"hedge backfill of {len(codes)} codes, {codes[0]} to {codes[-1]}"
    return title[:MAX_TITLE]


def add_parser(sub: argparse._SubParsersAction) -> None:
    backfill = sub.add_parser(
        "backfill",
        help="launch an asset backfill of weekly codes on the running webserver and daemon",
    )
    backfill.add_argument("--codes", required=True, help="weekly codes, comma-separated")
    backfill.add_argument(
        "--assets",
        default=",".join(DEFAULT_ASSETS),
        help="assets partitioned by weekly code, comma-separated (default: %(default)s)",
    )
    backfill.add_argument(
        "--url",  # None: HEDGE_UI_URL, read when the command runs (runtime.settings)
        help=f"the webserver (default: $HEDGE_UI_URL or {DEFAULT_UI_URL})",
    )
    backfill.add_argument(
        "--wait", action="store_true", help="wait for the backfill to finish; exit 1 if it failed"
    )
    backfill.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds --wait waits (default 3600)"
    )
    backfill.set_defaults(func=run)


def _print_state(state: BackfillState) -> None:
    counts = ", ".join(
        f"{asset} {done}/{targeted}"
        + (f", {running} running" if running else "")
        + (f", {failed} failed" if failed else "")
        for asset, (targeted, running, done, failed) in state.assets.items()
    )
    print(f"  {state.status.lower()}: {counts}", flush=True)


def run(args: argparse.Namespace) -> int:
    """Exit 2 (a ``UserError``) when the request is refused before launch, 1 when a waited
    backfill failed."""
    codes = _split(args.codes)
    assets = _split(args.assets)
    if not codes or not assets:
        raise UserError("give at least one code (--codes) and one asset (--assets)")
    client = UIClient(args.url if args.url is not None else Settings.from_env().ui_url)
    try:
        partitioned = client.weekly_code_assets()
        unknown_assets = [a for a in assets if a not in partitioned]
        if unknown_assets:
            raise UserError(
                f"not an asset partitioned by weekly code: "
                f"{', '.join(unknown_assets)}; one of: {', '.join(sorted(partitioned))}"
            )
        known = set(partitioned[assets[0]])
        unknown_codes = [c for c in codes if c not in known]
        if unknown_codes:
            raise UserError(
                f"not a weekly-code partition: {', '.join(unknown_codes)} "
                f"(known: {', '.join(sorted(known)) or 'none'}); new codes are added by "
                "new_weekly_codes_sensor or `hedge run --select market_data --partition CODE`"
            )
        backfill_id = client.launch_asset_backfill(assets, codes, title=_title(codes))
        print(f"backfill {backfill_id}: {', '.join(assets)} for {_named(codes)}")
        print(f"  {client.url}/runs/b/{backfill_id}?tab=partitions")
        if not args.wait:
            return 0
        state = client.wait_for_backfill(backfill_id, args.timeout, on_change=_print_state)
    except UIError as exc:
        # Unreachable or refusing webserver: the user starts it or names the right one.
        raise UserError(str(exc)) from exc
    except TimeoutError as exc:
        print(f"hedge backfill: {exc}", file=sys.stderr)
        return 1
    if state.error:
        print(f"  error: {state.error}", file=sys.stderr)
    return 0 if state.succeeded else 1
