"""Who built a model: the identity every training child tags its registered version with."""

import subprocess
from functools import cache

import dagster as dg

from hedge_pipeline.runtime import paths


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=paths.REPO_ROOT, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


@cache
def code_version() -> str:
    """The git commit of the code (``-dirty`` when tracked files have uncommitted changes)."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def identity(
    context: dg.AssetExecutionContext,
    data_version: str,
    upstream: dict[str, int] | None = None,
    weekly_code: str | None = None,
) -> dict[str, object]:
    return {
        "dagster_run_id": context.run.run_id,
        # Retries share the run id, re-executions share the root: both resume its checkpoints.
        "root_run_id": context.run.root_run_id or context.run.run_id,
        "dagster_asset": context.asset_key.to_user_string(),
        "data_version": data_version,
        "code_version": code_version(),
        "weekly_code": weekly_code,
        "upstream": upstream or {},
    }
