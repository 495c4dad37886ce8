"""A Pipes message reader that hands on whole messages only.

Dagster's file readers tail the message file with ``readline()`` and parse what it returns.
At the end of the file ``readline()`` returns whatever is there, so a message the child has
written only part of yet (a report's metadata runs to several kilobytes: the file grows a
page at a time while the child writes it) is parsed half-written, the JSON decoder raises,
the reader thread dies, and every later message of the run is lost: the step still succeeds,
without its metadata. Seen under load on this machine, a specialist's report at column 4853.

:class:`CompleteLineMessageReader` reads the same file, written by the same
``PipesFileMessageWriterChannel`` of ``open_dagster_pipes``, but keeps a partial line until
its newline arrives (:func:`complete_lines` over Dagster's own ``tail_file`` polling loop).

Whatever reads the messages (this reader for a local child, the Ray job's or the pod's log
reader for a remote one), the launcher also shows each one to its *observers*
(:class:`ObservedHandler`): the progress printer, and :class:`FinalFailureWatch`, which notices
the child's final failure (``harness.session.FINAL_FAILURE``) on its way through Pipes.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
from dagster._utils import tail_file  # the loop Dagster's own readers poll the file with
from dagster_pipes import PipesDefaultMessageWriter

from hedge_pipeline.harness.session import FINAL_FAILURE

#: Sees every Pipes message of a child as it arrives (a raw message dict).
Observer = Callable[[dict], None]


def complete_lines(chunks: Iterable[str]) -> Iterator[str]:
    """The newline-terminated lines of ``chunks`` (what successive ``readline()`` calls
    returned), each whole however many reads it took; a partial last line is held back.

    >>> list(complete_lines(['{"a": 1}\\n', '{"b": ', '2}\\n', '{"c"']))
    ['{"a": 1}\\n', '{"b": 2}\\n']
    """
    pending = ""
    for chunk in chunks:
        pending += chunk
        if pending.endswith("\n"):
            yield pending
            pending = ""


class ObservedHandler:
    """A ``PipesMessageHandler`` that also shows each message to ``observers`` once it is
    handled. An observer's error is reported, never allowed to stop the reading (a progress
    line is not worth a lost message). Anything else is the wrapped handler's: readers reach
    for its attributes (the Ray job reader logs through ``handler._context``)."""

    def __init__(self, handler: dg.PipesMessageHandler, observers: Sequence[Observer]) -> None:
        self._handler = handler
        self._observers = tuple(observers)

    def handle_message(self, message: Any) -> None:
        self._handler.handle_message(message)
        for observer in self._observers:
            try:
                observer(message)
            except Exception:
                self._handler.report_pipes_framework_exception("message observer", sys.exc_info())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handler, name)


class FinalFailureWatch:
    """An observer that keeps the child's final-failure message (``harness.session``), if it
    sends one: the launcher then fails the step without retries.

    >>> watch = FinalFailureWatch()
    >>> watch({"method": "log", "params": {"message": "epoch 1/2"}})
    >>> watch({"method": "report_custom_message",
    ...        "params": {"payload": {"final_failure": "TrainingDiverged: loss is nan"}}})
    >>> watch.message
    'TrainingDiverged: loss is nan'
    """

    def __init__(self) -> None:
        self.message: str | None = None

    def __call__(self, message: dict) -> None:
        if message.get("method") != "report_custom_message":
            return
        payload = (message.get("params") or {}).get("payload")
        if isinstance(payload, dict) and FINAL_FAILURE in payload:
            self.message = str(payload[FINAL_FAILURE])


class CompleteLineMessageReader(dg.PipesMessageReader):
    """Reads the child's messages from a temporary file, whole messages only (module doc),
    showing each to ``observers`` (:class:`ObservedHandler`)."""

    def __init__(
        self, include_stdio_in_messages: bool = False, observers: Sequence[Observer] = ()
    ) -> None:
        self._include_stdio = include_stdio_in_messages
        self._observers = tuple(observers)

    @contextmanager
    def read_messages(self, handler: dg.PipesMessageHandler) -> Iterator[dict]:
        with tempfile.TemporaryDirectory(prefix="hedge-pipes-") as folder:
            path = os.path.join(folder, "messages")
            open(path, "w", encoding="utf-8").close()
            done = threading.Event()
            observed = ObservedHandler(handler, self._observers)
            thread = threading.Thread(target=self._read, args=(path, observed, done), daemon=True)
            thread.start()
            try:
                yield {
                    PipesDefaultMessageWriter.FILE_PATH_KEY: path,
                    PipesDefaultMessageWriter.INCLUDE_STDIO_IN_MESSAGES_KEY: self._include_stdio,
                }
            finally:
                done.set()
                thread.join()

    @staticmethod
    def _read(path: str, handler: dg.PipesMessageHandler, done: threading.Event) -> None:
        try:
            for line in complete_lines(tail_file(path, done.is_set)):
                handler.handle_message(json.loads(line))
        except Exception:
            handler.report_pipes_framework_exception(
                "CompleteLineMessageReader reader thread", sys.exc_info()
            )
            raise

    def no_messages_debug_text(self) -> str:
        return "Attempted to read messages from a local temporary file, whole lines only."
