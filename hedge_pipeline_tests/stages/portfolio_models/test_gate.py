"""The promotion gate: champion only when better than BS delta and the champion by a margin."""

from __future__ import annotations

from hedge_pipeline.stages.portfolio_models.train_ensemble import _gate


def _table(ensemble: float, bs: float) -> dict:
    return {"ensemble": {"es10": ensemble}, "bs_delta": {"es10": bs}}


def test_a_worse_model_is_never_promoted_and_the_reason_says_why():
    decision, reason = _gate(_table(2.0, 1.9), None, 0.01)
    assert decision == "candidate" and "does not beat BS delta's 1.9" in reason
    decision, reason = _gate(_table(1.5, 2.0), (4, 1.4), 0.01)
    assert decision == "candidate" and "does not beat champion v4's 1.4" in reason
    # Better, but not by the margin.
    decision, _ = _gate(_table(1.39, 2.0), (4, 1.4), 0.05)
    assert decision == "candidate"


def test_a_model_better_than_both_by_the_margin_is_promoted():
    decision, reason = _gate(_table(1.2, 2.0), (4, 1.4), 0.05)
    assert decision == "promoted"
    assert "champion v4" in reason
    assert _gate(_table(1.2, 2.0), None, 0.05)[0] == "promoted"


def test_a_champion_on_other_codes_is_kept_and_the_reason_says_why():
    decision, reason = _gate(_table(1.2, 2.0), (4, None), 0.05)
    assert decision == "candidate"
    assert "champion v4 covers other weekly codes" in reason
    # Not beating BS delta is still the first reason.
    assert "does not beat BS delta" in _gate(_table(2.1, 2.0), (4, None), 0.05)[1]
