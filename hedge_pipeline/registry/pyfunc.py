"""Every registered version as an MLflow pyfunc: ``mlflow.pyfunc.load_model(uri).predict(states)``.

A stage still writes its plain folder (``weights.pt``, ``config.json``…, ``registry.artifact``)
and still loads it with its own loader; :func:`package` wraps that folder, unchanged, as the
``model`` artifact of a pyfunc (models-from-code, :mod:`.pyfunc_code`: nothing is pickled),
with a signature and an input example. Loading the pyfunc (:class:`HedgePyfunc`) checks the
weights against the checksum recorded when the folder was packaged, the same sha256 that the
version's ``weights_sha256`` tag holds, then hands the folder to the stage's loader.

The per-stage part, what a state row is and how states map to positions or forecasts, lives
beside each stage in a ``serving`` module (``stages/<stage>/serving.py``) that :data:`SERVING`
names by registered model. Such a module has one entry point, ``load(directory) -> Served``.
The registry never imports a stage: the module is named in the pyfunc's config and imported
when the version is loaded.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel, PythonModelContext

from hedge_pipeline.registry import versions as registry

# Registered model (a name, or a prefix ending in "-") → the module that serves its versions.
SERVING: dict[str, str] = {
    "hedge-cnn-lstm": "hedge_pipeline.stages.cnn_lstm.serving",
    "hedge-specialist-": "hedge_pipeline.stages.specialists.serving",
    "hedge-meta-controller": "hedge_pipeline.stages.portfolio_models.serving",
    "hedge-joint": "hedge_pipeline.stages.portfolio_models.serving",
    "hedge-ensemble": "hedge_pipeline.stages.portfolio_models.serving",
}
_CODE = Path(__file__).with_name("pyfunc_code.py")  # the models-from-code entry point
# What a served version imports; listed so that MLflow does not infer them by loading the
# model in a subprocess at every registration.
_REQUIREMENTS = ("mlflow", "torch", "numpy", "pandas", "polars", "pydantic")


class Served(Protocol):
    """A stage's model ready to serve (the ``serving`` module's ``load`` returns one)."""

    #: ``predict``'s params and their defaults (in the signature; {} for none)
    params: Mapping[str, Any]

    def example(self) -> pd.DataFrame:
        """A few valid state rows: the version's input example."""
        ...

    def predict(self, states: pd.DataFrame, params: Mapping[str, Any]) -> pd.DataFrame:
        """Positions (or forecasts) for ``states``, one output row per state row."""
        ...


def serving_module(name: str) -> str | None:
    """The module that serves the registered model ``name`` (None: no serving yet).

    >>> serving_module("hedge-specialist-3CN5")
    'hedge_pipeline.stages.specialists.serving'
    >>> serving_module("hedge-toy") is None
    True
    """
    for key, module in SERVING.items():
        if name == key or (key.endswith("-") and name.startswith(key)):
            return module
    return None


def load_served(module: str, directory: Path) -> Served:
    """The stage folder ``directory`` loaded by ``module``'s own loader."""
    return importlib.import_module(module).load(directory)


def package(folder: Path, module: str, out: Path) -> Path:
    """Write the pyfunc ``out`` around the stage's ``folder`` (module docstring), served by
    ``module``. Its signature is inferred from the served model's own example and answer, so
    it says exactly which columns ``predict`` reads and returns."""
    served = load_served(module, folder)
    example = served.example()
    signature = infer_signature(
        example, served.predict(example, served.params), params=dict(served.params) or None
    )
    mlflow.pyfunc.save_model(
        path=str(out),
        python_model=str(_CODE),
        artifacts={registry.STAGE_ARTIFACT: str(folder)},
        model_config={
            "serving": module,
            "weights_sha256": registry.file_sha256(folder / registry.WEIGHTS_FILE),
        },
        signature=signature,
        input_example=example,
        pip_requirements=[_pinned(package) for package in _REQUIREMENTS],
    )
    return out


class HedgePyfunc(PythonModel):
    """The pyfunc of every registered version: the stage's served model behind MLflow's API."""

    def load_context(self, context: PythonModelContext) -> None:
        """Verify the weights, then load the folder with the stage's own loader.

        Raises:
            TamperedArtifactError: the weights differ from the ones that were packaged.
        """
        config = context.model_config
        directory = Path(context.artifacts[registry.STAGE_ARTIFACT])
        registry.verify_weights(directory, config["weights_sha256"], f"pyfunc {directory}")
        self._served = load_served(config["serving"], directory)

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        return self._served.predict(model_input, {**self._served.params, **(params or {})})


def _pinned(package: str) -> str:
    """``package==<installed version>``."""
    return f"{package}=={importlib.metadata.version(package)}"
