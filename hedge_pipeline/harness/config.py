"""The typed contract a training stage's child receives: validated once, hashed once.

Every stage has one pydantic model of its merged configuration (the user's choices within the
profile's budget) in its own ``config.py``. The asset builds it before it exports any data, so a
bad value fails the run before anything is written; the child validates what it receives
(``extras["config"]``) before it reads any data, because a child can also be launched by hand,
by a Ray job or by a pod with extras written elsewhere. Unknown keys are refused (a misspelt
``cosst`` would otherwise be ignored silently and the run would train on the default).

A config is frozen: what was validated is what trains, and what is hashed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

T = TypeVar("T")


class ConfigError(ValueError):
    """A stage config that no data could fix: never retried (a ``ValueError``)."""


class StageConfig(BaseModel):
    """Base of every stage's merged config: unknown keys refused, immutable once built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Self:
        """``raw`` validated, or a :class:`ConfigError` naming every offending field.

        >>> from pydantic import Field
        >>> class Demo(StageConfig):
        ...     cost: float = Field(ge=0.0)
        >>> Demo.parse({"cost": 0.5}).cost
        0.5
        >>> try:
        ...     Demo.parse({"cost": None, "cosst": 1})
        ... except ConfigError as error:
        ...     print(str(error).replace("; ", "\\n"))
        invalid Demo: cost: Input should be a valid number (got None)
        cosst: unknown field (got 1)
        """
        try:
            return cls.model_validate(dict(raw))
        except ValidationError as error:
            raise ConfigError(f"invalid {cls.__name__}: {describe(error)}") from None

    def as_dict(self) -> dict[str, Any]:
        """The plain JSON-ready mapping the child's algorithms and the tracking run read."""
        return self.model_dump(mode="json")


def check_criterion(value: str) -> str:
    """``entropic:A``, ``es:P`` or ``meanvar:L`` as :func:`quant.risk.parse_criterion` reads it."""
    # Imported here: quant.risk pulls in torch, which the code location should not load.
    from hedge_pipeline.quant.risk import parse_criterion

    parse_criterion(value)
    return value


def given(value: T | None, default: T) -> T:
    """``value`` unless it is unset (``None``): unlike ``value or default``, 0 is a value.

    >>> given(None, 8), given(0, 8), given(3, 8)
    (8, 0, 3)
    """
    return default if value is None else value


class Identity(BaseModel):
    """Who asked for a model version (``orchestration.identity``): the tags of
    docs/design.md §8 and the key of its checkpoints."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dagster_run_id: str
    root_run_id: str | None = None  # retries share the run id, re-executions the root
    dagster_asset: str
    data_version: str
    code_version: str
    weekly_code: str | None = None
    upstream: dict[str, int] = Field(default_factory=dict)


class ChildInputs(BaseModel):
    """Base of every stage's extras (what its asset hands the child through Pipes): the
    merged config and the identity (and, for a child run by hand, the file its final failure
    is written to: under a launcher it travels through Pipes, ``harness.session``); each
    stage adds its data (dataset paths) and the registered versions it builds on, and narrows
    ``config``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: StageConfig
    identity: Identity
    failure_file: str | None = None

    @classmethod
    def parse(cls, extras: Mapping[str, Any]) -> Self:
        """``extras`` validated, or a :class:`ConfigError` naming every offending field
        (``config.cost``, ``identity.data_version``, an unknown key, ...)."""
        try:
            return cls.model_validate(dict(extras))
        except ValidationError as error:
            raise ConfigError(f"invalid {cls.__name__}: {describe(error)}") from None

    def identity_dict(self) -> dict[str, Any]:
        """The identity as the tracking helpers read it (a fresh, mutable mapping)."""
        return self.identity.model_dump()


def describe(error: ValidationError) -> str:
    """One line per offending field: ``field: reason (got value)``; unknown keys named so."""
    parts = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "<config>"
        reason = "unknown field" if item["type"] == "extra_forbidden" else item["msg"]
        reason = reason.removeprefix("Value error, ")  # a validator's own ValueError message
        parts.append(f"{field}: {reason} (got {item['input']!r})")
    return "; ".join(parts)


def config_hash(cfg: Mapping[str, Any]) -> str:
    """The 16-hex-digit identity of a configuration: the key of its checkpoints and the
    ``config_hash`` tag of the version it registers. Keys are sorted, so the order in which a
    config was assembled never changes it.

    >>> config_hash({"b": 1, "a": 2.5}) == config_hash({"a": 2.5, "b": 1})
    True
    >>> config_hash({"a": 1})
    'f9d86028c6e0d64e'
    """
    return hashlib.sha256(json.dumps(dict(cfg), sort_keys=True).encode()).hexdigest()[:16]
