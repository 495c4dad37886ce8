"""The Dagster UI of ``hedge ui`` in a real headless Chromium, driven as a user drives it.

Checks the lineage graph (the 8 assets of docs/design.md §1 and their edges, read from the rendered
SVG), materializes one weekly-code partition from the graph's "Materialize selected" dialog,
waits on the run page for success, and opens the lineage of ``hedge_ensemble``. Screenshots
of each step are kept under ``test-artifacts/browser/`` (or ``$HEDGE_TEST_ARTIFACTS``).

Chromium is Debian's (``/usr/bin/chromium``, installed by ``.ci/run``), never a downloaded
build; it runs headless with networking features off and a fresh profile.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dagster as dg
import pytest

from hedge_pipeline_tests.conftest import DESIGN_ASSETS, small_book, write_drop
from hedge_pipeline_tests.e2e.artifacts import browser_artifacts
from hedge_pipeline_tests.e2e.dagster_ui import running_ui

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.xdist_group("dagster_ui")]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# docs/design.md §1: 1→2→3→4; {2, 3, 4}→5; 5 → 6 → 7 → 8. The code may add edges
# (cnn_lstm_model also reads greeks_features); these must all be there.
DESIGN_EDGES = {
    ("raw_option_chains", "greeks_features"),
    ("greeks_features", "portfolio_selection"),
    ("portfolio_selection", "cnn_lstm_model"),
    ("greeks_features", "specialist_agents"),
    ("portfolio_selection", "specialist_agents"),
    ("cnn_lstm_model", "specialist_agents"),
    ("specialist_agents", "meta_controller"),
    ("meta_controller", "joint_model"),
    ("joint_model", "hedge_ensemble"),
}
CODES = ["3CN5", "3IN5"]
CODE = "3CN5"
GRAPH = "/asset-groups?expanded=global%40global%3Amarket_data%2Cglobal%40global%3Amodels"
LINEAGE = "/assets/hedge_ensemble?view=lineage&lineageScope=upstream&lineageDepth=10"
TIMEOUT_MS = 120_000

# Reads the rendered lineage graph: asset nodes are <foreignObject>s holding the asset's name,
# edges are <path marker-end> whose first point leaves the source's box and last point enters
# the target's. Each end is matched to the nearest node box.
READ_GRAPH = r"""
() => {
  const nodes = [];
  for (const fo of document.querySelectorAll('svg foreignObject')) {
    if (fo.classList.contains('group')) continue;
    // Full nodes carry the name in a tooltip attribute; minimal ones (zoomed out) show it as
    // text, middle-truncated when long ("portfol…_selection").
    const label = fo.querySelector('[class*="assetName"]');
    if (!label) continue;
    const tip = label.querySelector('[data-tooltip]');
    const name = tip ? tip.getAttribute('data-tooltip') : label.textContent.trim();
    nodes.push({name, x: +fo.getAttribute('x'), y: +fo.getAttribute('y'),
                w: +fo.getAttribute('width'), h: +fo.getAttribute('height')});
  }
  const distance = (p, n) => Math.hypot(Math.max(n.x - p[0], 0, p[0] - n.x - n.w),
                                        Math.max(n.y - p[1], 0, p[1] - n.y - n.h));
  const nearest = (p) => nodes.reduce((best, n) => distance(p, n) < distance(p, best) ? n : best);
  const edges = [];
  if (!nodes.length) return {nodes: [], edges};
  for (const path of document.querySelectorAll('svg path[marker-end]')) {
    const xy = (path.getAttribute('d') || '').match(/-?\d+(\.\d+)?/g).map(Number);
    const from = nearest([xy[0], xy[1]]), to = nearest([xy[xy.length - 2], xy[xy.length - 1]]);
    edges.push([from.name, to.name]);
  }
  return {nodes: nodes.map((n) => n.name), edges};
}
"""


def _artifacts() -> Path:
    out = browser_artifacts()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    print(f"browser screenshots: {out}")
    return out


def _node(page, name: str):
    """The graph node of asset ``name`` (a full node: the viewport is wide enough)."""
    return page.locator(f'svg foreignObject:has([data-tooltip="{name}"])').first


def _full_name(label: str) -> str:
    """A minimal node's middle-truncated label back to the asset it names, if one fits."""
    if "…" not in label:
        return label
    head, tail = label.split("…", 1)
    fits = [a for a in DESIGN_ASSETS if a.startswith(head) and a.endswith(tail)]
    return fits[0] if len(fits) == 1 else label


def _graph_box(page, pad: float = 24) -> dict[str, float]:
    """The page area the graph's nodes and groups cover, padded (a screenshot clip)."""
    return page.evaluate(
        """(pad) => {
          const boxes = [...document.querySelectorAll('svg foreignObject')]
            .map((e) => e.getBoundingClientRect()).filter((r) => r.width > 1);
          const x = Math.min(...boxes.map((r) => r.left)) - pad;
          const y = Math.min(...boxes.map((r) => r.top)) - pad;
          const right = Math.max(...boxes.map((r) => r.right)) + pad;
          const bottom = Math.max(...boxes.map((r) => r.bottom)) + pad;
          return {x: Math.max(x, 0), y: Math.max(y, 0), width: right - Math.max(x, 0),
                  height: bottom - Math.max(y, 0)};
        }""",
        pad,
    )


def _read_graph(page, settle_s: float = 30.0) -> tuple[set[str], set[tuple[str, str]]]:
    """The graph once two reads a second apart agree (nodes and edges arrive in stages)."""
    last = None
    for _ in range(int(settle_s)):
        graph = page.evaluate(READ_GRAPH)
        current = (
            frozenset(_full_name(n) for n in graph["nodes"]),
            frozenset((_full_name(a), _full_name(b)) for a, b in graph["edges"]),
        )
        if current == last and current[0]:
            break
        last = current
        page.wait_for_timeout(1000)
    return set(current[0]), set(current[1])


def test_asset_graph_materialize_a_partition_and_lineage_in_chromium(
    data_dir: Path, synthetic_code_frame, tmp_path: Path
):
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: apt-get install -y chromium"
    from playwright.sync_api import expect, sync_playwright

    shots = _artifacts()
    book = small_book(synthetic_code_frame)
    for code in CODES:
        write_drop(book, data_dir / "raw", code)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("weekly_code", CODES)

    with running_ui(data_dir, {"HEDGE_SOURCE": "files"}) as ui, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 3000, "height": 1200},
        )
        browser.set_default_timeout(TIMEOUT_MS)
        page = browser.new_page()
        try:
            # 1. The lineage graph, both groups expanded: every asset and every edge of §1.
            page.goto(ui.url + GRAPH, wait_until="networkidle")
            nodes, edges = _read_graph(page)
            page.screenshot(path=shots / "01-asset-graph.png")
            assert nodes == set(DESIGN_ASSETS), f"graph shows {sorted(nodes)}"
            assert edges >= DESIGN_EDGES, f"missing edges: {sorted(DESIGN_EDGES - edges)}"

            # 2. Select the market-data assets in the graph and materialize one weekly code.
            _node(page, "raw_option_chains").click()
            _node(page, "greeks_features").click(modifiers=["Shift"])
            page.get_by_role("button", name=re.compile("Materialize selected")).click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text("Select a partition or create one").click()
            page.locator(f'label:has([title="{CODE}"])').click()
            dialog.get_by_text(re.compile("Launch runs to materialize")).click()  # close the menu
            page.screenshot(path=shots / "02-materialize-dialog.png")
            dialog.get_by_role("button", name="Launch 1 run").click()

            # 3. The run, from the Runs page (the only run of this instance), until it succeeds.
            expect(dialog).to_be_hidden()
            page.goto(ui.url + "/runs", wait_until="networkidle")
            run_link = page.locator('a[href^="/runs/"]').filter(
                has_text=re.compile(r"^[0-9a-f]{8}$")
            )
            expect(run_link).to_have_count(1)
            run_link.click()
            page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
            run_id = page.url.split("/runs/")[1].split("?")[0]
            outcome = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
            expect(outcome).to_be_visible(timeout=240_000)
            assert outcome.inner_text() == "Success"
            page.screenshot(path=shots / "03-run-success.png")

            # 4. The lineage of the ensemble, every upstream asset (the URL the Lineage tab's
            # "Upstream" and depth controls write, loaded so that the view fits the graph).
            page.goto(ui.url + LINEAGE, wait_until="networkidle")
            expect(page.get_by_role("button", name=re.compile(r"Upstream$"))).to_be_visible()
            lineage_nodes, _ = _read_graph(page)
            page.screenshot(path=shots / "04-hedge-ensemble-lineage.png")
            assert lineage_nodes == set(DESIGN_ASSETS), f"lineage shows {sorted(lineage_nodes)}"

            # 5. The graph again, now with the partition materialized, cropped to the graph
            # (the README's picture: docs/ui-asset-graph.png is a copy of it).
            page.goto(ui.url + GRAPH, wait_until="networkidle")
            _read_graph(page)
            page.screenshot(path=shots / "05-asset-graph-after-run.png", clip=_graph_box(page))
        except Exception:
            page.screenshot(path=shots / "failure.png")
            (shots / "failure.html").write_text(page.content())
            raise
        finally:
            browser.close()

    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == CODE
        materialized = {
            (r.asset_key.to_user_string(), r.partition_key)
            for key in ("raw_option_chains", "greeks_features")
            for r in instance.fetch_materializations(dg.AssetKey(key), limit=10).records
        }
        assert materialized == {("raw_option_chains", CODE), ("greeks_features", CODE)}
    assert ui.stopped_cleanly, "hedge ui did not stop on SIGTERM:\n" + ui.log_tail()
