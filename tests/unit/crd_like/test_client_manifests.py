"""Manifest loading: multi-document YAML, directories, stdin, all-or-nothing validation."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from codehub.crd_like.client.manifests import ManifestError, load_manifests

GOOD = """\
apiVersion: codehub.io/v1alpha1
kind: Workspace
metadata:
  name: {name}
spec:
  desired_state: {state}
"""


def _doc(name: str = "w1", state: str = "RUNNING") -> str:
    return GOOD.format(name=name, state=state)


def test_multi_document_file(tmp_path: Path) -> None:
    f = tmp_path / "ws.yaml"
    f.write_text(_doc("a") + "---\n" + _doc("b", "STANDBY") + "---\n")
    got = load_manifests([str(f)])
    assert [m.name for m in got] == ["a", "b"]
    assert got[1].obj["spec"]["desired_state"] == "STANDBY"
    assert got[0].namespace is None
    assert "document 1" in got[0].source


def test_one_bad_document_rejects_everything(tmp_path: Path) -> None:
    f = tmp_path / "ws.yaml"
    f.write_text(_doc("a") + "---\n" + _doc("b", "FLYING") + "---\n" + _doc("Bad_Name"))
    with pytest.raises(ManifestError) as err:
        load_manifests([str(f)])
    problems = err.value.problems
    assert len(problems) == 2
    assert "document 2" in problems[0]
    assert "spec.desired_state" in problems[0]
    assert "FLYING" in problems[0]
    assert "document 3" in problems[1]
    assert "metadata.name" in problems[1]


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("apiVersion: codehub.io/v1alpha1\nkind: [unclosed\n")
    with pytest.raises(ManifestError) as err:
        load_manifests([str(f)])
    assert "invalid YAML" in err.value.problems[0]
    assert "line" in err.value.problems[0]
    assert str(f) in err.value.problems[0]


def test_wrong_kind_and_api_version(tmp_path: Path) -> None:
    f = tmp_path / "pod.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
    with pytest.raises(ManifestError) as err:
        load_manifests([str(f)])
    text = " ".join(err.value.problems)
    assert "apiVersion" in text
    assert "kind" in text


def test_missing_api_version_is_reported(tmp_path: Path) -> None:
    f = tmp_path / "bare.yaml"
    f.write_text("metadata: {name: p}\n")
    with pytest.raises(ManifestError) as err:
        load_manifests([str(f)])
    assert any(p.endswith("must be 'codehub.io/v1alpha1'") for p in err.value.problems)


def test_scalar_document_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("just a string\n")
    with pytest.raises(ManifestError) as err:
        load_manifests([str(f)])
    assert "expected a mapping" in err.value.problems[0]


def test_directory_recursive_sorted_and_filtered(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.yaml").write_text(_doc("b"))
    (tmp_path / "a.yml").write_text(_doc("a"))
    (tmp_path / "sub" / "c.json").write_text(
        json.dumps(
            {"apiVersion": "codehub.io/v1alpha1", "kind": "Workspace", "metadata": {"name": "c"}}
        )
    )
    (tmp_path / "notes.txt").write_text("not a manifest")
    got = load_manifests([str(tmp_path)])
    assert [m.name for m in got] == ["a", "b", "c"]


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as err:
        load_manifests([str(tmp_path)])
    assert "no .yaml" in err.value.problems[0]


def test_stdin() -> None:
    got = load_manifests(["-"], stdin=io.StringIO(_doc("from-stdin")))
    assert [m.name for m in got] == ["from-stdin"]
    assert got[0].source.startswith("<stdin>")


def test_list_kind_is_expanded() -> None:
    text = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"apiVersion": "codehub.io/v1alpha1", "kind": "Workspace", "metadata": {"name": n}}
                for n in ("x", "y")
            ],
        }
    )
    got = load_manifests(["-"], stdin=io.StringIO(text))
    assert [m.name for m in got] == ["x", "y"]


def test_bad_json(tmp_path: Path) -> None:
    f = tmp_path / "w.json"
    f.write_text("{not json")
    with pytest.raises(ManifestError) as err:
        load_manifests([str(f)])
    assert "invalid JSON" in err.value.problems[0]


def test_missing_file_and_empty_input(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as err:
        load_manifests([str(tmp_path / "nope.yaml")])
    assert "no such file" in err.value.problems[0]
    with pytest.raises(ManifestError) as empty:
        load_manifests(["-"], stdin=io.StringIO("---\n"))
    assert "no objects" in empty.value.problems[0]


def test_duplicate_names_refused(tmp_path: Path) -> None:
    f = tmp_path / "dup.yaml"
    f.write_text(_doc("same") + "---\n" + _doc("same", "STANDBY"))
    with pytest.raises(ManifestError) as err:
        load_manifests([str(f)])
    assert "also defined" in err.value.problems[0]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("standby_ttl_seconds: -5", "spec.standby_ttl_seconds"),
        ("archive_ttl_seconds: soon", "spec.archive_ttl_seconds"),
        ("resources: {cpu: lots}", "spec.resources.cpu"),
        ("colour: blue", "spec.colour"),
        ('image_ref: ""', "spec.image_ref"),
    ],
)
def test_spec_field_errors_name_the_field(spec: str, field: str) -> None:
    text = "apiVersion: codehub.io/v1alpha1\nkind: Workspace\nmetadata: {name: w}\nspec:\n  " + spec
    with pytest.raises(ManifestError) as err:
        load_manifests(["-"], stdin=io.StringIO(text))
    assert err.value.problems[0].split(": ", 2)[1] == field


def test_too_long_name() -> None:
    text = GOOD.format(name="a" * 64, state="RUNNING")
    with pytest.raises(ManifestError) as err:
        load_manifests(["-"], stdin=io.StringIO(text))
    assert "metadata.name" in err.value.problems[0]
    assert "63" in err.value.problems[0]
