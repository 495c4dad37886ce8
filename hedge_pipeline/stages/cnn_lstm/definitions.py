"""The CNN-LSTM stage's ``Definitions``."""

import dagster as dg

from hedge_pipeline.stages.cnn_lstm.asset import cnn_lstm_model

defs = dg.Definitions(assets=[cnn_lstm_model])
