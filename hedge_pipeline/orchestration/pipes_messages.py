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
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import dagster as dg
from dagster._utils import tail_file  # the loop Dagster's own readers poll the file with
from dagster_pipes import PipesDefaultMessageWriter


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


class CompleteLineMessageReader(dg.PipesMessageReader):
    """Reads the child's messages from a temporary file, whole messages only (module doc).

    ``observer`` also sees every message as it arrives (``harness.progress.ConsoleProgress``
    prints the training's epochs from them); an error of its own is reported, never allowed
    to stop the reading.
    """

    def __init__(
        self,
        include_stdio_in_messages: bool = False,
        observer: Callable[[dict], None] | None = None,
    ) -> None:
        self._include_stdio = include_stdio_in_messages
        self._observer = observer

    @contextmanager
    def read_messages(self, handler: dg.PipesMessageHandler) -> Iterator[dict]:
        with tempfile.TemporaryDirectory(prefix="hedge-pipes-") as folder:
            path = os.path.join(folder, "messages")
            open(path, "w", encoding="utf-8").close()
            done = threading.Event()
            thread = threading.Thread(
                target=self._read, args=(path, handler, done, self._observer), daemon=True
            )
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
    def _read(
        path: str,
        handler: dg.PipesMessageHandler,
        done: threading.Event,
        observer: Callable[[dict], None] | None,
    ) -> None:
        try:
            for line in complete_lines(tail_file(path, done.is_set)):
                message = json.loads(line)
                handler.handle_message(message)
                if observer is not None:
                    try:
                        observer(message)
                    except Exception:  # a progress line is not worth a lost message
                        handler.report_pipes_framework_exception(
                            "CompleteLineMessageReader observer", sys.exc_info()
                        )
        except Exception:
            handler.report_pipes_framework_exception(
                "CompleteLineMessageReader reader thread", sys.exc_info()
            )
            raise

    def no_messages_debug_text(self) -> str:
        return "Attempted to read messages from a local temporary file, whole lines only."
