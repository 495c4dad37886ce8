"""The repository stands on its own, and its test configuration runs every doctest.

A clone holds everything its text refers to: no tracked file points outside the repository
(a sibling ``shared`` folder, an absolute path of the machine it was written on), every
``docs/<file>`` that a file names exists, every ``docs/design.md §N`` names a section the design
has, and every ``docs/notes.md, <Section>`` a heading the notes have.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Spelled in pieces so that this file does not match its own patterns.
OUTSIDE = re.compile(
    "|".join(
        [
            re.escape("../" + "shared"),
            re.escape("shared/" + "notes"),
            re.escape("shared/" + "DESIGN"),
            "DESIGN" + r" §",  # the old citation of the design, now docs/design.md §N
            r"(?<![\w.~-])/" + "work/",  # an absolute path of the machine the code was written on
        ]
    )
)
DOCS_REF = re.compile(r"\bdocs/[\w./-]*\.[A-Za-z]+\b")  # a file under docs/, with its extension
DESIGN_SECTION = re.compile(r"docs/design\.md((?:,? §\d+)+)")
NOTES_SECTION = re.compile(r"docs/notes\.md, (\w+)")


def tracked_text_files() -> dict[str, str]:
    """Path → text of every tracked file that is text (binary files are left out)."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    texts = {}
    for name in filter(None, listing.decode().split("\0")):
        path = ROOT / name
        if not path.is_file():  # deleted in the working tree, not yet committed
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            texts[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return texts


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    found = tracked_text_files()
    assert len(found) > 100 and "README.md" in found and "docs/design.md" in found
    return found


def _hits(texts: dict[str, str], pattern: re.Pattern[str]) -> list[tuple[str, int, str]]:
    return [
        (name, number, line.strip())
        for name, text in sorted(texts.items())
        for number, line in enumerate(text.splitlines(), 1)
        for _ in pattern.finditer(line)
    ]


def test_no_tracked_file_refers_outside_the_repository(texts):
    hits = _hits(texts, OUTSIDE)
    assert not hits, "references to files outside the repository:\n" + "\n".join(
        f"{name}:{number}: {line}" for name, number, line in hits
    )


def test_the_outside_patterns_catch_what_they_are_for():
    for text in (
        "see ../" + "shared/" + "DESIGN.md",
        "(shared/" + "notes/hedging-anchors.md)",
        "(DESIGN" + " §4)",
        "cd /" + "work/main",
    ):
        assert OUTSIDE.search(text), text
    for text in ("docs/design.md §4", "docs/notes.md, E1", "shared by the stages", "network/io"):
        assert not OUTSIDE.search(text), text


def test_every_docs_file_named_exists(texts):
    missing = [
        f"{name}:{number}: {ref}"
        for name, text in sorted(texts.items())
        for number, line in enumerate(text.splitlines(), 1)
        for ref in DOCS_REF.findall(line)
        if not (ROOT / ref).exists()
    ]
    assert not missing, "docs files named but not in the repository:\n" + "\n".join(missing)


def test_every_design_section_cited_exists(texts):
    design = (ROOT / "docs/design.md").read_text(encoding="utf-8")
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", design, flags=re.MULTILINE)}
    assert sections == set(range(1, 10))
    cited = [
        (name, int(n))
        for name, text in texts.items()
        for refs in DESIGN_SECTION.findall(text)
        for n in re.findall(r"\d+", refs)
    ]
    assert len(cited) > 20  # the code cites the design; a broken pattern would find nothing
    wrong = sorted({f"{name}: §{n}" for name, n in cited if n not in sections})
    assert not wrong, f"sections missing from docs/design.md: {wrong}"


def test_every_notes_section_cited_exists(texts):
    notes = (ROOT / "docs/notes.md").read_text(encoding="utf-8")
    headings = re.findall(r"^##+ (.+)$", notes, flags=re.MULTILINE)
    cited = {(name, label) for name, text in texts.items() for label in NOTES_SECTION.findall(text)}
    assert len(cited) > 5
    wrong = sorted(
        f"{name}: {label}"
        for name, label in cited
        if not any(h.split()[0].rstrip(":,") == label for h in headings)
    )
    assert not wrong, f"sections missing from docs/notes.md: {wrong}"


def test_pytest_collects_the_doctests_of_the_package():
    """``make test`` runs every ``>>>`` example of hedge_pipeline, not only the test files."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    options = config["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in options["addopts"].split()
    assert set(options["testpaths"]) == {"hedge_pipeline_tests", "hedge_pipeline"}
