"""``implied_vol_codes``: the same solve as ``implied_vol``, statuses as indices."""

from __future__ import annotations

import numpy as np

from hedge_pipeline.quant.implied_vol import STATUSES, implied_vol, implied_vol_codes


def test_codes_name_the_same_status_and_vol_as_implied_vol():
    """Every status occurs once at least (ok, below intrinsic, above the cap, no quote,
    expired), in a batch large enough to be split into chunks on the thread pool."""
    rng = np.random.default_rng(0)
    n = 200_000
    price = rng.uniform(0.0, 12.0, n)
    price[:4] = [4.759422392871532, 0.5, 50.0, np.nan]
    tau = np.where(np.arange(n) == 4, 0.0, rng.uniform(0.01, 1.0, n))
    is_call = rng.random(n) < 0.5
    iv, status = implied_vol(price, 42.0, 40.0, tau, 0.1, is_call=is_call)
    iv_c, code = implied_vol_codes(price, 42.0, 40.0, tau, 0.1, is_call=is_call)
    assert code.dtype == np.int8
    assert np.array(STATUSES)[code].tolist() == status.tolist()
    assert set(status.tolist()) == set(STATUSES)
    np.testing.assert_array_equal(iv_c, iv)
