"""The torch Black–Scholes kernels against the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hedge_pipeline.quant import pricing
from hedge_pipeline.quant.torch_pricing import bs_greeks


def _book(n: int = 4000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "spot": rng.uniform(50.0, 150.0, n),
        "strike": rng.uniform(60.0, 140.0, n),
        "tau": np.exp(rng.uniform(np.log(1 / 365), np.log(2.0), n)),
        "vol": rng.uniform(0.05, 1.0, n),
        "rate": rng.uniform(0.0, 0.08, n),
        "dividend": rng.uniform(0.0, 0.04, n),
        "is_call": rng.random(n) < 0.5,
        "futures": rng.random(n) < 0.5,
    }


def test_matches_numpy_in_float64():
    book = _book()
    ref = pricing.bs_greeks(**book)
    got = bs_greeks(**{k: torch.from_numpy(v) for k, v in book.items()})
    for key in ("price", "delta", "gamma"):
        np.testing.assert_allclose(got[key].numpy(), ref[key], rtol=0, atol=1e-10, err_msg=key)


def test_expired_and_zero_vol_options_are_intrinsic():
    spot = torch.tensor([110.0, 90.0, 110.0], dtype=torch.float64)
    tau = torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64)
    vol = torch.tensor([0.2, 0.2, 0.0], dtype=torch.float64)
    ref = pricing.bs_greeks(spot.numpy(), 100.0, tau.numpy(), vol.numpy(), 0.03)
    got = bs_greeks(spot, 100.0, tau, vol, 0.03)
    for key in ("price", "delta", "gamma"):
        np.testing.assert_allclose(got[key].numpy(), ref[key], atol=1e-12, err_msg=key)


def test_hull_vectors_and_float32():
    s = torch.tensor(49.0)
    assert s.dtype == torch.float32
    g = bs_greeks(s, 50.0, 20 / 52, 0.2, 0.05)
    assert g["price"].dtype == torch.float32
    assert float(g["price"]) == pytest.approx(2.4005, abs=1e-4)
    assert float(g["delta"]) == pytest.approx(0.5216, abs=1e-4)
    assert float(g["gamma"]) == pytest.approx(0.06554, abs=1e-5)


def test_delta_and_gamma_are_the_autograd_derivatives():
    spot = torch.linspace(80.0, 120.0, 9, dtype=torch.float64, requires_grad=True)
    for is_call in (True, False):
        greeks = bs_greeks(spot, 100.0, 0.3, 0.25, 0.02, 0.01, is_call=is_call)
        price, delta, gamma = greeks["price"], greeks["delta"], greeks["gamma"]
        (grad,) = torch.autograd.grad(price.sum(), spot, create_graph=True)
        (grad2,) = torch.autograd.grad(grad.sum(), spot)
        torch.testing.assert_close(grad, delta)
        torch.testing.assert_close(grad2, gamma)
