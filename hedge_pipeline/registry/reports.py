"""Evaluation reports of registered versions, fetched for ``hedge evaluate``.

The ensemble stage logs its evaluation in the registered version's source MLflow run, under
``report/``: ``report.md`` (the tables a researcher reads), ``report.json`` (the same numbers
for programs) and PNG plots. The registry, not a local file, is the record: what lands in
``$HEDGE_DATA_DIR/reports/<name>-v<version>/`` is a copy of what was logged with that exact
version, replaced as a whole on every fetch so files of an older copy never linger beside it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from hedge_pipeline.registry import lineage
from hedge_pipeline.registry.versions import CHAMPION, UnknownModelVersionError
from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.locks import file_lock

ENSEMBLE = "hedge-ensemble"
REPORT_DIR = "report"  # artifact folder of the source run
REPORT_MD = "report.md"
_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


class MissingReportError(LookupError):
    """The version's source run logged no evaluation report."""


@dataclass(frozen=True)
class FetchedReport:
    name: str
    version: int
    directory: Path
    files: list[Path]

    @property
    def markdown(self) -> str:
        return (self.directory / REPORT_MD).read_text(encoding="utf-8")


def default_version(client: MlflowClient) -> tuple[ModelVersion, str | None]:
    """The ensemble's champion; before any promotion, its latest version and a note saying so.

    Raises:
        UnknownModelVersionError: no ensemble has been registered yet.
    """
    try:
        return lineage.resolve(client, f"{ENSEMBLE}@{CHAMPION}"), None
    except UnknownModelVersionError:
        latest = lineage.resolve(client, ENSEMBLE)
    note = f"{ENSEMBLE} has no {CHAMPION} yet; using its latest version, v{latest.version}"
    return latest, note


def fetch(client: MlflowClient, version: ModelVersion) -> FetchedReport:
    """Download the version's ``report/`` artifacts to ``reports_dir()/<name>-v<version>/``.

    Raises:
        MissingReportError: the source run has no ``report/report.md``.
    """
    label = f"{version.name} v{version.version}"
    logged = client.list_artifacts(version.run_id, REPORT_DIR) if version.run_id else []
    if f"{REPORT_DIR}/{REPORT_MD}" not in {f.path for f in logged}:
        found = ", ".join(f.path for f in logged) or "nothing"
        raise MissingReportError(
            f"{label}: its source run {version.run_id} has no {REPORT_DIR}/{REPORT_MD} "
            f"(under {REPORT_DIR}/: {found}); only the ensemble stage logs evaluation reports"
        )
    target = paths.reports_dir() / f"{version.name}-v{version.version}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        file_lock(target.parent / ".lock"),
        tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as staging,
    ):
        downloaded = Path(client.download_artifacts(version.run_id, REPORT_DIR, staging))
        shutil.rmtree(target, ignore_errors=True)
        downloaded.rename(target)
    files = sorted(p for p in target.rglob("*") if p.is_file())
    return FetchedReport(version.name, int(version.version), target, files)


def summary(markdown: str) -> str | None:
    r"""What a report says first: its title, the verdict and units, and the first section (the
    headline and the table of every hedger against the strongest baseline), up to the first
    figure or the next section. A report without that shape (an older release's) gives its
    :func:`evaluation_table`.

    >>> print(summary("# R\n\n**candidate**: why\n\n## Test\n\nline\n\n| a |\n|---|\n| 1 |"
    ...               "\n\n![plot](p.png)\n\n## More\n\n| b |\n|---|\n| 2 |"))
    # R
    <BLANKLINE>
    **candidate**: why
    <BLANKLINE>
    ## Test
    <BLANKLINE>
    line
    <BLANKLINE>
    | a |
    |---|
    | 1 |
    """
    lines = markdown.splitlines()
    sections = [i for i, line in enumerate(lines) if line.startswith("## ")]
    figures = [i for i, line in enumerate(lines) if line.startswith("![")]
    end = min([*sections[1:2], *figures[:1], len(lines)])
    head = lines[:end]
    if not any(line.startswith("**") for line in head) or not _tables(head):
        return evaluation_table(markdown)
    return "\n".join(head).rstrip()


def evaluation_table(markdown: str) -> str | None:
    """The report's evaluation table: the first table after the first heading that mentions
    "evaluation" (returned with that heading), else the report's first table; None if it has
    no table."""
    lines = markdown.splitlines()
    tables = _tables(lines)
    heading = next(
        (
            i
            for i, line in enumerate(lines)
            if line.startswith("#") and "evaluation" in line.lower()
        ),
        None,
    )
    if heading is not None:
        for start, end in tables:
            if start > heading:
                return "\n".join([lines[heading], "", *lines[start:end]])
    return "\n".join(lines[slice(*tables[0])]) if tables else None


def _tables(lines: list[str]) -> list[tuple[int, int]]:
    """``(first, past last)`` line of each markdown table: a header row, then a separator row
    (``|---|---:|``), then rows starting with ``|``."""
    found = []
    i = 0
    while i < len(lines) - 1:
        if lines[i].lstrip().startswith("|") and _SEPARATOR.match(lines[i + 1]):
            end = i + 2
            while end < len(lines) and lines[end].lstrip().startswith("|"):
                end += 1
            found.append((i, end))
            i = end
        else:
            i += 1
    return found
