"""No import cycle among the modules of ``hedge_pipeline``, function-level imports included.

Every module under ``hedge_pipeline/`` is parsed with :mod:`ast` (nothing is imported), and every
``import`` / ``from … import`` statement anywhere in the file counts: at module level, inside
functions and methods, and inside ``if TYPE_CHECKING:`` blocks. A deferred import only postpones
the cycle to the first call, and a ``TYPE_CHECKING`` import is still a dependency of the design
(type checkers and readers follow it), so neither is an excuse for one.

Edges of the module graph:

- ``import a.b.c`` → the longest prefix of ``a.b.c`` that is a module of the package;
- ``from a.b import c`` → ``a.b.c`` when that is a module (or package), else ``a.b`` (``c`` is an
  attribute of ``a.b``);
- a package is its ``__init__.py``, so importing a package (or a name from it) is an edge to it;
- relative imports are resolved against the importing module's package;
- the parent packages that Python initialises on the way to a submodule are *not* edges: they are
  already initialising whenever a module inside them runs, so they cannot close a cycle on their
  own. A module importing a *name* from its own package's ``__init__`` is an edge like any other.

A strongly connected component with more than one module is a cycle; the failure message prints
one concrete loop through it, with the file and line of every import on the loop.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Mapping
from itertools import pairwise
from pathlib import Path

PACKAGE = "hedge_pipeline"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE

# (target module, line) per importing module; the line is the first import of that target.
Graph = Mapping[str, Mapping[str, int]]


def module_files(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` under the package (packages as themselves)."""
    modules: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: Iterable[str]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package, or None."""
    known = set(modules)
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names one import statement asks for (``from a import b`` gives ``a.b``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    return [f"{base}.{alias.name}" if alias.name != "*" else base for alias in node.names]


def import_graph(modules: Mapping[str, Path]) -> dict[str, dict[str, int]]:
    """Module → {imported module of the package: line of its first import}."""
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _imported_names(node, module, is_package):
                if name.split(".")[0] != PACKAGE:
                    continue
                target = _resolve(name, modules)
                if target is None or target == module:
                    continue
                edges = graph[module]
                edges[target] = min(edges.get(target, node.lineno), node.lineno)
    return graph


def strongly_connected_components(graph: Graph) -> list[list[str]]:
    """Tarjan's algorithm, iterative; each component sorted, components in discovery order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def cycles(graph: Graph) -> list[list[str]]:
    """The components with more than one module (a self-import is not counted)."""
    return [c for c in strongly_connected_components(graph) if len(c) > 1]


def one_loop(graph: Graph, component: list[str]) -> list[str]:
    """A shortest loop from the component's first module back to itself, inside the component."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in sorted(graph[node]):
            if succ not in members:
                continue
            if succ == start:
                loop = [node]
                while loop[-1] != start:
                    loop.append(previous[loop[-1]])
                return [*reversed(loop), start]
            if succ not in previous:
                previous[succ] = node
                queue.append(succ)
    raise AssertionError(f"no loop through {start} in {component}")  # not an SCC


def describe(
    graph: Graph, component: list[str], modules: Mapping[str, Path], root: Path = PACKAGE_DIR.parent
) -> str:
    loop = one_loop(graph, component)
    lines = [f"cycle among {len(component)} modules: {', '.join(component)}", "  one loop:"]
    for src, dst in pairwise(loop):
        where = modules[src].relative_to(root)
        lines.append(f"    {src}  imports  {dst}   ({where}:{graph[src][dst]})")
    return "\n".join(lines)


# --- the cycle finder on synthetic graphs: the real test below cannot pass vacuously ---


def test_cycle_finder_finds_a_three_module_loop_and_ignores_a_dag():
    graph = {
        "a": {"b": 1},
        "b": {"c": 2},
        "c": {"a": 3, "d": 4},
        "d": {"e": 5},
        "e": {},
        "f": {"d": 6, "f": 7},  # a self-import is not a cycle
    }
    assert cycles(graph) == [["a", "b", "c"]]
    assert one_loop(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert (
        cycles({k: {n: v for n, v in e.items() if (k, n) != ("c", "a")} for k, e in graph.items()})
        == []
    )


def test_cycle_finder_reports_two_separate_cycles():
    graph = {"x": {"y": 1}, "y": {"x": 1}, "p": {"q": 1}, "q": {"r": 1}, "r": {"p": 1, "x": 1}}
    assert sorted(cycles(graph)) == [["p", "q", "r"], ["x", "y"]]


def test_import_graph_reads_function_level_relative_and_attribute_imports(tmp_path: Path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .leaf import VALUE\n")
    (pkg / "sub" / "leaf.py").write_text("VALUE = 1\n")
    (pkg / "top.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from hedge_pipeline.sub import leaf\n"
        "def f():\n"
        "    from hedge_pipeline.other import helper\n"
        "    return helper\n"
    )
    (pkg / "other.py").write_text(
        "import hedge_pipeline.top\nfrom hedge_pipeline.sub import VALUE\n"
    )
    modules = module_files(pkg)
    graph = import_graph(modules)
    assert graph["hedge_pipeline.sub"] == {"hedge_pipeline.sub.leaf": 1}  # relative, in __init__
    assert graph["hedge_pipeline.top"] == {"hedge_pipeline.sub.leaf": 3, "hedge_pipeline.other": 5}
    # `VALUE` is an attribute of the package `sub`, so the edge goes to its __init__.
    assert graph["hedge_pipeline.other"] == {"hedge_pipeline.top": 1, "hedge_pipeline.sub": 2}
    assert cycles(graph) == [["hedge_pipeline.other", "hedge_pipeline.top"]]
    message = describe(graph, cycles(graph)[0], modules, root=tmp_path)
    assert (
        "hedge_pipeline.top  imports  hedge_pipeline.other   (hedge_pipeline/top.py:5)" in message
    )


# --- the real package ---


def test_the_package_has_modules_and_imports():
    modules = module_files()
    graph = import_graph(modules)
    assert len(modules) > 50
    assert sum(len(edges) for edges in graph.values()) > 100


def test_no_import_cycle_in_hedge_pipeline():
    modules = module_files()
    graph = import_graph(modules)
    found = cycles(graph)
    assert not found, "import cycles in hedge_pipeline:\n" + "\n".join(
        describe(graph, component, modules) for component in found
    )


# The shared libraries sit below the stages: a stage may import them, never the reverse.
# (``orchestration``, ``cli``, ``bench``, ``training`` and ``definitions`` compose the stages.)
LIBRARIES = ("quant", "hedging", "harness", "registry", "runtime", "tables")


def test_shared_libraries_do_not_import_a_stage():
    graph = import_graph(module_files())
    wrong = [
        f"{module} imports {target} (line {line})"
        for module, edges in sorted(graph.items())
        if module.removeprefix(f"{PACKAGE}.").split(".")[0] in LIBRARIES
        for target, line in sorted(edges.items())
        if target.startswith(f"{PACKAGE}.stages")
    ]
    assert not wrong, "a shared library depends on a stage:\n" + "\n".join(wrong)
