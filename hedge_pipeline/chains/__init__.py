"""Option-chain data: the canonical schema, its validation, sources and the Greeks transform.

Pure data code (Polars, NumPy, DuckDB); the Dagster assets in ``defs/market_data`` stay thin
wrappers around it.
"""
