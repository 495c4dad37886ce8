"""Dagster-facing code, one folder per area; each folder exposes its own ``Definitions``."""
