"""Where the end-to-end tests keep what a person should be able to look at afterwards."""

from __future__ import annotations

import os
from pathlib import Path

from hedge_pipeline.runtime import paths


def browser_artifacts() -> Path:
    """``$HEDGE_TEST_ARTIFACTS/browser`` (default ``<repo>/test-artifacts/browser``)."""
    root = os.environ.get("HEDGE_TEST_ARTIFACTS", str(paths.REPO_ROOT / "test-artifacts"))
    return Path(root) / "browser"
