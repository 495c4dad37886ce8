"""The warehouse's table contracts (docs/design.md §3) and the DuckDB store that holds them."""
