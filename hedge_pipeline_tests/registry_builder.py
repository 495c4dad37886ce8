"""A real MLflow registry holding the lineage of docs/design.md §1, registered with the project's
own ``registry.register_version`` (runs, artifacts, tags, ``candidate`` alias) but no training.

The shape is the one the training stages produce, with the traps of a registry that has seen
a few nights of retraining: older versions nobody points to, a specialist whose latest version
is not the one the meta-controller was built on, an ensemble built on two joint models (one per
seed) that share one meta-controller, specialists that share one CNN-LSTM.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.entities.model_registry import ModelVersion

from hedge_pipeline.registry import versions as registry

CODES = ("3CN5", "3IN5", "3MN5")
CNN_LSTM = "hedge-cnn-lstm"
META = "hedge-meta-controller"
JOINT = "hedge-joint"
ENSEMBLE = "hedge-ensemble"
REPORT_MD = """# hedge-ensemble v2

Trained on 3 weekly codes.

## Evaluation (test windows, replay)

| hedger | es10 | mean_pnl |
|---|---:|---:|
| ensemble | 0.112 | -0.010 |
| bs_delta | 0.153 | -0.012 |

## Weights

| joint | weight |
|---|---:|
| hedge-joint v2 | 0.6 |
"""


def specialist(code: str) -> str:
    return f"hedge-specialist-{code}"


def data_version(code: str) -> str:
    """A stand-in for the content hash of a code's exported dataset."""
    return hashlib.sha256(f"dataset of {code}".encode()).hexdigest()


def register(
    client: MlflowClient,
    workdir: Path,
    name: str,
    tags: dict[str, str] | None = None,
    metrics: dict[str, float] | None = None,
    report: dict[str, str | bytes] | None = None,
) -> ModelVersion:
    """One version of ``name`` from a fresh run, logged as a stage logs it; ``report`` files
    (relative path -> content) go under the run's ``report/`` artifacts."""
    run_id = client.create_run(registry.ensure_experiment(client, name)).info.run_id
    if metrics:
        client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    if report:
        folder = workdir / f"report-{run_id}"
        for relative, content in report.items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        client.log_artifacts(run_id, str(folder), artifact_path="report")
    model_dir = workdir / f"model-{run_id}"
    model_dir.mkdir(parents=True)
    (model_dir / registry.WEIGHTS_FILE).write_bytes(run_id.encode())
    base = {
        "dagster_run_id": f"dagster-{run_id[:8]}",
        "dagster_asset": name.removeprefix("hedge-").replace("-", "_"),
        "code_version": "0123abcd",
        "config_hash": "cfg",
        "data_version": hashlib.sha256(name.encode()).hexdigest(),
    }
    version = registry.register_version(client, name, run_id, model_dir, {**base, **(tags or {})})
    client.set_terminated(run_id)
    return version


@dataclass(frozen=True)
class SyntheticLineage:
    ensemble: ModelVersion  # the champion
    joints: tuple[ModelVersion, ...]
    meta: ModelVersion
    specialists: dict[str, ModelVersion]
    cnn_lstm: ModelVersion


def build_lineage(client: MlflowClient, workdir: Path) -> SyntheticLineage:
    """hedge-ensemble v2 (champion) -> hedge-joint v2, v3 -> hedge-meta-controller v1 ->
    hedge-specialist-<code> v1 for three codes -> hedge-cnn-lstm v2."""
    register(client, workdir, CNN_LSTM, metrics={"test_mse_rv": 0.5})
    cnn = register(client, workdir, CNN_LSTM, metrics={"test_mse_rv": 0.4, "val_mse_rv": 0.3})
    specialists = {
        code: register(
            client,
            workdir,
            specialist(code),
            {
                "weekly_code": code,
                "data_version": data_version(code),
                f"upstream.{CNN_LSTM}": str(cnn.version),
            },
            metrics={"test_replay_policy_es10": 0.1 + i / 100},
        )
        for i, code in enumerate(CODES)
    }
    # Retrained since: the meta-controller was built on 3CN5's v1, not its latest.
    register(client, workdir, specialist(CODES[0]), {"weekly_code": CODES[0]})
    meta = register(
        client,
        workdir,
        META,
        {f"upstream.{specialist(c)}": str(v.version) for c, v in specialists.items()},
    )
    register(client, workdir, JOINT, {f"upstream.{META}": str(meta.version)})  # an old seed
    joints = tuple(
        register(client, workdir, JOINT, {f"upstream.{META}": str(meta.version)}, {"test_es10": e})
        for e in (0.12, 0.13)
    )
    register(client, workdir, ENSEMBLE, {f"upstream.{JOINT}": "1"})
    ensemble = register(
        client,
        workdir,
        ENSEMBLE,
        {f"upstream.{JOINT}/{k}": str(j.version) for k, j in enumerate(joints)},
        metrics={"test_es10": 0.112, "test_mean_pnl": -0.01, "val_es10": 0.1},
        report={
            "report.md": REPORT_MD,
            "report.json": '{"es10": 0.112}',
            "plots/pnl.png": b"\x89PNG",
        },
    )
    client.set_registered_model_alias(ENSEMBLE, registry.CHAMPION, ensemble.version)
    return SyntheticLineage(
        ensemble=client.get_model_version(ENSEMBLE, ensemble.version),
        joints=joints,
        meta=meta,
        specialists=specialists,
        cnn_lstm=cnn,
    )
