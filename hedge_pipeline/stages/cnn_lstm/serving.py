"""A registered ``hedge-cnn-lstm`` served: its forecast and uncertainty at each bar of a code.

States are one weekly code's market-state rows in time order (``market_state.market_state_frame``
writes them), with the columns the model reads, in original units: ``FEATURE_COLUMNS``
(``log_return``, ``log_gap``, ``trailing_rv``, ``realized_vol``, ``atm_iv``, ``atm_iv_change``,
``iv_skew``, ``sqrt_tau``, the ``book_*`` aggregates and ``tod_sin``/``tod_cos``). Other
columns are ignored.

``predict`` returns one row per state row: for each target (``target_rv``, the realized vol
over the next ``horizon`` bars, annualized; ``target_atm_iv_change``) the point forecast (the
eval-mode pass, what the specialists read) and ``<target>_std``, the MC-dropout std over
``mc_samples`` passes seeded by ``seed`` (params), both in original units, from the window of
the model's ``sequence_length`` rows that ends at the row. The first ``sequence_length - 1``
rows have no full window: NaN. As in the stage, the MC draws depend on the whole batch of
windows, so the std of a row is reproducible for the same states and params.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hedge_pipeline.stages.cnn_lstm.artifact import CnnLstmSpec, load_model
from hedge_pipeline.stages.cnn_lstm.model import CnnLstm

DEFAULT_PARAMS = {"mc_samples": 30, "seed": 0}


@dataclass
class ServedCnnLstm:
    """A CNN-LSTM and its spec (``registry.pyfunc.Served``)."""

    model: CnnLstm
    spec: CnnLstmSpec
    params: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_PARAMS))

    def predict(self, states: pd.DataFrame, params: Mapping[str, Any]) -> pd.DataFrame:
        """Forecasts and MC-dropout stds at every row of ``states`` (module docstring).

        Raises:
            ValueError: a feature column is missing.
        """
        spec, length = self.spec, self.spec.model.sequence_length
        missing = [c for c in spec.feature_columns if c not in states.columns]
        if missing:
            raise ValueError(
                f"hedge-cnn-lstm: states lack the columns {missing}; a state row needs "
                f"{spec.feature_columns}"
            )
        columns = [*spec.target_columns, *(f"{c}_std" for c in spec.target_columns)]
        out = np.full((len(states), len(columns)), np.nan)
        if len(states) >= length:
            values = states[spec.feature_columns].to_numpy().astype(np.float64)
            x = torch.from_numpy(
                spec.inputs.standardizer().transform(values).astype(np.float32)
            ).unfold(0, length, 1)  # (windows, features, length)
            x = x.transpose(1, 2).contiguous()
            targets = spec.targets.standardizer()
            with torch.no_grad():
                point = self.model.eval()(x)
            _, std = self.model.predict_mc(x, int(params["mc_samples"]), int(params["seed"]))
            out[length - 1 :, : len(spec.target_columns)] = targets.inverse(point.double().numpy())
            out[length - 1 :, len(spec.target_columns) :] = std.double().numpy() * targets.std
        return pd.DataFrame(out, columns=columns, index=states.index)

    def example(self) -> pd.DataFrame:
        """One full window (and one bar more) at the training means of the features."""
        rows = self.spec.model.sequence_length + 1
        mean = self.spec.inputs.mean
        return pd.DataFrame([mean] * rows, columns=self.spec.feature_columns)


def load(directory: Path) -> ServedCnnLstm:
    """A registered CNN-LSTM's folder, loaded by the stage's own :func:`load_model`."""
    model, spec = load_model(directory)
    return ServedCnnLstm(model, spec)
