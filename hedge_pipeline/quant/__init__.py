"""Pure numerics: pricing, implied vol, market generators, risk measures (NumPy/torch only)."""
