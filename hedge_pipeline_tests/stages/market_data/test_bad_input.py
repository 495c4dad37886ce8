"""Every kind of malformed drop gets its clear error, and the warehouse keeps its contents."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hedge_pipeline.runtime import paths
from hedge_pipeline.tables import warehouse
from hedge_pipeline_tests.conftest import small_book, write_drop
from hedge_pipeline_tests.stages.market_data.helpers import materialize_code
from hedge_pipeline_tests.stages.market_data.sources.malformed_corpus import CASES

CODE = "BAD1"


def _snapshot() -> dict[str, str]:
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        return {
            t: warehouse.partition_hash(con, t, CODE)
            for t in ("raw_option_chains", "greeks_features", "quarantined_quotes")
        }


@pytest.fixture
def seeded_warehouse(instance, data_dir: Path, synthetic_code_frame):
    """A warehouse already holding a good version of the partition the bad drops target."""
    raw = data_dir / "raw"
    write_drop(small_book(synthetic_code_frame), raw, CODE)
    assert materialize_code(instance, CODE, kind="files", raw_dir=raw).success
    shutil.rmtree(raw / CODE)
    return raw


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_drop_fails_clearly_and_changes_nothing(case, instance, seeded_warehouse):
    before = _snapshot()
    CASES[case].write(seeded_warehouse, CODE)
    result = materialize_code(
        instance, CODE, kind="files", raw_dir=seeded_warehouse, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert CASES[case].expect in message, message
    assert CODE in message  # the message names the file, which lives under the code's folder
    assert _snapshot() == before
