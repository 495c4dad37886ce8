"""Register the hedging environments with Gymnasium under ``hedge_pipeline/Hedging-v0``.

Registration is a side effect of importing :mod:`hedge_pipeline.hedging.envs` (which calls
:func:`register_envs`) or this module; it is not done in the package ``__init__`` so that the
simulator and the deep hedger never import Gymnasium. Without any import, Gymnasium's
``"module:id"`` form does it::

    gym.make("hedge_pipeline.hedging.envs:hedge_pipeline/Hedging-v0")
    gym.make_vec("hedge_pipeline.hedging.envs:hedge_pipeline/Hedging-v0", num_envs=1024)

``make_vec`` builds the batched :class:`~hedge_pipeline.hedging.envs.HedgingVectorEnv`
through the ``vector_entry_point``. Entry points are strings, so this module imports nothing
of the envs (no import cycle).
"""

from __future__ import annotations

import gymnasium as gym

__all__ = ["ENV_ID", "register_envs"]

ENV_ID = "hedge_pipeline/Hedging-v0"


def register_envs() -> None:
    """Register :data:`ENV_ID` once; later calls are no-ops (Gymnasium warns on re-registering)."""
    if ENV_ID not in gym.registry:
        gym.register(
            ENV_ID,
            entry_point="hedge_pipeline.hedging.envs:HedgingEnv",
            vector_entry_point="hedge_pipeline.hedging.envs:HedgingVectorEnv",
        )


register_envs()
