"""Where raw chains come from (docs/design.md §4): synthetic, files, alpaca."""
