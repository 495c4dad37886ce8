"""Warm start: a weekly code's specialist starts from its predecessor's weights.

On a long history a code lives four weeks, and one code's bars are too few to learn hedging
from; what its predecessors learned is the rest of the history. With ``warm_start`` (the
``daily_history`` template sets it) a deep-hedging specialist starts from the *predecessor*'s
weights instead of the Black–Scholes hedge, then trains on its own code as usual; the
predecessor started from its own predecessor, so a chain of nightly retrains carries the whole
earlier history forward.

The predecessor of code C is the newest specialist version of another code on the same
underlying whose last bar is before C's first bar: it expired before C was listed, so nothing
it learned reads a bar of C or later, and codes alive together (the active set of one
``as_of``) never warm-start each other, which keeps a run's result independent of the order
its specialists train in. It must have the same network and book shape (algorithm, head,
width, depth, observation columns, the book's calls and puts, a hedge option or not);
otherwise the specialist starts from BS delta, and says why. Every specialist version carries
the tags this lookup reads (:func:`bar_tags`: ``underlying``, ``first_bar``, ``last_bar``,
ISO UTC) and, when asked to warm-start, ``warm_start`` (``<model>:v<version>`` or ``none``).

The untrained policy still competes as epoch 0 on the validation episodes: the predecessor's
hedge is kept only where the code's own validation does not prefer training further.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl
from mlflow import MlflowClient
from torch import Tensor

from hedge_pipeline.hedging.simulator import HedgingProblem
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.stages.specialists.artifact import MODEL_PREFIX, SpecialistSpec, load_policy

__all__ = ["WarmStart", "bar_tags", "find_predecessor"]


@dataclass(frozen=True)
class WarmStart:
    """The predecessor's registered version and its weights."""

    name: str
    version: int
    state: dict[str, Tensor]

    @property
    def tag(self) -> str:
        return f"{self.name}:v{self.version}"


def bar_tags(features: pl.DataFrame) -> dict[str, str]:
    """``underlying``, ``first_bar`` and ``last_bar`` of a code's feature rows (ISO UTC, so
    that tags compare as strings in time order)."""
    ts = features["ts"]
    return {
        "underlying": str(features["underlying"][0]),
        "first_bar": ts.min().isoformat(),
        "last_bar": ts.max().isoformat(),
    }


def _mismatch(spec: SpecialistSpec, cfg: dict[str, Any], problem: HedgingProblem) -> str | None:
    """The first shape in which the predecessor differs from this specialist, if any."""
    shapes = (  # (what, the predecessor's, this specialist's)
        ("algorithm", spec.algorithm, cfg["algorithm"]),
        ("head", spec.head, cfg["head"]),
        ("width", spec.width, cfg["width"]),
        ("n_layers", spec.n_layers, cfg["n_layers"]),
        ("observation columns", spec.context, list(problem.context)),
        ("book (calls and puts)", spec.book.is_call, list(problem.book.is_call)),
        ("hedge option", spec.instrument is not None, problem.instrument is not None),
    )
    for what, theirs, mine in shapes:
        if theirs != mine:
            return f"its {what} is {theirs}, this one's {mine}"
    return None


def find_predecessor(
    client: MlflowClient,
    weekly_code: str,
    tags: dict[str, str],
    cfg: dict[str, Any],
    problem: HedgingProblem,
) -> WarmStart | str:
    """The predecessor's weights (module docstring), or why there is none to start from."""
    found = [
        version
        for version in registry.every(
            client.search_model_versions, filter_string=f"name LIKE '{MODEL_PREFIX}%'"
        )
        if version.tags.get("underlying") == tags["underlying"]
        and version.tags.get("weekly_code") != weekly_code
        and version.tags.get("last_bar", tags["first_bar"]) < tags["first_bar"]
    ]
    if not found:
        return (
            f"no specialist of a {tags['underlying']} code that expired before "
            f"{tags['first_bar']} is registered"
        )
    newest = max(found, key=lambda v: (v.tags["last_bar"], int(v.version)))
    loaded = registry.load_version(client, newest.name, newest.version)
    policy, spec = load_policy(loaded.directory)
    mismatch = _mismatch(spec, cfg, problem)
    if mismatch is not None:
        return f"predecessor {newest.name} v{newest.version} has another shape: {mismatch}"
    return WarmStart(newest.name, int(newest.version), policy.state_dict())
