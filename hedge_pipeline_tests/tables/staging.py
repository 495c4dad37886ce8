"""The staging tables a warehouse holds: what a write that was not published must not leave."""

from __future__ import annotations

import duckdb

from hedge_pipeline.tables import warehouse


def staging_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The names of the tables in ``warehouse.STAGING_SCHEMA``."""
    return [
        name
        for (name,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = ?",
            [warehouse.STAGING_SCHEMA],
        ).fetchall()
    ]
