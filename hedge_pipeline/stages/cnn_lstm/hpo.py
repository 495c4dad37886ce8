"""Optuna search for the CNN-LSTM stage, before the final training (``hpo_trials > 0``).

Each trial trains on the train split and is scored by its best validation loss; a median
pruner stops trials that fall behind after their first epoch. Trials are logged as MLflow runs
nested under the stage's run (tag ``mlflow.parentRunId``), and the stage then refits once with
the best parameters, in its own run, which is what gets registered.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import optuna
from mlflow import MlflowClient

from hedge_pipeline.harness.session import TrainingSession
from hedge_pipeline.harness.tracking import TrackingReporter, log_metrics
from hedge_pipeline.harness.trainer import fit
from hedge_pipeline.stages.cnn_lstm.config import model_config, train_config
from hedge_pipeline.stages.cnn_lstm.market_state import SequenceData
from hedge_pipeline.stages.cnn_lstm.model import CnnLstm, CnnLstmTask


class _PruningReporter(TrackingReporter):
    """Reports each epoch's validation loss to the trial and stops it when the pruner says so."""

    def __init__(
        self, session: TrainingSession, client: MlflowClient, run_id: str, trial: optuna.Trial
    ):
        super().__init__(session, client, run_id)
        self.trial = trial

    def info(self, message: str) -> None:  # trial chatter stays in the trial's MLflow run
        pass

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        super().epoch(epoch, metrics)
        self.trial.report(metrics["val_loss"], epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")


def suggest(trial: optuna.Trial, cfg: dict[str, Any]) -> dict[str, Any]:
    """The search space, around the profile's sizes (never larger than the budget)."""
    hidden = cfg["model"]["lstm_hidden"]
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 5e-3, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "model": {
            **cfg["model"],
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
            "lstm_hidden": trial.suggest_categorical("lstm_hidden", [max(4, hidden // 2), hidden]),
        },
    }


def search(
    session: TrainingSession,
    data: SequenceData,
    cfg: dict[str, Any],
    client: MlflowClient,
    parent_run_id: str,
) -> dict[str, Any]:
    """Run ``cfg['hpo_trials']`` trials; return ``cfg`` with the best trial's parameters."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=cfg["seed"]),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1),
    )

    def objective(trial: optuna.Trial) -> float:
        trial_cfg = {**cfg, **suggest(trial, cfg)}
        run_id = client.create_run(
            experiment_id,
            tags={"mlflow.parentRunId": parent_run_id, "hpo_trial": str(trial.number)},
            run_name=f"trial-{trial.number}",
        ).info.run_id
        reporter = _PruningReporter(session, client, run_id, trial)
        status = "FAILED"
        try:
            with tempfile.TemporaryDirectory(prefix="hpo-") as tmp:
                model = CnnLstm(model_config(trial_cfg))
                task = CnnLstmTask(data, batch_size=cfg["batch_size"], seed=cfg["seed"])
                result = fit(model, task, train_config(trial_cfg), Path(tmp), reporter)
            status = "FINISHED"
            log_metrics(client, run_id, {"best_val_loss": result.best_val_loss})
            return result.best_val_loss
        except optuna.TrialPruned:
            status = "KILLED"
            raise
        finally:
            for key, value in trial.params.items():
                client.log_param(run_id, key, value)
            client.set_terminated(run_id, status=status)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=cfg["hpo_trials"])
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    session.info(
        f"hpo: {len(study.trials)} trials ({pruned} pruned), best val_loss "
        f"{study.best_value:.4g} with {study.best_params}"
    )
    for key, value in study.best_params.items():
        client.log_param(parent_run_id, f"best_{key}", value)
    log_metrics(client, parent_run_id, {"hpo_best_val_loss": study.best_value})
    return {**cfg, **suggest(optuna.trial.FixedTrial(study.best_params), cfg)}
