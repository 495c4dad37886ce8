"""The names of the textbook hedges' rows in every risk table, and nothing else.

Kept free of torch so that the CLI (``hedge models show``) reads the same names the stages log
without loading the numerics.
"""

#: The baselines every hedger is scored beside (the specialists' and the portfolio's tables).
BASELINES = ("no_hedge", "bs_delta", "whalley_wilmott")
#: Those, BS delta-gamma, which exists only where the books trade a hedge option, and the
#: minimum-variance delta, which exists where it was fitted on option price history: the
#: candidates for the strongest baseline a trained model is measured against.
BASELINE_ROWS = (*BASELINES, "bs_delta_gamma", "mv_delta")
