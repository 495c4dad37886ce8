"""Which models, and which data, a registered model version was built on (docs/design.md §1, §8).

Every training stage tags the version it registers with the versions it was built on:
``upstream.<registered model>=<version>``, or ``upstream.<registered model>/<k>=<version>`` when
it was built on several versions of one model (the ensemble's joint models, one per seed).
``/`` because MLflow refuses it in model names, so the index can never be mistaken for part
of a name, while tag keys allow it (they refuse ``#``).
Following those tags from ``hedge-ensemble`` down reaches the joint models, the
meta-controller, one specialist per weekly code and the CNN-LSTM; the specialists' ``weekly_code``
and ``data_version`` tags name the partitions and the exact data they were trained on.

Pure registry code: an ``MlflowClient`` in, plain data out; nothing is downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from hedge_pipeline.registry import versions as registry

UPSTREAM_PREFIX = "upstream."
INDEX_SEPARATOR = "/"  # upstream.<name>/<k>
# The tags of docs/design.md §8 that say where a version came from (the others are stage-specific).
LINEAGE_TAGS = (
    "weekly_code",
    "data_version",
    "dagster_run_id",
    "dagster_asset",
    "code_version",
    "config_hash",
    "weights_sha256",
)
_REF = re.compile(r"^(?P<name>[^@:]+)(?:@(?P<alias>[^@:]+)|:(?P<version>\d+))?$")


class ReferenceSyntaxError(ValueError):
    """A model reference that is not ``NAME``, ``NAME@alias`` or ``NAME:version``."""


@dataclass(frozen=True)
class ModelRef:
    """A registered model and, optionally, one version of it by number or by alias."""

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        match = _REF.match(text.strip())
        if not match:
            raise ReferenceSyntaxError(
                f"invalid model reference {text!r}: expected NAME, NAME@alias or NAME:version"
            )
        version = match["version"]
        return cls(match["name"], int(version) if version else None, match["alias"])

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        return f"{self.name}@{self.alias}" if self.alias else self.name


def resolve(client: MlflowClient, ref: str | ModelRef) -> ModelVersion:
    """The version a reference names; a bare ``NAME`` means its latest (highest) version.

    Raises:
        ReferenceSyntaxError: ``ref`` is not a model reference.
        UnknownModelVersionError: no such model, version or alias; the message lists what the
            registry holds instead.
    """
    ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
    return registry.find_version(client, ref.name, ref.version, ref.alias)


@dataclass
class LineageNode:
    """One registered model version and the versions its ``upstream.*`` tags point to."""

    name: str
    version: int
    aliases: list[str]
    tags: dict[str, str]  # the LINEAGE_TAGS the version carries
    run_id: str | None
    upstream: list[Upstream] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, shared subtrees written out in full under every parent."""
        return {
            "name": self.name,
            "version": self.version,
            "aliases": self.aliases,
            "tags": self.tags,
            "run_id": self.run_id,
            "upstream": [edge.to_dict() for edge in self.upstream],
        }


@dataclass(frozen=True)
class Upstream:
    """One ``upstream.*`` tag: the node it resolves to, or why it does not (a broken link)."""

    tag: str  # the tag's key, e.g. ``upstream.hedge-joint/1``
    name: str
    version: str  # the tag's value as written
    node: LineageNode | None
    error: str | None = None  # why the link is broken

    def to_dict(self) -> dict[str, object]:
        if self.node is not None:
            return {"tag": self.tag, **self.node.to_dict()}
        return {"tag": self.tag, "name": self.name, "version": self.version, "error": self.error}


def upstream_tags(tags: dict[str, str]) -> list[tuple[str, str, str]]:
    """``(tag, model name, version as written)`` for each ``upstream.*`` tag, ordered by model
    then by the ``/k`` index (numerically, so ``/10`` comes after ``/2``)."""
    edges = []
    for key, value in tags.items():
        if not key.startswith(UPSTREAM_PREFIX):
            continue
        name, _, index = key.removeprefix(UPSTREAM_PREFIX).rpartition(INDEX_SEPARATOR)
        if not (name and index.isdigit()):
            name, index = key.removeprefix(UPSTREAM_PREFIX), "-1"
        edges.append(((name, int(index)), (key, name, value)))
    return [edge for _, edge in sorted(edges)]


def walk(client: MlflowClient, ref: str | ModelRef | ModelVersion) -> LineageNode:
    """The lineage tree of a version, following ``upstream.*`` tags down to the roots.

    The registry holds a DAG (every specialist was built on the same CNN-LSTM, every joint
    model on the same meta-controller): each version is fetched once and its node shared by
    every parent. Links that do not resolve (a version or model that does not exist, a value
    that is not a version number, a cycle) are kept as ``Upstream`` edges with ``error`` set
    rather than raised, so the rest of the tree stays readable; ``broken_links`` lists them.

    Raises:
        UnknownModelVersionError, ReferenceSyntaxError: the starting reference does not resolve.
    """
    root = ref if isinstance(ref, ModelVersion) else resolve(client, ref)
    done: dict[tuple[str, int], LineageNode] = {}
    in_progress: set[tuple[str, int]] = set()

    def build(version: ModelVersion) -> LineageNode:
        key = (version.name, int(version.version))
        node = LineageNode(
            name=version.name,
            version=int(version.version),
            aliases=sorted(version.aliases),
            tags={k: version.tags[k] for k in LINEAGE_TAGS if k in version.tags},
            run_id=version.run_id,
        )
        in_progress.add(key)
        for tag, name, value in upstream_tags(version.tags):
            node.upstream.append(link(tag, name, value))
        in_progress.discard(key)
        done[key] = node
        return node

    def link(tag: str, name: str, value: str) -> Upstream:
        if not value.strip().isdigit():
            return Upstream(tag, name, value, None, "not a version number")
        key = (name, int(value))
        if key in in_progress:
            return Upstream(tag, name, value, None, f"cycle: {name} v{key[1]} is its own upstream")
        if key in done:
            return Upstream(tag, name, value, done[key])
        try:
            return Upstream(tag, name, value, build(resolve(client, ModelRef(*key))))
        except registry.UnknownModelVersionError as exc:
            return Upstream(tag, name, value, None, str(exc))

    return build(root)


def edges(node: LineageNode) -> Iterator[tuple[LineageNode, Upstream]]:
    """Every ``(parent, edge)`` below ``node``, depth first."""
    for edge in node.upstream:
        yield node, edge
        if edge.node is not None:
            yield from edges(edge.node)


def broken_links(node: LineageNode) -> list[str]:
    """One message per broken link below ``node``, naming the version and the tag (each once,
    however often a shared version is reached)."""
    messages = (
        f"{parent.label}: tag {edge.tag}={edge.version}: {edge.error}"
        for parent, edge in edges(node)
        if edge.error
    )
    return list(dict.fromkeys(messages))


def partitions(node: LineageNode) -> list[dict[str, object]]:
    """The weekly codes the tree was trained on: code, data version, and the model version
    that carries them; one entry per distinct (code, data version, model version)."""
    nodes = [node, *(edge.node for _, edge in edges(node) if edge.node is not None)]
    found = {
        (n.tags["weekly_code"], n.tags.get("data_version", ""), n.name, n.version)
        for n in nodes
        if "weekly_code" in n.tags
    }
    keys = ("weekly_code", "data_version", "model", "version")
    return [dict(zip(keys, entry, strict=True)) for entry in sorted(found)]


def render(tree: dict[str, Any]) -> str:
    """A lineage tree as indented text, one version per line, broken links marked ``BROKEN``.

    Takes the JSON form (``LineageNode.to_dict``) so that a command prints its text and its
    ``--json`` from one document.
    """
    lines = [_describe(tree)]

    def draw(node: dict[str, Any], prefix: str) -> None:
        for i, edge in enumerate(node["upstream"]):
            last = i == len(node["upstream"]) - 1
            branch, extension = ("└── ", "    ") if last else ("├── ", "│   ")
            if "error" in edge:
                lines.append(
                    f"{prefix}{branch}BROKEN {edge['tag']}={edge['version']}: {edge['error']}"
                )
                continue
            lines.append(f"{prefix}{branch}{_describe(edge)}")
            draw(edge, prefix + extension)

    draw(tree, "")
    return "\n".join(lines)


def _describe(node: dict[str, Any]) -> str:
    parts = [f"{node['name']} v{node['version']}"]
    if node["aliases"]:
        parts.append(f"[{', '.join(node['aliases'])}]")
    tags = node["tags"]
    if "weekly_code" in tags:
        parts.append(f"weekly_code={tags['weekly_code']}")
    if "data_version" in tags:
        parts.append(f"data={tags['data_version'][:12]}")
    return "  ".join(parts)
