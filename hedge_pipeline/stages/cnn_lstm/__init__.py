"""Stage 4: the CNN-LSTM market-state model that forecasts realized volatility."""
