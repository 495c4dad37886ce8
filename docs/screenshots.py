"""Screenshots for the README: the ensemble's asset page in the Dagster UI and its evaluation
report, taken with headless Chromium (Debian's ``/usr/bin/chromium``) on a finished lineage.

Usage, after ``make run`` (or any lineage that registered ``hedge-ensemble``)::

    .venv/bin/python docs/screenshots.py            # data under $HEDGE_DATA_DIR (default data/)

It starts ``hedge ui`` on a free loopback port, opens the ``hedge_ensemble`` asset page, fetches
the latest ensemble report with ``hedge evaluate`` and renders its ``report.md`` (tables and
plots) to HTML, and writes ``docs/ui-hedge-ensemble.png`` and ``docs/report-hedge-ensemble.png``
(the report's top: the verdict and the first test split).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from markdown_it import MarkdownIt
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 24px; }
table { border-collapse: collapse; margin: 12px 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; }
img { max-width: 100%; }
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, seconds: float = 240.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(2)
    raise TimeoutError(f"{url} did not answer within {seconds:.0f} s")


def report_html() -> Path:
    """``hedge evaluate``'s copy of the latest ensemble report, rendered next to its PNGs."""
    out = subprocess.run([BIN / "hedge", "evaluate"], capture_output=True, text=True, check=True)
    written = next(line for line in out.stdout.splitlines() if line.startswith("written to "))
    folder = Path(written.removeprefix("written to ").removesuffix(":"))
    html = MarkdownIt("commonmark").enable("table").render((folder / "report.md").read_text())
    page = folder / "report.html"
    page.write_text(f"<html><head><style>{STYLE}</style></head><body>{html}</body></html>")
    return page


def main() -> None:
    port = _free_port()
    ui = subprocess.Popen(
        [BIN / "hedge", "ui", "--port", str(port)],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(f"http://127.0.0.1:{port}/server_info")
        page_file = report_html()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(f"http://127.0.0.1:{port}/assets/hedge_ensemble", timeout=120_000)
            page.get_by_text("es10_vs_baseline", exact=False).first.wait_for(timeout=120_000)
            page.wait_for_timeout(3000)
            page.screenshot(path=ROOT / "docs" / "ui-hedge-ensemble.png", full_page=True)
            page.goto(page_file.as_uri())
            # The verdict, the first split's table against the strongest baseline, its plots.
            top = {"x": 0, "y": 0, "width": 1150, "height": 1800}
            page.screenshot(path=ROOT / "docs" / "report-hedge-ensemble.png", clip=top)
            browser.close()
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=120)
    print("wrote docs/ui-hedge-ensemble.png and docs/report-hedge-ensemble.png")


if __name__ == "__main__":
    main()
