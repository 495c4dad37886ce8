"""Resolving references and walking lineage on a real MLflow sqlite registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from hedge_pipeline.registry import lineage
from hedge_pipeline.registry.lineage import ModelRef, ReferenceSyntaxError
from hedge_pipeline.registry.versions import UnknownModelVersionError
from hedge_pipeline_tests.registry_builder import (
    CNN_LSTM,
    CODES,
    ENSEMBLE,
    JOINT,
    META,
    SyntheticLineage,
    build_lineage,
    data_version,
    register,
    specialist,
)


@pytest.fixture
def built(mlflow_client: MlflowClient, tmp_path: Path) -> SyntheticLineage:
    return build_lineage(mlflow_client, tmp_path / "work")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hedge-ensemble", ModelRef("hedge-ensemble")),
        ("hedge-ensemble@champion", ModelRef("hedge-ensemble", alias="champion")),
        ("hedge-specialist-SPY-2026-11-27:12", ModelRef("hedge-specialist-SPY-2026-11-27", 12)),
        (" hedge-joint:3 ", ModelRef("hedge-joint", 3)),
    ],
)
def test_references_parse_and_print_back(text, expected):
    assert ModelRef.parse(text) == expected
    assert ModelRef.parse(str(expected)) == expected


@pytest.mark.parametrize("text", ["", "@champion", "hedge-joint@", "hedge-joint:v3", "a:1@b"])
def test_malformed_references_are_refused_with_the_accepted_forms(text):
    with pytest.raises(ReferenceSyntaxError, match="NAME, NAME@alias or NAME:version"):
        ModelRef.parse(text)


def test_full_lineage_walk_reaches_every_partition_and_data_version(mlflow_client, built):
    tree = lineage.walk(mlflow_client, f"{ENSEMBLE}@champion")

    assert (tree.name, tree.version) == (ENSEMBLE, int(built.ensemble.version))
    assert "champion" in tree.aliases and tree.tags["data_version"]
    assert [e.tag for e in tree.upstream] == [f"upstream.{JOINT}/0", f"upstream.{JOINT}/1"]
    assert [e.node.version for e in tree.upstream] == [int(j.version) for j in built.joints]
    for joint in tree.upstream:
        assert [e.tag for e in joint.node.upstream] == [f"upstream.{META}"]
        meta = joint.node.upstream[0].node
        assert (meta.name, meta.version) == (META, int(built.meta.version))
        by_code = {e.node.tags["weekly_code"]: e.node for e in meta.upstream}
        assert set(by_code) == set(CODES)
        for code, node in by_code.items():
            assert (node.name, node.version) == (specialist(code), 1)
            assert node.tags["data_version"] == data_version(code)
            cnn = node.upstream[0].node
            assert (
                (cnn.name, cnn.version) == (CNN_LSTM, int(built.cnn_lstm.version)) == (CNN_LSTM, 2)
            )
            assert cnn.upstream == []
    assert lineage.broken_links(tree) == []
    assert [(p["weekly_code"], p["data_version"]) for p in lineage.partitions(tree)] == [
        (c, data_version(c)) for c in CODES
    ]


def test_a_version_reached_from_several_parents_is_fetched_once(mlflow_client, built):
    tree = lineage.walk(mlflow_client, f"{ENSEMBLE}@champion")
    metas = [joint.node.upstream[0].node for joint in tree.upstream]
    assert metas[0] is metas[1]
    cnns = {id(e.node.upstream[0].node) for e in metas[0].upstream}
    assert len(cnns) == 1
    # ...and still written out in full under every parent.
    as_dict = tree.to_dict()
    assert as_dict["upstream"][0]["upstream"] == as_dict["upstream"][1]["upstream"]
    assert as_dict["upstream"][1]["upstream"][0]["upstream"][2]["tags"]["weekly_code"] == CODES[2]


def test_rendered_tree_shows_every_version_indented_under_its_parent(mlflow_client, built):
    text = lineage.render(
        lineage.walk(mlflow_client, f"{ENSEMBLE}:{built.ensemble.version}").to_dict()
    )
    lines = text.splitlines()
    assert lines[0].startswith(f"{ENSEMBLE} v{built.ensemble.version}  [candidate, champion]")
    assert lines[1].startswith(f"├── {JOINT} v{built.joints[0].version}")
    assert lines[2].startswith(f"│   └── {META} v{built.meta.version}  [candidate]")
    assert lines[3].startswith(f"│       ├── {specialist(CODES[0])} v1  weekly_code={CODES[0]}")
    assert f"data={data_version(CODES[0])[:12]}" in lines[3]
    assert lines[4].startswith(f"│       │   └── {CNN_LSTM} v2  [candidate]")
    assert sum(f"── {CNN_LSTM} v2" in line for line in lines) == 2 * len(CODES)
    assert len(lines) == 1 + 2 * (1 + 1 + 2 * len(CODES))


def test_several_versions_of_one_model_are_ordered_by_index(mlflow_client, tmp_path):
    base = register(mlflow_client, tmp_path, CNN_LSTM)
    tags = {f"upstream.{CNN_LSTM}/{k}": str(base.version) for k in (10, 2, 0)}
    top = register(mlflow_client, tmp_path, ENSEMBLE, {**tags, f"upstream.{CNN_LSTM}": "1"})
    tree = lineage.walk(mlflow_client, f"{ENSEMBLE}:{top.version}")
    assert [e.tag for e in tree.upstream] == [
        f"upstream.{CNN_LSTM}",
        f"upstream.{CNN_LSTM}/0",
        f"upstream.{CNN_LSTM}/2",
        f"upstream.{CNN_LSTM}/10",
    ]


def test_broken_upstream_link_names_the_version_and_the_tag(mlflow_client, built, tmp_path):
    broken = register(mlflow_client, tmp_path, JOINT, {f"upstream.{META}": "9"})
    top = register(
        mlflow_client,
        tmp_path,
        ENSEMBLE,
        {
            f"upstream.{JOINT}/0": str(built.joints[0].version),
            f"upstream.{JOINT}/1": str(broken.version),
        },
    )
    tree = lineage.walk(mlflow_client, f"{ENSEMBLE}:{top.version}")

    good, bad = (e.node for e in tree.upstream)
    assert good.upstream[0].node.name == META  # the rest of the tree is still there
    edge = bad.upstream[0]
    assert edge.node is None and edge.tag == f"upstream.{META}" and edge.version == "9"
    assert lineage.broken_links(tree) == [
        f"{JOINT} v{broken.version}: tag upstream.{META}=9: {META} has no version or alias '9'; "
        f"versions: {built.meta.version}; aliases: candidate=v{built.meta.version}"
    ]
    assert "error" in tree.to_dict()["upstream"][1]["upstream"][0]
    assert f"└── BROKEN upstream.{META}=9: {META} has no version" in lineage.render(tree.to_dict())


def test_links_to_unknown_models_values_that_are_not_versions_and_cycles_are_broken(
    mlflow_client, tmp_path
):
    top = register(
        mlflow_client,
        tmp_path,
        JOINT,
        {"upstream.hedge-nothing": "1", f"upstream.{CNN_LSTM}": "latest"},
    )
    mlflow_client.set_model_version_tag(JOINT, top.version, f"upstream.{JOINT}", str(top.version))
    messages = lineage.broken_links(lineage.walk(mlflow_client, JOINT))
    assert messages == [
        f"{JOINT} v1: tag upstream.{CNN_LSTM}=latest: not a version number",
        f"{JOINT} v1: tag upstream.{JOINT}=1: cycle: {JOINT} v1 is its own upstream",
        f"{JOINT} v1: tag upstream.hedge-nothing=1: no registered model 'hedge-nothing'; "
        f"registered models: {JOINT}",
    ]


def test_references_resolve_by_alias_by_version_and_to_the_latest(mlflow_client, built):
    champion = lineage.resolve(mlflow_client, f"{ENSEMBLE}@champion")
    assert champion.version == built.ensemble.version == 2
    assert lineage.resolve(mlflow_client, f"{ENSEMBLE}:1").version == 1
    assert lineage.resolve(mlflow_client, specialist(CODES[0])).version == 2  # bare name: latest
    assert lineage.resolve(mlflow_client, f"{specialist(CODES[0])}@candidate").version == 2
    assert lineage.resolve(mlflow_client, f"{ENSEMBLE}@latest").version == 2  # MLflow's own alias


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (
            "hedge-nope@champion",
            f"no registered model 'hedge-nope'; registered models: {CNN_LSTM}, {ENSEMBLE}, ",
        ),
        (f"{ENSEMBLE}:7", f"{ENSEMBLE} has no version or alias '7'; versions: 1, 2; aliases: "),
        (
            f"{JOINT}@champion",
            f"{JOINT} has no version or alias 'champion'; versions: 1, 2, 3; aliases: candidate=v3",
        ),
    ],
)
def test_unknown_references_list_what_exists(mlflow_client, built, ref, message):
    with pytest.raises(UnknownModelVersionError) as caught:
        lineage.resolve(mlflow_client, ref)
    assert str(caught.value).startswith(message)


def test_a_model_without_versions_says_so(mlflow_client, data_dir):
    mlflow_client.create_registered_model("hedge-empty")
    with pytest.raises(
        UnknownModelVersionError, match="hedge-empty has no versions; versions: none"
    ):
        lineage.resolve(mlflow_client, "hedge-empty")
