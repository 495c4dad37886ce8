"""Models and training (torch only, never Dagster): the generic trainer, the CNN-LSTM, metrics."""
