"""Stage 5: one hedging agent per weekly code (``specialist_agents``)."""
