"""The promotion gate: champion only when the ensemble beats the strongest baseline on the
simulated and the replayed test with an interval that excludes 0, and the champion by a margin.
"""

from __future__ import annotations

from hedge_pipeline.hedging.comparison import Comparison, PairedDifference
from hedge_pipeline.stages.portfolio_models.train_ensemble import _gate


def _comparison(baseline: str, ours: float, theirs: float, low: float, high: float):
    row = PairedDifference(ours, theirs, ours - theirs, low, high, 400, 20)
    return Comparison(baseline, {"ensemble": row}, "ensemble")


def _both(baseline: str, ours: float, theirs: float, low: float, high: float) -> dict:
    return {
        s: _comparison(baseline, ours, theirs, low, high) for s in ("test_simulated", "test_replay")
    }


def _table(ensemble: float) -> dict:
    return {"ensemble": {"es10": ensemble}}


def test_a_worse_ensemble_is_never_promoted_and_the_reason_names_the_baseline():
    decision, reason = _gate(_both("bs_delta", 2.0, 1.9, 0.05, 0.15), _table(2.0), None, 0.01)
    assert decision == "candidate"
    assert "simulated test: is worse than the strongest baseline bs_delta" in reason
    assert "replayed test: is worse than the strongest baseline bs_delta" in reason


def test_beating_bs_delta_but_not_bs_delta_gamma_is_not_enough():
    """The books trade options: the strongest baseline is BS delta-gamma, and beating BS delta
    by a wide margin does not promote a model that delta-gamma hedging beats."""
    comparisons = _both("bs_delta_gamma", 1.8, 1.6, 0.1, 0.3)
    decision, reason = _gate(comparisons, _table(1.8), None, 0.01)
    assert decision == "candidate" and "strongest baseline bs_delta_gamma" in reason


def test_an_interval_that_includes_zero_is_not_a_gain():
    comparisons = _both("whalley_wilmott", 1.9, 2.0, -0.3, 0.1)
    decision, reason = _gate(comparisons, _table(1.9), None, 0.01)
    assert decision == "candidate"
    assert "does not beat the strongest baseline whalley_wilmott" in reason
    assert "(95 % interval -0.3 to +0.1)" in reason
    # Clear on one test, not on the other: still a candidate, and the reason says which.
    comparisons["test_simulated"] = _comparison("whalley_wilmott", 1.5, 2.0, -0.6, -0.4)
    decision, reason = _gate(comparisons, _table(1.9), None, 0.01)
    assert decision == "candidate"
    assert "replayed test" in reason and "simulated test" not in reason


def test_a_model_clear_of_the_baseline_and_the_champion_is_promoted():
    comparisons = _both("bs_delta", 1.2, 2.0, -1.0, -0.5)
    decision, reason = _gate(comparisons, _table(1.2), (4, 1.4), 0.05)
    assert decision == "promoted"
    assert "bs_delta on the simulated test" in reason and "champion v4" in reason
    assert _gate(comparisons, _table(1.2), None, 0.05)[0] == "promoted"
    # Clear of the baseline, not of the champion by the margin.
    decision, reason = _gate(comparisons, _table(1.39), (4, 1.4), 0.05)
    assert decision == "candidate" and "does not beat champion v4's 1.4 by 5.0%" in reason


def test_every_failed_condition_is_said():
    comparisons = _both("bs_delta", 2.1, 2.0, 0.05, 0.2)
    decision, reason = _gate(comparisons, _table(2.1), (4, None), 0.05)
    assert decision == "candidate"
    assert "is worse than the strongest baseline bs_delta" in reason
    assert "champion v4 covers other weekly codes" in reason
