"""The one way a model stage's asset is built: read and export its inputs, launch its child.

Every training asset (``cnn_lstm_model``, ``specialist_agents``, ``meta_controller``,
``joint_model``, ``hedge_ensemble``) takes the same resources, is retried the same way, and
hands its child the same kind of extras through the :class:`TrainingLauncher`. What differs is
only what it reads and exports (a stage's ``inputs`` function, given a
:class:`TrainingRequest`), so that is all a stage writes.

No ``from __future__ import annotations`` here: Dagster reads the run-config class off the
asset function's ``config`` annotation, which must be the class itself, not a string.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from hedge_pipeline.orchestration.launcher import TrainingLauncher
from hedge_pipeline.orchestration.resources import ProfileResource, WarehouseResource
from hedge_pipeline.runtime.profiles import Profile


@dataclass(frozen=True)
class TrainingRequest:
    """What a stage's ``inputs`` function reads: the run, its run config, the warehouse and
    the profile that sizes the stage."""

    context: dg.AssetExecutionContext
    config: Any  # the stage's dg.Config subclass
    warehouse_db: WarehouseResource
    profile: Profile


#: A stage's inputs: the extras its child receives (config, identity, dataset paths, versions).
Inputs = Callable[[TrainingRequest], dict[str, Any]]

RETRY = dg.RetryPolicy(max_retries=2, delay=1, backoff=dg.Backoff.EXPONENTIAL)


def training_asset(
    *,
    name: str,
    stage: str,
    config_type: type[dg.Config],
    inputs: Inputs,
    deps: Sequence[dg.AssetsDefinition],
    description: str,
    partitions_def: dg.PartitionsDefinition | None = None,
) -> dg.AssetsDefinition:
    """The asset ``name`` that launches ``python -m hedge_pipeline.training <stage>`` with
    the extras ``inputs`` builds; a failed run is retried twice (a child's final failure is
    not: :meth:`TrainingLauncher.run`)."""

    @dg.asset(
        name=name,
        deps=list(deps),
        description=description,
        partitions_def=partitions_def,
        group_name="models",
        kinds={"pytorch", "mlflow"},
        retry_policy=RETRY,
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: config_type,  # type: ignore[valid-type]
        warehouse_db: WarehouseResource,
        launcher: TrainingLauncher,
        profile: ProfileResource,
    ) -> dg.MaterializeResult:
        request = TrainingRequest(context, config, warehouse_db, profile.get())
        return launcher.run(context, stage, inputs(request))

    return _asset
