"""The Ray job's submission: what ``PipesRayJobClient`` sends, and the reader's observers.
The jobs themselves run against a Ray head in ``e2e/test_ray.py``."""

from __future__ import annotations

from contextlib import contextmanager

from dagster_ray.core.pipes import PipesRayJobMessageReader

from hedge_pipeline.orchestration.ray_jobs import ObservedRayJobMessageReader, submit_params


def test_the_entrypoint_is_the_training_module_quoted_for_the_shell_and_gpus_are_reserved():
    params = submit_params(["/opt/venv bin/python", "-m", "hedge_pipeline.training", "joint"], {})
    assert params["entrypoint"] == "'/opt/venv bin/python' -m hedge_pipeline.training joint"
    assert "entrypoint_num_gpus" not in params
    assert submit_params(["python"], {}, gpus=2)["entrypoint_num_gpus"] == 2


def test_the_reader_hands_every_message_to_dagster_and_to_the_observers(monkeypatch):
    handled, seen = [], []

    class Handler:
        def handle_message(self, message):
            handled.append(message)

    @contextmanager
    def read_messages(self, handler):  # what dagster-ray's thread does with each log line
        handler.handle_message({"method": "log"})
        yield {}

    monkeypatch.setattr(PipesRayJobMessageReader, "read_messages", read_messages)
    with ObservedRayJobMessageReader([seen.append]).read_messages(Handler()):
        pass
    assert handled == seen == [{"method": "log"}]
