"""Where raw chains come from (docs/design.md §4): synthetic, files, alpaca, history.

``quoting`` holds what the two generated sources (synthetic, history) share: smile, spreads,
ticks, trades and open interest.
"""
