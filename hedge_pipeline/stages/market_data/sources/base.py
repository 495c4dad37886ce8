"""The interface every source of raw chains implements (docs/design.md §4)."""

from __future__ import annotations

from typing import Protocol

import polars as pl


class ChainSource(Protocol):
    """A place weekly option books come from.

    ``list_codes`` maps each weekly code the source holds to a fingerprint that changes when,
    and only when, that code's data changes (the new-codes sensor keys its cursor on it).
    ``load`` returns the code's quotes in the canonical schema plus the lineage columns
    (``schema.RAW_COLUMNS + schema.LINEAGE_COLUMNS``). It raises ``ChainDataError`` for input
    it cannot parse (naming file, row, column, reason) and ``UnknownWeeklyCodeError`` for a code
    it does not hold. Row-level rules (crossed quotes, NaN, ...) are checked afterwards by
    ``market_data.validation`` for every source alike.
    """

    name: str

    def list_codes(self) -> dict[str, str]: ...

    def load(self, weekly_code: str) -> pl.DataFrame: ...
