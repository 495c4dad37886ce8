"""Risk measures of a P&L distribution: ρ(PL), the cash that must be added to make it acceptable.

A hedger is judged by one number: the smallest amount of cash that, added to its P&L, makes
the position acceptable under a convex risk measure ρ. That amount is ρ(PL) itself (ρ is cash
invariant: ρ(PL + m) = ρ(PL) − m), the hedger's *price* of the liability: a positive number is
money the hedger needs, so lower is better. Being a smooth (or almost everywhere
differentiable) function of the sampled P&L, it is also the training loss of the pathwise deep
hedger. :meth:`RiskMeasure.cash` returns it.

The entropic and expected-shortfall formulas are pfhedge's, so that its published figures (the
price its ``Hedger.price`` reports, equal to its criterion's ``forward``, the loss) compare
directly with our ``cash``; mean–variance is the textbook quadratic price:

* :class:`EntropicRisk` ``a``: (1/a)·log E[exp(−a·PL)], exponential utility's indifference price;
* :class:`ExpectedShortfall` ``p``: −mean of the worst ``p`` fraction of PL (CVaR);
* :class:`MeanVariance` ``lam``: −E[PL] + lam·Var(PL).

**The sign of ``cash`` is the opposite of pfhedge's.** pfhedge's ``HedgeLoss.cash(pnl)`` is the
certainty equivalent, the sure amount as preferable as the P&L, which is −ρ(PL) (its
``ExpectedShortfall.cash`` returns −ES, and ``Hedger.price`` is ``-criterion.cash(pnl)``). Here
``cash(pl)`` is ρ(PL): pfhedge ``cash`` = −(our ``cash``). A certain loss of 1 costs 1 here and
−1 there. (pfhedge also reduces dimension 0; these reduce the last one.)

Every measure reduces the last dimension (the sample of paths), so a batch of P&L samples
``(..., n_paths)`` gives ``(...)`` prices. Torch only: no NumPy round trip in a training step.

>>> import torch
>>> pl = torch.tensor([-1.0, 0.0, 1.0, 2.0])
>>> float(ExpectedShortfall(0.25).cash(pl))
1.0
>>> float(MeanVariance(0.0).cash(pl))
-0.5
>>> parse_criterion("entropic:2")
EntropicRisk(a=2.0)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["EntropicRisk", "ExpectedShortfall", "MeanVariance", "RiskMeasure", "parse_criterion"]


class RiskMeasure:
    """A convex risk measure ρ; :meth:`cash` is ρ(PL), the price of the hedged liability.

    ``cash`` is the risk, not pfhedge's certainty equivalent: positive is bad (cash the hedger
    must add), and pfhedge's ``cash`` of the same P&L is its negative (module docstring).

    :meth:`loss` is what gradient descent minimizes. It equals :meth:`cash` for every measure
    here: the entropic price is written with ``logsumexp``, so its gradient is the stable
    softmax weighting of the paths rather than the overflowing E[exp(−a·PL)] of textbook code.
    """

    def cash(self, pl: Tensor) -> Tensor:
        """ρ(PL) over the last dimension: the cash to add to PL to make it acceptable.

        Positive means the position needs money, so lower is better; pfhedge's ``cash`` is −ρ.
        A certain loss of 1 (PL = −1 on every path) gives 1 under every measure here:

        >>> certain_loss = -torch.ones(8)
        >>> [float(m.cash(certain_loss)) for m in (EntropicRisk(2.0), ExpectedShortfall(0.1),
        ...                                        MeanVariance(0.5))]
        [1.0, 1.0, 1.0]

        Shape:
            pl: (..., n_paths) → (...)
        """
        raise NotImplementedError

    def loss(self, pl: Tensor) -> Tensor:
        """The training objective; the price itself (see the class docstring)."""
        return self.cash(pl)


class EntropicRisk(RiskMeasure):
    """(1/a)·log E[exp(−a·PL)]: risk aversion ``a`` > 0; tends to −E[PL] as a → 0.

    For PL ~ N(μ, σ²) the price is −μ + a·σ²/2 exactly, which the tests assert.

    >>> torch.manual_seed(0) is not None
    True
    >>> pl = 0.1 + 0.2 * torch.randn(400_000, dtype=torch.float64)
    >>> round(float(EntropicRisk(1.0).cash(pl)), 2)  # −0.1 + 0.02
    -0.08
    """

    def __init__(self, a: float = 1.0) -> None:
        if not a > 0.0:
            raise ValueError(f"entropic risk aversion must be > 0, got {a}")
        self.a = float(a)

    def __repr__(self) -> str:
        return f"EntropicRisk(a={self.a})"

    def cash(self, pl: Tensor) -> Tensor:
        n = pl.shape[-1]
        return (torch.logsumexp(-self.a * pl, dim=-1) - math.log(n)) / self.a


class ExpectedShortfall(RiskMeasure):
    """−mean of the worst ``p`` fraction of PL (the worst ⌈p·n⌉ samples), 0 < p ≤ 1.

    ``torch.topk`` selects the tail, so the gradient flows to exactly the tail paths: that is
    the pathwise gradient of CVaR (Rockafellar–Uryasev), no smoothing needed.

    >>> round(float(ExpectedShortfall(0.1).cash(torch.linspace(0.0, 1.0, 100_001))), 3)
    -0.05
    """

    def __init__(self, p: float = 0.1) -> None:
        if not 0.0 < p <= 1.0:
            raise ValueError(f"expected-shortfall level must lie in (0, 1], got {p}")
        self.p = float(p)

    def __repr__(self) -> str:
        return f"ExpectedShortfall(p={self.p})"

    def tail_size(self, n: int) -> int:
        """How many of ``n`` outcomes make the tail: ⌈p·n⌉, at least one."""
        return max(1, math.ceil(self.p * n - 1e-9))

    def cash(self, pl: Tensor) -> Tensor:
        k = self.tail_size(pl.shape[-1])
        return torch.topk(-pl, k, dim=-1, sorted=False).values.mean(dim=-1)


class MeanVariance(RiskMeasure):
    """−E[PL] + lam·Var(PL) (population variance), lam ≥ 0: the quadratic-utility price.

    >>> float(MeanVariance(0.5).cash(torch.tensor([0.0, 2.0])))
    -0.5
    """

    def __init__(self, lam: float = 0.5) -> None:
        if not lam >= 0.0:
            raise ValueError(f"mean-variance weight must be >= 0, got {lam}")
        self.lam = float(lam)

    def __repr__(self) -> str:
        return f"MeanVariance(lam={self.lam})"

    def cash(self, pl: Tensor) -> Tensor:
        var, mean = torch.var_mean(pl, dim=-1, correction=0)
        return -mean + self.lam * var


_CRITERIA: dict[str, type[RiskMeasure]] = {
    "entropic": EntropicRisk,
    "es": ExpectedShortfall,
    "meanvar": MeanVariance,
}


def parse_criterion(spec: str) -> RiskMeasure:
    """A risk measure from its config spelling ``NAME:PARAM``, e.g. ``"es:0.1"``.

    Names: ``entropic:a``, ``es:p``, ``meanvar:lam``; the parameter may be left out
    (``"entropic"``) to take the default (a = 1, p = 0.1, lam = 0.5).

    >>> parse_criterion("es:0.1"), parse_criterion("meanvar")
    (ExpectedShortfall(p=0.1), MeanVariance(lam=0.5))
    >>> parse_criterion("cvar:0.1")
    Traceback (most recent call last):
    ...
    ValueError: unknown criterion 'cvar' in 'cvar:0.1'; expected one of entropic, es, meanvar
    """
    name, sep, param = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in _CRITERIA:
        raise ValueError(
            f"unknown criterion {name!r} in {spec!r}; expected one of {', '.join(_CRITERIA)}"
        )
    if not sep:
        return _CRITERIA[name]()
    try:
        value = float(param)
    except ValueError:
        raise ValueError(f"criterion parameter must be a number: {spec!r}") from None
    return _CRITERIA[name](value)
