"""What ``hedge models show`` prints by default: the verdict of each version, not its logbook.

A version's source run logs a few hundred metrics (every hedger and baseline on every split,
every measure), which ``--all`` still prints (``registry.catalog``). The default is what a
researcher asks first: which version this is, which stage made it, whether it is the champion
or a candidate and why, its headline numbers, and what it was built from:

* the model's own ES10 and criterion on each test split (replayed quotes, simulated paths) and
  on the validation replay where the stage logs one;
* the strongest baseline on the same split (the textbook hedge with the lowest ES10) and the
  model's difference from it, in percent (negative: the model loses less in the tail);
* the validation ES10, criterion and loss of training;
* the config hash and the parents (``upstream.*`` tags).

The metric names are the stages' (``<split>_<hedger>_<measure>``, e.g.
``test_replay_ensemble_es10``); a run logged under other names shows its ``test_*`` and
``val_*`` metrics instead when they are few.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from hedge_pipeline.hedging.rows import BASELINE_ROWS
from hedge_pipeline.registry import lineage
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.registry.catalog import aliases_text, indent, text_table

# The hedger row each training stage logs for its own model (tag ``dagster_asset``).
OWN_ROW = {
    "hedge_ensemble": "ensemble",
    "joint_model": "joint",
    "meta_controller": "meta_controller",
    "specialist_agents": "policy",
}
SPLITS = {
    "test_replay": "test, replay",
    "test_simulated": "test, simulated",
    "val_replay": "validation, replay",
}
# Measures of training runs on the validation set, by the name the trainer logs.
VALIDATION = {"val_es10": "validation ES10", "val_price": "validation criterion",
              "val_loss": "validation loss"}  # fmt: skip
# A stage without hedger rows (the CNN-LSTM): its test measures that have a baseline twin.
TWIN_MEASURES = ("mse_", "r2_")
FALLBACK_LIMIT = 12  # unrecognised metrics shown whole up to this many
VERSIONS_SHOWN = 5  # newest versions whose headline metrics are set side by side


@dataclass(frozen=True)
class VersionSummary:
    """One version as the concise view reads it: registry facts and its source run's numbers."""

    version: ModelVersion
    metrics: dict[str, float]
    params: dict[str, str]

    @property
    def number(self) -> int:
        return int(self.version.version)

    @property
    def aliases(self) -> list[str]:
        return sorted(self.version.aliases)

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.version.tags)

    @property
    def stage(self) -> str:
        return self.tags.get("dagster_asset", "-")

    @property
    def status(self) -> str:
        """``champion`` (it holds the alias); ``former champion`` (promoted once, replaced
        since); ``candidate`` (the newest version, or one the promotion gate refused); ``-``
        for the others (older versions, or the joint models an ensemble was built on)."""
        if registry.CHAMPION in self.aliases:
            return registry.CHAMPION
        promotion = self.tags.get("promotion")
        if promotion == "promoted":
            return "former champion"
        if promotion == registry.CANDIDATE or registry.CANDIDATE in self.aliases:
            return registry.CANDIDATE
        return "-"

    @property
    def created(self) -> str:
        when = datetime.fromtimestamp(self.version.creation_timestamp / 1000, tz=UTC)
        return when.isoformat(timespec="seconds").replace("+00:00", "Z")

    @property
    def parents(self) -> str:
        """The upstream versions as tagged, grouped by model (``hedge-joint v1, v2``); past two
        models only the first is named (a meta-controller has one parent per weekly code)."""
        grouped: dict[str, list[str]] = defaultdict(list)
        for _, name, version in lineage.upstream_tags(self.tags):
            grouped[name].append(f"v{version}")
        parts = [f"{name} {', '.join(versions)}" for name, versions in grouped.items()]
        if len(parts) > 2:
            return f"{len(parts)} models: {parts[0]}, …"
        return "; ".join(parts) or "-"


def summarize(client: MlflowClient, version: ModelVersion, rank: int = 0) -> VersionSummary:
    """The version with the latest value of each metric and the params of its source run.

    ``rank``: the version's place, newest first, in a listing; past ``VERSIONS_SHOWN`` its run
    is not read (a specialist retrained every night has hundreds of versions).
    """
    if not version.run_id or rank >= VERSIONS_SHOWN:
        return VersionSummary(version, {}, {})
    data = client.get_run(version.run_id).data
    return VersionSummary(version, dict(data.metrics), dict(data.params))


def headline(summary: VersionSummary) -> list[tuple[str, float | str | None]]:
    """``(label, value)`` of the headline metrics (module docstring), in reading order."""
    metrics, rows = summary.metrics, []
    own = OWN_ROW.get(summary.stage)
    split_rows = 0
    criterion = summary.params.get("criterion")
    for split, label in SPLITS.items():
        mine = metrics.get(f"{split}_{own}_es10") if own else None
        if mine is None:
            continue
        rows.append((f"{label}: ES10, {own}", mine))
        split_rows += 1
        price = metrics.get(f"{split}_{own}_price")
        if price is not None and price != mine:  # the criterion, unless it is ES10 itself
            rows.append((f"{label}: criterion {criterion or ''}, {own}", price))
        keys = {b: f"{split}_{b}_es10" for b in BASELINE_ROWS}
        present = {b: metrics[k] for b, k in keys.items() if k in metrics}
        if present:
            best = min(present, key=present.__getitem__)
            rows.append((f"{label}: ES10, strongest baseline", f"{present[best]:.6g} ({best})"))
            if present[best]:
                change = (mine - present[best]) / abs(present[best])
                rows.append((f"{label}: {own} vs {best}", f"{change:+.1%}"))
    seen: set[float] = set()
    for key, label in VALIDATION.items():  # the criterion or loss that repeats ES10 is left out
        if key in metrics and metrics[key] not in seen:
            rows.append((label, metrics[key]))
            seen.add(metrics[key])
    if own is None:
        for key in sorted(metrics):
            measure = key.removeprefix("test_")
            twin = f"test_baseline_{measure}"
            if key.startswith("test_") and measure.startswith(TWIN_MEASURES) and twin in metrics:
                rows += [(key, metrics[key]), (twin, metrics[twin])]
                split_rows += 1
    if split_rows:
        return rows
    # Names no stage of this package logs: the held-out numbers as they are, when few.
    held_out = sorted(k for k in metrics if k.startswith(("test_", "val_")))
    if len(held_out) <= FALLBACK_LIMIT:
        return [(key, metrics[key]) for key in held_out]
    return rows


def render_versions(name: str, summaries: Sequence[VersionSummary], aliases: Mapping) -> str:
    """``hedge models show NAME``: one row per version, then the newest versions' headline
    metrics side by side (``summaries`` newest first)."""
    stages = sorted({s.stage for s in summaries})
    head = (
        f"{name}: {len(summaries)} version(s); aliases: {aliases_text(aliases)}; "
        f"stage: {', '.join(stages) or '-'}"
    )
    versions = text_table(
        ("version", "aliases", "status", "created", "config_hash", "parents"),
        [
            (
                s.number, ", ".join(s.aliases) or "-", s.status, s.created,
                s.tags.get("config_hash", "-"), s.parents,
            )
            for s in summaries
        ],
    )  # fmt: skip
    shown = list(summaries[:VERSIONS_SHOWN])
    by_version = [dict(headline(s)) for s in shown]
    labels = list(dict.fromkeys(label for rows in by_version for label in rows))
    parts = [head, versions]
    if labels:
        title = _headline_title(labels)
        if len(summaries) > len(shown):
            title += f"; the newest {len(shown)} versions"
        parts.append(
            title
            + "\n"
            + text_table(
                ("metric", *(f"v{s.number}" for s in shown)),
                [(label, *(rows.get(label) for rows in by_version)) for label in labels],
            )
        )
    else:
        parts.append("no headline metrics in the versions' source runs")
    reasons = [
        f"v{s.number}: {s.tags['promotion_reason']}" for s in shown if "promotion_reason" in s.tags
    ]
    if reasons:
        parts.append("promotion\n" + "\n".join(f"  {r}" for r in reasons))
    parts.append(f"every metric of every version: hedge models show {name} --all")
    return "\n\n".join(parts)


def render_detail(summary: VersionSummary, doc: Mapping, ref: str) -> str:
    """``hedge models show NAME@alias|NAME:version``: the version's identity and verdict, its
    headline metrics and the weekly codes below it (``doc``: ``registry.catalog.version_detail``).

    The lineage tree stays with ``--all``: an ensemble's runs to some forty lines (each joint
    model repeats the meta-controller's subtree), more than the rest together, and the parents
    line and the weekly codes already say what it was built on.
    """
    tags = summary.tags
    aliases = f"  [{', '.join(summary.aliases)}]" if summary.aliases else ""
    status = summary.status
    if "promotion_reason" in tags:
        status += f": {tags['promotion_reason']}"
    facts = [
        ("stage", summary.stage),
        ("status", status),
        ("criterion", summary.params.get("criterion", "-")),
        ("config_hash", tags.get("config_hash", "-")),
        ("data_version", tags.get("data_version", "-")),
        ("code_version", tags.get("code_version", "-")),
        ("run_id", f"{summary.version.run_id}  (dagster run {tags.get('dagster_run_id', '-')})"),
        ("parents", _parents(doc["upstream"])),
    ]
    if "weekly_code" in tags:
        facts.insert(1, ("weekly_code", tags["weekly_code"]))
    width = max(len(key) for key, _ in facts)
    head = f"{summary.version.name} v{summary.number}{aliases}  created {summary.created}\n" + (
        "\n".join(f"{key.ljust(width)}  {value}" for key, value in facts)
    )
    rows = headline(summary)
    metrics = text_table(("metric", "value"), rows) if rows else "(none recognised)"
    codes = [
        (p["weekly_code"], p["data_version"], f"{p['model']} v{p['version']}")
        for p in doc["partitions"]
    ]
    sections = [
        head,
        _headline_title([label for label, _ in rows]) + "\n" + indent(metrics),
        "weekly codes\n" + indent(text_table(("weekly_code", "data_version", "model"), codes)),
        f"the lineage tree, {len(doc['tags'])} tags and {len(doc['metrics'])} metrics: "
        f"hedge models show {ref} --all",
    ]
    return "\n\n".join(sections)


def _parents(upstream: Iterable[Mapping]) -> str:
    """The resolved ``upstream`` edges grouped by model (``hedge-joint v1, v2``), and each
    broken one as ``BROKEN <tag>=<value>`` (stderr says why)."""
    grouped: dict[str, list[str]] = defaultdict(list)
    broken = []
    for edge in upstream:
        if edge["error"]:
            broken.append(f"BROKEN {edge['tag']}={edge['version']}")
        else:
            grouped[edge["name"]].append(f"v{edge['version']}")
    parts = [f"{name} {', '.join(versions)}" for name, versions in grouped.items()]
    return "; ".join(parts + broken) or "-"


def _headline_title(labels: Iterable[str]) -> str:
    if any("ES10" in label for label in labels):
        return "headline metrics (ES10: mean loss of the worst 10 % of windows; lower is better)"
    return "headline metrics"
