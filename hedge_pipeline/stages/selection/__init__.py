"""Stage 3: portfolio templates and the selected book of options (``portfolio_selection``).

Pure Python over Polars apart from ``assets.py``: ``templates`` loads and validates the JSON
templates, ``book`` applies one to greeks_features rows, ``report`` renders both for the CLI.
"""
