"""``python -m hedge_pipeline.training <stage> [--extras FILE]`` (see the package docstring)."""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import sys

from hedge_pipeline.training.session import open_session
from hedge_pipeline.training.tracking import failures_are_final

# stage name -> module with a ``run(session)`` function
STAGES = {
    "cnn_lstm": "hedge_pipeline.training.cnn_lstm",
    "specialist": "hedge_pipeline.training.specialist",
    "meta_controller": "hedge_pipeline.training.meta_controller",
    "joint": "hedge_pipeline.training.joint",
    "ensemble": "hedge_pipeline.training.ensemble",
}


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def stop_with_launcher() -> None:
    """Have Linux send this process SIGTERM when the process that launched it dies.

    A launcher killed outright (SIGKILL, the OOM killer) or by a signal it does not handle
    (SIGTERM of ``hedge run`` while its runs execute in worker threads) cannot stop its
    children: without this they would train on as orphans and could even register a model
    for a run that no longer exists. SIGTERM makes the trainer checkpoint and exit, so the
    next attempt resumes.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return  # not fatal: the child just lacks the safeguard
    if os.getppid() != parent:  # the launcher died before the call took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in STAGES:
        print(
            f"usage: python -m hedge_pipeline.training {{{','.join(STAGES)}}} [--extras FILE]",
            file=sys.stderr,
        )
        return 2
    stop_with_launcher()
    stage = importlib.import_module(STAGES[argv[0]])
    with open_session(argv[1:]) as session, failures_are_final(session):
        stage.run(session)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
