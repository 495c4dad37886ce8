"""Portfolio templates and the selection of the options a hedging book is short.

Pure Python over Polars (no Dagster): ``templates`` loads and validates the JSON templates,
``selection`` applies one to greeks_features rows, ``report`` renders both for the CLI.
"""
