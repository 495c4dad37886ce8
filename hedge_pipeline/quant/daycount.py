"""The day count of every time to expiry in the pipeline: ACT/365 (docs/design.md §3).

``tau`` in ``greeks_features``, the replayed bars of a weekly code and the market-state windows
all measure years as elapsed seconds over ``SECONDS_PER_YEAR``:

>>> SECONDS_PER_YEAR / 86_400
365.0
"""

from __future__ import annotations

SECONDS_PER_YEAR = 365.0 * 86_400.0
