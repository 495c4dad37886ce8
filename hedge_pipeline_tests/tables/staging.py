"""The staging a warehouse holds (tables or views): what a write that was not published must
not leave."""

from __future__ import annotations

import duckdb

from hedge_pipeline.tables import warehouse


def staging_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The names of the tables and views in ``warehouse.STAGING_SCHEMA``."""
    return [
        name
        for (name,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = $1 UNION ALL "
            "SELECT view_name FROM duckdb_views() WHERE schema_name = $1 ORDER BY 1",
            [warehouse.STAGING_SCHEMA],
        ).fetchall()
    ]
