"""The Pipes reader hands on a message only once its whole line is written."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from hedge_pipeline.orchestration.pipes_messages import CompleteLineMessageReader, ObservedHandler


class Recorder:
    """What the reader thread hands a ``PipesMessageHandler``: messages, or a failure."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.failures: list[str] = []

    def handle_message(self, message: dict) -> None:
        self.messages.append(message)

    def report_pipes_framework_exception(self, origin: str, exc_info) -> None:
        self.failures.append(f"{origin}: {exc_info[1]!r}")


def test_a_message_written_in_two_parts_arrives_whole(tmp_path: Path) -> None:
    """A report of ~20 kB, written as the child's file grows a piece at a time, with the
    reader polling in between: Dagster's own reader parsed the first piece and died."""
    path = tmp_path / "messages"
    path.write_text("", encoding="utf-8")
    report = json.dumps({"method": "report", "params": {"table": "| x |" * 4000}}) + "\n"
    recorder, done, seen = Recorder(), threading.Event(), []
    observed = ObservedHandler(recorder, [seen.append])
    reader = threading.Thread(
        target=CompleteLineMessageReader._read, args=(str(path), observed, done)
    )
    reader.start()
    with path.open("a", encoding="utf-8") as child:
        child.write('{"method": "opened"}\n')
        child.flush()
        for start in range(0, len(report), 4096):
            child.write(report[start : start + 4096])
            child.flush()
            time.sleep(0.05)  # several polls of the reader between two pieces
    done.set()
    reader.join(timeout=10)
    assert recorder.failures == []
    assert [m["method"] for m in recorder.messages] == ["opened", "report"]
    assert recorder.messages[1]["params"]["table"] == "| x |" * 4000
    assert seen == recorder.messages  # the observer (progress lines) sees each, whole


def test_an_observer_that_fails_loses_no_message(tmp_path: Path) -> None:
    """A progress printer that raises is reported; every message still reaches Dagster."""
    path = tmp_path / "messages"
    path.write_text("".join(f'{{"method": "m{i}"}}\n' for i in range(3)), encoding="utf-8")
    recorder, done = Recorder(), threading.Event()

    def broken(message: dict) -> None:
        raise ValueError(f"cannot print {message['method']}")

    observed = ObservedHandler(recorder, [broken])
    reader = threading.Thread(
        target=CompleteLineMessageReader._read, args=(str(path), observed, done)
    )
    reader.start()
    time.sleep(0.5)
    done.set()
    reader.join(timeout=10)
    assert [m["method"] for m in recorder.messages] == ["m0", "m1", "m2"]
    assert len(recorder.failures) == 3 and "cannot print m0" in recorder.failures[0]
