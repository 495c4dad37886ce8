"""``python -m hedge_pipeline.training <stage> [--extras FILE]`` (see the package docstring)."""

from __future__ import annotations

import importlib
import sys

from hedge_pipeline.harness.session import open_session
from hedge_pipeline.harness.tracking import failures_are_final
from hedge_pipeline.runtime.orphans import stop_with_parent

# stage name -> module with a ``run(session)`` function
STAGES = {
    "cnn_lstm": "hedge_pipeline.stages.cnn_lstm.train",
    "specialist": "hedge_pipeline.stages.specialists.train",
    "meta_controller": "hedge_pipeline.stages.portfolio_models.train_meta_controller",
    "joint": "hedge_pipeline.stages.portfolio_models.train_joint",
    "ensemble": "hedge_pipeline.stages.portfolio_models.train_ensemble",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in STAGES:
        print(
            f"usage: python -m hedge_pipeline.training {{{','.join(STAGES)}}} [--extras FILE]",
            file=sys.stderr,
        )
        return 2
    stop_with_parent()  # a killed launcher must not leave a trainer running
    stage = importlib.import_module(STAGES[argv[0]])
    with open_session(argv[1:]) as session, failures_are_final(session):
        stage.run(session)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
