"""Portfolio-level hedging: every weekly code of one underlying, hedged together."""
