"""Automation: the nightly retrain schedule and the sensor that retrains the portfolio stages."""
