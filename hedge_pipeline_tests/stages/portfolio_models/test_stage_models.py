"""The portfolio stages' own part of the lifecycle (``harness.lifecycle.StageModel``), tested
without MLflow or a subprocess: fit, evaluate, and a saved folder that reloads to identical
positions, on two books of one simulated path set (``conftest.two_books``)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from hedge_pipeline.harness.lifecycle import StageModel
from hedge_pipeline.harness.session import TrainingSession
from hedge_pipeline.harness.tracking import TrackingReporter
from hedge_pipeline.hedging.deep_hedging import make_policy
from hedge_pipeline.runtime.profiles import get_profile
from hedge_pipeline.stages.portfolio_models import stage as shared
from hedge_pipeline.stages.portfolio_models.config import (
    MetaControllerInputs,
    PortfolioModelChoices,
    PortfolioModelStageConfig,
)
from hedge_pipeline.stages.portfolio_models.market import PortfolioEpisodes
from hedge_pipeline.stages.portfolio_models.train_joint import JointMember
from hedge_pipeline.stages.portfolio_models.train_meta_controller import MetaControllerModel
from hedge_pipeline_tests.stages.portfolio_models.conftest import two_books


def _rows(episodes, index: torch.Tensor):
    """The windows ``index`` of a batch (fields without a per-path axis are shared)."""
    n = episodes.spot.shape[0]
    return type(episodes)(
        *(
            value[index]
            if isinstance(value, torch.Tensor) and value.dim() and len(value) == n
            else value
            for value in episodes
        )
    )


class BookMarket:
    """The two books' path set standing in for a calibrated ``PortfolioMarket``: the first
    half replays as training windows, the second as validation and test; ``sample`` draws
    windows of a split with replacement; ``bootstrapped`` resamples the training windows one
    by one (the real market's blocks are tested in ``test_market``)."""

    codes = ("A", "B")

    def __init__(self, episodes: PortfolioEpisodes) -> None:
        half = episodes.n_paths // 2
        self.splits = {
            "train": torch.arange(half),
            "val": torch.arange(half, episodes.n_paths),
            "test": torch.arange(half, episodes.n_paths),
        }
        self.episodes = episodes

    def bootstrapped(self, seed: int) -> BookMarket:
        train = self.splits["train"]
        pick = torch.randint(
            len(train), (len(train),), generator=torch.Generator().manual_seed(seed)
        )
        resampled = copy.copy(self)
        resampled.splits = self.splits | {"train": train[pick]}
        return resampled

    def _take(self, index: torch.Tensor) -> PortfolioEpisodes:
        ep = self.episodes
        return PortfolioEpisodes(
            ep.spot[index], ep.present[index], tuple(_rows(b, index) for b in ep.books)
        )

    def replay(self, split: str) -> PortfolioEpisodes:
        return self._take(self.splits[split])

    def sample(self, n_paths, generator, split="train", any_expiry=False, vol_scale=(1.0, 1.0)):
        rows = self.splits[split]
        return self._take(rows[torch.randint(len(rows), (n_paths,), generator=generator)])


@pytest.fixture(scope="module")
def inputs() -> shared.StageInputs:
    pp, episodes = two_books(256)
    smoke = get_profile("smoke").portfolio
    cfg = PortfolioModelStageConfig.within(
        PortfolioModelChoices(cost=pp.cost), get_profile("smoke")
    ).as_dict() | {
        "meta_epochs": 1,
        "joint_epochs_per_phase": 1,
        "steps_per_epoch": 2,
        "paths_per_step": 64,
        "val_paths": min(smoke.val_paths, 128),
    }
    market = BookMarket(episodes)
    torch.manual_seed(0)
    specialists = [make_policy("mlp", p, width=8, n_layers=2).eval() for p in pp.problems]
    portfolio = shared.Portfolio(market, pp, specialists, {"A": 1, "B": 1}, [])
    validation = shared.validation_windows(portfolio, cfg)
    identity = {
        "dagster_run_id": "test",
        "dagster_asset": "meta_controller",
        "data_version": "d" * 16,
        "code_version": "test",
    }
    extras = MetaControllerInputs(
        features=Path("unread.parquet"),
        selection=Path("unread.parquet"),
        specialists=portfolio.versions,
        config=PortfolioModelStageConfig.parse(cfg),
        identity=identity,
    )
    return shared.StageInputs(
        extras,
        cfg,
        extras.identity_dict(),
        None,
        portfolio,
        validation,
        shared.objective(portfolio, cfg, validation),
    )


def _reporter() -> TrackingReporter:
    return TrackingReporter(TrainingSession({}, None, 0), None, None)


def _round_trip(model: StageModel, trained: torch.nn.Module, tmp_path: Path) -> None:
    """What ``train_and_register`` requires of every registered folder."""
    folder = model.save(trained, tmp_path / "model")
    with torch.no_grad():
        assert torch.equal(model.probe(trained), model.probe(model.load(folder)))


def test_meta_controller_fits_scores_the_test_split_and_reloads(inputs, tmp_path: Path) -> None:
    model = MetaControllerModel(inputs)
    meta = model.fit(_reporter(), tmp_path / "checkpoints")
    assert model.result is not None and len(model.result.history) == 1
    result = model.evaluate(meta, tmp_path)
    rows = model.test_metrics
    assert {"bs_delta", "specialists", "meta_controller"} <= set(rows)
    assert result.metrics["test_replay_meta_controller_es10"] == rows["meta_controller"]["es10"]
    assert "vs specialists" in result.summary
    _round_trip(model, meta, tmp_path)


def test_joint_member_starts_from_the_meta_controller_and_reloads(inputs, tmp_path: Path):
    meta_model = MetaControllerModel(inputs)
    meta = meta_model.fit(_reporter(), tmp_path / "meta")
    spec = shared.MetaControllerSpec.of(inputs.portfolio, meta, inputs.cfg, var_limit=1.0)
    cfg = inputs.cfg | {"member": 1, "seed": inputs.cfg["seed"] + 1}
    member = JointMember(inputs, cfg, meta.state_dict(), spec)
    joint = member.fit(_reporter(), tmp_path / "joint")
    result = member.evaluate(joint, tmp_path)
    assert result.metrics == {f"val_{k}": v for k, v in member.validation.items()}
    assert member.spec().joint.model_dump() == {"member": 1, "seed": cfg["seed"]}
    _round_trip(member, joint, tmp_path)
