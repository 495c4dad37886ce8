"""Black–Scholes / Black-76 price, delta and gamma in torch: differentiable and broadcasting.

The NumPy kernels of :mod:`hedge_pipeline.quant.pricing` are the reference for values; these
are for code that needs gradients or already lives in torch (the hedging simulator prices its
book on every step of every path, and the deep hedger backpropagates through the features).
They follow the same conventions:

* ``futures=True``: Black-76 on the futures price ``spot``; ``dividend`` is ignored.
* ``futures=False``: Black–Scholes–Merton with continuous dividend yield ``dividend``.
* At ``tau <= 0`` or ``vol <= 0`` the option is worth its discounted intrinsic value, delta is
  the discounted exercise indicator and gamma is 0.

The dtype follows the inputs (float32 for training speed, float64 to match NumPy to 1e-10);
Python scalars adopt the tensors' dtype. No cancellation-safe wing branch: in float32 that
precision is not there to keep, and the hedger only ever prices near the money.

>>> import torch
>>> spot = torch.tensor(42.0, dtype=torch.float64)
>>> round(float(bs_greeks(spot, 40.0, 0.5, 0.2, 0.1)["price"]), 4)
4.7594
>>> g = bs_greeks(torch.tensor(49.0, dtype=torch.float64), 50.0, 20 / 52, 0.2, 0.05)
>>> [round(float(g[k]), 4) for k in ("price", "delta", "gamma")]
[2.4005, 0.5216, 0.0655]
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

__all__ = ["bs_greeks"]

TensorLike = Tensor | float | bool
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _terms(spot, strike, tau, vol, rate, dividend, is_call, futures) -> dict[str, Tensor]:
    """Everything price, delta and gamma share, on broadcast tensors of one float dtype."""
    values = (spot, strike, tau, vol, rate, dividend)
    dtypes = [x.dtype for x in values if isinstance(x, Tensor) and x.is_floating_point()]
    dtype = (
        functools.reduce(torch.promote_types, dtypes, dtypes[0])
        if dtypes
        else (torch.get_default_dtype())
    )
    s, k, t, v, r, q = (torch.as_tensor(x, dtype=dtype) for x in values)
    call = torch.as_tensor(is_call, dtype=torch.bool)
    fut = torch.as_tensor(futures, dtype=torch.bool)
    q = torch.where(fut, r, q)  # Black-76 is BSM with the dividend yield equal to the rate
    live = (t > 0) & (v > 0)
    t_pos = t.clamp(min=0.0)
    # Safe denominators where the option is dead, so that no NaN poisons the gradients.
    t_safe = torch.where(live, t, torch.ones_like(t))
    sd = torch.where(live, v, torch.ones_like(v)) * t_safe.sqrt()
    d_fwd = s * torch.exp(-q * t_pos)
    d_stk = k * torch.exp(-r * t_pos)
    d1 = (torch.log(s / k) + (r - q) * t_safe) / sd + 0.5 * sd
    sign = torch.where(call, 1.0, -1.0).to(dtype)
    return {"s": s, "sd": sd, "d1": d1, "d_fwd": d_fwd, "d_stk": d_stk, "sign": sign, "live": live}


def bs_greeks(
    spot: TensorLike,
    strike: TensorLike,
    tau: TensorLike,
    vol: TensorLike,
    rate: TensorLike = 0.0,
    dividend: TensorLike = 0.0,
    is_call: TensorLike = True,
    futures: TensorLike = False,
) -> dict[str, Tensor]:
    """Price, delta and gamma (w.r.t. ``spot``) in one pass: keys ``price, delta, gamma``.

    Shape:
        all inputs broadcast together; every output has the broadcast shape.
    """
    m = _terms(spot, strike, tau, vol, rate, dividend, is_call, futures)
    sign, d1, sd = m["sign"], m["d1"], m["sd"]
    n1 = torch.special.ndtr(sign * d1)
    n2 = torch.special.ndtr(sign * (d1 - sd))
    live_price = sign * (m["d_fwd"] * n1 - m["d_stk"] * n2)
    live_delta = sign * m["d_fwd"] / m["s"] * n1
    pdf = torch.exp(-0.5 * d1 * d1) * _INV_SQRT_2PI
    live_gamma = m["d_fwd"] * pdf / (m["s"] * m["s"] * sd)
    live = m["live"]
    if bool(live.all()):  # the usual case: skip the expiry branch and its full-size temporaries
        return {"price": live_price, "delta": live_delta, "gamma": live_gamma}
    intrinsic = sign * (m["d_fwd"] - m["d_stk"])
    itm = (intrinsic > 0).to(intrinsic.dtype)
    return {
        "price": torch.where(live, live_price, intrinsic.clamp(min=0.0)),
        "delta": torch.where(live, live_delta, sign * itm * m["d_fwd"] / m["s"]),
        "gamma": torch.where(live, live_gamma, torch.zeros_like(live_gamma)),
    }
