"""Processes that stop when the process that started them dies.

A launcher killed outright (SIGKILL, the OOM killer) or by a signal it does not pass on
(SIGTERM of ``hedge run`` while its per-code runs execute in worker processes) cannot stop its
children: without this they would go on as orphans, training and even registering a model for a
run that no longer exists. SIGTERM reaches code that handles it: Dagster fails the run and
interrupts its Pipes child, and the trainer checkpoints and exits, so the next attempt resumes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def stop_with_parent() -> None:
    """Have Linux send this process SIGTERM when its parent dies (elsewhere: nothing)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return  # not fatal: the process just lacks the safeguard
    if os.getppid() != parent:  # the parent died before the call took effect
        os.kill(os.getpid(), signal.SIGTERM)
