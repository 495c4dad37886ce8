"""What ``hedge models list`` and ``hedge models show`` print: the registry as a researcher
reads it, as JSON-ready documents and as aligned text.

The documents are the contract (``--json``); the text is rendered from them, so both always
say the same thing. Key metrics are the ``test_*`` metrics of each version's source run: the
held-out numbers a promotion is judged on, not the training curves.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from hedge_pipeline.registry import lineage
from hedge_pipeline.registry import versions as registry

KEY_METRIC_PREFIX = "test_"


def list_models(client: MlflowClient) -> list[dict[str, Any]]:
    """Every registered model: name, latest version, number of versions, aliases."""
    numbers: dict[str, list[int]] = defaultdict(list)
    for version in registry.every(client.search_model_versions):
        numbers[version.name].append(int(version.version))
    return [
        {
            "name": model.name,
            "latest_version": max(numbers[model.name], default=None),
            "versions": len(numbers[model.name]),
            "aliases": dict(sorted(model.aliases.items())),
        }
        for model in sorted(registry.every(client.search_registered_models), key=lambda m: m.name)
    ]


def model_versions(client: MlflowClient, name: str) -> dict[str, Any]:
    """All versions of ``name``, newest first, with their aliases, status and key metrics.

    Raises:
        UnknownModelVersionError: no registered model ``name``.
    """
    model = registry.registered_model(client, name)
    aliases: dict[int, list[str]] = defaultdict(list)
    for alias, number in sorted(model.aliases.items()):
        aliases[int(number)].append(alias)
    found = registry.every(client.search_model_versions, filter_string=f"name = '{name}'")
    versions = sorted(found, key=lambda v: int(v.version), reverse=True)
    return {
        "name": name,
        "aliases": dict(sorted(model.aliases.items())),
        "versions": [
            {
                **_summary(v, aliases[int(v.version)]),
                "metrics": {
                    k: value
                    for k, value in _run_metrics(client, v).items()
                    if k.startswith(KEY_METRIC_PREFIX)
                },
            }
            for v in versions
        ],
    }


def version_detail(client: MlflowClient, version: ModelVersion) -> dict[str, Any]:
    """One version: every tag, every metric of its source run, its direct upstream versions,
    the weekly codes and data versions below it, broken links, and the whole lineage tree."""
    tree = lineage.walk(client, version)
    return {
        **_summary(version, sorted(version.aliases)),
        "source": version.source,
        "tags": dict(sorted(version.tags.items())),
        "metrics": _run_metrics(client, version),
        "upstream": [
            {"tag": e.tag, "name": e.name, "version": e.version, "error": e.error}
            for e in tree.upstream
        ],
        "partitions": lineage.partitions(tree),
        "broken_links": lineage.broken_links(tree),
        "lineage": tree.to_dict(),
    }


def _summary(version: ModelVersion, aliases: list[str]) -> dict[str, Any]:
    created = datetime.fromtimestamp(version.creation_timestamp / 1000, tz=UTC)
    return {
        "name": version.name,
        "version": int(version.version),
        "aliases": aliases,
        "status": version.status,
        "created": created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "run_id": version.run_id,
    }


def _run_metrics(client: MlflowClient, version: ModelVersion) -> dict[str, float]:
    """The latest value of each metric of the version's source run, sorted by name."""
    if not version.run_id:
        return {}
    return dict(sorted(client.get_run(version.run_id).data.metrics.items()))


def render_list(models: list[dict[str, Any]], tracking_uri: str) -> str:
    if not models:
        return f"no registered models in {tracking_uri}; train some with: hedge run"
    rows = [
        (m["name"], m["latest_version"], m["versions"], aliases_text(m["aliases"])) for m in models
    ]
    return text_table(("name", "latest", "versions", "aliases"), rows)


def render_versions(doc: dict[str, Any]) -> str:
    versions = doc["versions"]
    header = f"{doc['name']}: {len(versions)} version(s); aliases: {aliases_text(doc['aliases'])}"
    table = text_table(
        ("version", "aliases", "status", "created", "run_id"),
        [
            (v["version"], ", ".join(v["aliases"]), v["status"], v["created"], v["run_id"])
            for v in versions
        ],
    )
    names = sorted({k for v in versions for k in v["metrics"]})
    if not names:
        metrics = f"no {KEY_METRIC_PREFIX}* metrics in the versions' source runs"
    else:
        metrics = f"{KEY_METRIC_PREFIX}* metrics of each version's source run\n" + text_table(
            ("metric", *(f"v{v['version']}" for v in versions)),
            [(k, *(v["metrics"].get(k) for v in versions)) for k in names],
        )
    return "\n\n".join([header, table, metrics])


def render_detail(doc: dict[str, Any]) -> str:
    aliases = f"  [{', '.join(doc['aliases'])}]" if doc["aliases"] else ""
    tags = [(k, v) for k, v in doc["tags"].items() if not k.startswith(lineage.UPSTREAM_PREFIX)]
    upstream = [
        (e["tag"], f"BROKEN: {e['error']}" if e["error"] else f"{e['name']} v{e['version']}")
        for e in doc["upstream"]
    ]
    codes = [
        (p["weekly_code"], p["data_version"], f"{p['model']} v{p['version']}")
        for p in doc["partitions"]
    ]
    sections = {
        "tags": text_table(("tag", "value"), tags),
        "metrics (source run)": text_table(("metric", "value"), doc["metrics"].items()),
        "upstream": text_table(("tag", "version"), upstream),
        "weekly codes": text_table(("weekly_code", "data_version", "model"), codes),
    }
    head = (
        f"{doc['name']} v{doc['version']}{aliases}  {doc['status']}  created {doc['created']}\n"
        f"run_id: {doc['run_id']}\nsource: {doc['source']}"
    )
    body = [f"{title}\n{indent(text)}" for title, text in sections.items()]
    return "\n\n".join([head, *body, "lineage\n" + lineage.render(doc["lineage"])])


def text_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned, missing values as ``-``.

    >>> print(text_table(("name", "v"), [("a", 1.5), ("bb", None)]))
    name    v
    a     1.5
    bb      -
    """
    rows = list(rows)
    if not rows:
        return "(none)"
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(str(c)), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(r[i], int | float) or r[i] is None for r in rows)
        for i in range(len(columns))
    ]
    lines = [columns, *cells]
    return "\n".join(
        "  ".join(
            str(cell).rjust(w) if right else str(cell).ljust(w)
            for cell, w, right in zip(line, widths, numeric, strict=True)
        ).rstrip()
        for line in lines
    )


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def aliases_text(aliases: Mapping[str, int]) -> str:
    return ", ".join(f"{a}=v{v}" for a, v in sorted(aliases.items())) or "-"


def indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
