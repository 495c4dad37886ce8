"""The MLflow side of training: tracking store, experiments, model versions (docs/design.md §8).

A stage writes its model as a plain folder (``weights.pt`` state dict, ``config.json`` and
whatever else the stage needs to rebuild the model) rather than an MLflow flavor: the default
``pt2`` format loads back as a ``GraphModule`` rather than our class, and pickles tie a version
to the code that wrote it. The lifecycle registers that folder wrapped as an MLflow pyfunc
(``registry.pyfunc``: the folder is the pyfunc's ``model`` artifact), so that
``mlflow.pyfunc.load_model("models:/NAME@alias")`` serves it; :func:`stage_folder` finds the
folder inside either layout (versions registered before the wrapper are the bare folder).
``load_version`` rebuilds from the folder and refuses weights whose checksum differs from the
version's ``weights_sha256`` tag.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import mlflow
from mlflow import MlflowClient, pyfunc
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.store.entities.paged_list import PagedList

from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.locks import file_lock

CANDIDATE = "candidate"
# The pyfunc's artifact that holds the stage's folder (``registry.pyfunc``), and MLflow's
# names for the model description file and the pyfunc flavor's artifact table in it.
STAGE_ARTIFACT = "model"
MLMODEL_FILE = "MLmodel"
CHAMPION = "champion"
WEIGHTS_FILE = "weights.pt"
# MLflow's answers for a model, version or alias that does not exist.
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
T = TypeVar("T")


class TamperedArtifactError(RuntimeError):
    """A registered model's weights do not match the checksum recorded when it was registered."""


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the sqlite store under the data directory."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    paths.mlflow_dir().mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{paths.mlflow_dir() / 'mlflow.db'}"


def client() -> MlflowClient:
    """A client bound to ``tracking_uri()``.

    Deliberately not ``mlflow.set_tracking_uri``: that exports ``MLFLOW_TRACKING_URI`` into
    the process environment, where it would outlive a change of data directory and leak into
    every child process.
    """
    uri = tracking_uri()
    mlflow_client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if uri.startswith("sqlite:"):  # the first use creates the schema: one process at a time
        with file_lock(paths.mlflow_dir() / ".init.lock"):
            mlflow_client.search_experiments(max_results=1)
    return mlflow_client


def ensure_experiment(mlflow_client: MlflowClient, name: str) -> str:
    """The experiment's id, creating it with an explicit artifact root under the data dir.

    Without ``artifact_location``, a sqlite-backed experiment stores artifacts in ``./mlruns``
    of whatever directory the process happened to start in. A tracking server (``http(s)://``)
    chooses the location itself: with ``--serve-artifacts`` that is its proxied
    ``mlflow-artifacts:/`` store, which a local path would bypass.
    """
    existing = mlflow_client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if not mlflow_client.tracking_uri.startswith(("http://", "https://")):
        location = (paths.mlflow_dir() / "artifacts" / name).resolve().as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created concurrently by another stage
        return mlflow_client.get_experiment_by_name(name).experiment_id


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def register_version(
    mlflow_client: MlflowClient,
    name: str,
    run_id: str,
    model_dir: Path,
    tags: dict[str, str],
) -> ModelVersion:
    """Log ``model_dir`` (a pyfunc wrapping the stage's folder, or the bare folder) to the
    run, register it as a new version of ``name``, alias it ``candidate``. The weights checksum
    is taken from the folder as logged.

    Idempotent per run: a retried step continues its MLflow run (``tracking.tracking_run``)
    and gets back the version that run already registered instead of a duplicate.
    """
    existing = mlflow_client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        version = max(existing, key=lambda v: int(v.version))
        mlflow_client.set_registered_model_alias(name, CANDIDATE, version.version)
        return mlflow_client.get_model_version(name, version.version)
    weights = stage_folder(model_dir) / WEIGHTS_FILE
    mlflow_client.log_artifacts(run_id, str(model_dir), artifact_path="model")
    try:
        mlflow_client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    run = mlflow_client.get_run(run_id)
    all_tags = {**tags, "weights_sha256": file_sha256(weights)}
    version = mlflow_client.create_model_version(
        name, source=f"{run.info.artifact_uri}/model", run_id=run_id, tags=all_tags
    )
    mlflow_client.set_registered_model_alias(name, CANDIDATE, version.version)
    return mlflow_client.get_model_version(name, version.version)


@dataclass(frozen=True)
class LoadedVersion:
    name: str
    version: int
    directory: Path
    tags: dict[str, str]


class UnknownModelVersionError(ValueError):
    """No such registered model, version or alias (a configuration error: never retried)."""


def find_version(
    mlflow_client: MlflowClient, name: str, version: int | None = None, alias: str | None = None
) -> ModelVersion:
    """The version numbered ``version``, or aliased ``alias``, or else the latest of ``name``.

    Raises:
        UnknownModelVersionError: no such model, version or alias; the message lists what the
            registry holds instead.
    """
    model = registered_model(mlflow_client, name)
    try:
        if version is not None:
            return mlflow_client.get_model_version(name, str(version))
        if alias is not None:
            return mlflow_client.get_model_version_by_alias(name, alias)
        versions = version_numbers(mlflow_client, name)
        if versions:
            return mlflow_client.get_model_version(name, str(versions[-1]))
    except MlflowException as exc:
        if exc.error_code not in _NOT_FOUND:
            raise
    # Here when MLflow found no such version or alias, or the model has no version at all.
    wanted = version if version is not None else alias
    what = "has no versions" if wanted is None else f"has no version or alias {str(wanted)!r}"
    known = ", ".join(map(str, version_numbers(mlflow_client, name))) or "none (train it first)"
    aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(model.aliases.items())) or "none"
    raise UnknownModelVersionError(f"{name} {what}; versions: {known}; aliases: {aliases}")


def registered_model(mlflow_client: MlflowClient, name: str) -> RegisteredModel:
    """The registered model ``name`` (its ``aliases`` map each alias to a version number).

    Raises:
        UnknownModelVersionError: no such model; the message lists the registered ones.
    """
    try:
        return mlflow_client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in _NOT_FOUND:
            raise
    names = ", ".join(sorted(m.name for m in every(mlflow_client.search_registered_models)))
    names = names or "none (train one first)"
    raise UnknownModelVersionError(f"no registered model {name!r}; registered models: {names}")


def version_numbers(mlflow_client: MlflowClient, name: str) -> list[int]:
    """Every version number registered under ``name``, ascending (empty for an unknown name)."""
    found = every(mlflow_client.search_model_versions, filter_string=f"name = '{name}'")
    return sorted(int(v.version) for v in found)


def every(search: Callable[..., PagedList[T]], **kwargs: object) -> Iterator[T]:
    """All results of an MLflow ``search_*`` call, page after page (one page holds at most 100
    registered models)."""
    token = None
    while True:
        page = search(page_token=token, **kwargs)
        yield from page
        token = page.token
        if not token:
            return


def load_version(mlflow_client: MlflowClient, name: str, ref: str | int) -> LoadedVersion:
    """Download a version (number, or an alias such as ``candidate``) and verify its weights.

    Raises:
        UnknownModelVersionError: ``name`` has no version or alias ``ref``.
        TamperedArtifactError: the weights are missing or do not match the checksum they were
            registered with.
    """
    number = isinstance(ref, int) or str(ref).isdigit()
    version = find_version(
        mlflow_client, name, int(ref) if number else None, None if number else str(ref)
    )
    downloaded = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=version.source, tracking_uri=mlflow_client.tracking_uri
        )
    )
    directory = stage_folder(downloaded)
    what = f"{name} version {version.version}"
    verify_weights(directory, version.tags.get("weights_sha256"), what)
    return LoadedVersion(name, int(version.version), directory, dict(version.tags))


def stage_folder(directory: Path) -> Path:
    """The stage's folder (``weights.pt``, ``config.json``…) in a registered version's
    ``directory``: the pyfunc's ``model`` artifact, or ``directory`` itself when the version is
    a bare folder (registered before the pyfunc wrapper, or by a test without one).

    Raises:
        TamperedArtifactError: ``MLmodel`` names no ``model`` artifact.
    """
    if not (directory / MLMODEL_FILE).is_file():
        return directory
    flavor = Model.load(str(directory / MLMODEL_FILE)).flavors.get(pyfunc.FLAVOR_NAME, {})
    artifact = flavor.get("artifacts", {}).get(STAGE_ARTIFACT)
    if artifact is None:
        raise TamperedArtifactError(
            f"{directory / MLMODEL_FILE}: no {STAGE_ARTIFACT!r} artifact in its "
            f"{pyfunc.FLAVOR_NAME} flavor; this is not a version the pipeline registered"
        )
    return directory / artifact["path"]


def verify_weights(directory: Path, expected: str | None, what: str) -> None:
    """Raise :class:`TamperedArtifactError` unless ``directory/weights.pt`` has sha256
    ``expected`` (``what`` names the version in the message)."""
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        # Deleting the weights is tampering too: say which version lacks them rather than let
        # the checksum fail with a bare FileNotFoundError on a temporary download path.
        raise TamperedArtifactError(
            f"{what}: {WEIGHTS_FILE} is missing from {directory}; refusing to load it"
        )
    actual = file_sha256(weights)
    if expected != actual:
        raise TamperedArtifactError(
            f"{what}: {WEIGHTS_FILE} has sha256 {actual[:16]}…, "
            f"but the version was registered with {str(expected)[:16]}…; refusing to load it"
        )
