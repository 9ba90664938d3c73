"""YAML specs: valid documents load; every mistake is one SpecError line naming file, field and line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from certify.errors import SpecError
from certify.io.yaml import load_spec, parse_spec
from certify.spec import KINDS, LocalRobustness, json_schema

SPECS = Path(__file__).resolve().parents[1] / "specs"


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_single_property_loads_with_defaults(tmp_path: Path) -> None:
    doc = load_spec(write(tmp_path, "kind: robustness\ninput: [0.5, 1]\neps: 0.1\n"))
    (prop,) = doc.properties
    assert isinstance(prop, LocalRobustness)
    assert prop.eps == 0.1 and prop.input == [0.5, 1.0]
    assert prop.label == "predicted" and prop.clip is None and prop.targets is None and prop.name is None
    assert doc.base_dir == tmp_path


def test_property_list_loads_in_order(tmp_path: Path) -> None:
    text = """
properties:
  - {kind: robustness, name: a, input: [[0, 1], [1, 0]], eps: 0.1, clip: [0, 1], label: 1}
  - kind: robustness
    name: b
    input: [0.0]
    eps: 2.0e-2
    targets: [2, 3]
"""
    doc = load_spec(write(tmp_path, text))
    assert [p.name for p in doc.properties] == ["a", "b"]
    assert doc.properties[0].clip == (0.0, 1.0) and doc.properties[0].label == 1
    assert doc.properties[1].eps == pytest.approx(0.02) and doc.properties[1].targets == [2, 3]


def test_npy_path_resolves_against_the_spec_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "x.npy", np.zeros(3))
    doc = load_spec(write(tmp_path, "kind: robustness\ninput: data/x.npy\neps: 0.1\n"))
    assert doc.properties[0].input == "data/x.npy"


def test_python_construction_defaults_the_kind() -> None:
    assert LocalRobustness(input=[0.0], eps=0.5).kind == "robustness"


BAD = {
    "wrong field": ("kind: robustness\ninput: [1]\neps: 0.1\nepsilon: 3\n",
                    ["spec.yaml: epsilon: unknown field", "allowed: name, kind, input, samples, eps", "line 4"]),
    "missing field": ("kind: robustness\ninput: [1]\n", ["spec.yaml: eps:", "missing"]),
    "eps zero": ("kind: robustness\ninput: [1]\neps: 0\n",
                 ["spec.yaml: eps: Input should be greater than 0 (line 3)"]),
    "eps negative in a list": ("properties:\n  - kind: robustness\n    input: [1]\n    eps: -0.5\n",
                               ["spec.yaml: properties[0].eps: Input should be greater than 0 (line 4)"]),
    "eps not a number": ("kind: robustness\ninput: [1]\neps: big\n", ["eps:", "valid number"]),
    "unknown kind": ("properties:\n  - kind: robustnes\n    input: [1]\n    eps: 1\n",
                     ["properties[0]: unknown kind 'robustnes'", f"known kinds: {', '.join(KINDS)}"]),
    "missing kind": ("input: [1]\neps: 1\n", ["missing field 'kind'", "robustness"]),
    "bad YAML": ("kind: robustness\ninput: [1, 2\neps: 0.1\n", ["spec.yaml: invalid YAML", "line 3"]),
    "bad indentation": ("kind: robustness\n  eps: 0.1\n input: 1\n", ["invalid YAML", "line 2"]),
    "duplicate key": ("kind: robustness\ninput: [1]\neps: 0.1\neps: 0.2\n",
                      ["duplicate key 'eps'", "line 4"]),
    "negative label": ("kind: robustness\ninput: [1]\neps: 1\nlabel: -1\n", ["label:", "'predicted'"]),
    "bool label": ("kind: robustness\ninput: [1]\neps: 1\nlabel: true\n", ["label:"]),
    "label among targets": ("kind: robustness\ninput: [1]\neps: 1\nlabel: 2\ntargets: [1, 2]\n",
                            ["targets: contains the label 2"]),
    "repeated targets": ("kind: robustness\ninput: [1]\neps: 1\ntargets: [1, 1]\n", ["targets:", "repeated"]),
    "clip reversed": ("kind: robustness\ninput: [1]\neps: 1\nclip: [1, 0]\n", ["clip:", "lo <= hi", "line 4"]),
    "clip of three": ("kind: robustness\ninput: [1]\neps: 1\nclip: [0, 1, 2]\n", ["clip"]),
    "ragged input": ("kind: robustness\ninput: [[1, 2], [3]]\neps: 1\n", ["input:", "rectangular"]),
    "non-numeric input": ("kind: robustness\ninput: [1, a]\neps: 1\n", ["input:", "numbers"]),
    "input not npy": ("kind: robustness\ninput: image.png\neps: 1\n", ["input:", ".npy"]),
    "missing npy": ("kind: robustness\ninput: nothere.npy\neps: 1\n", ["input: no such file", "line 2"]),
    "empty list": ("properties: []\n", ["properties:"]),
    "not a mapping": ("- 1\n- 2\n", ["expected one property", "found a list"]),
    "empty file": ("", ["found an empty file"]),
}


@pytest.mark.parametrize("text, expected", list(BAD.values()), ids=list(BAD))
def test_bad_spec_is_one_clear_line(tmp_path: Path, text: str, expected: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "spec.yaml"))
    for part in expected:
        assert part in message


def test_several_errors_are_reported_on_one_line() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec("kind: robustness\ninput: [1]\neps: 0\nlabel: x\nfoo: 1\nbar: 2\n", source="s.yaml")
    message = str(info.value)
    assert "\n" not in message and "eps:" in message and "label:" in message and "(+1 more)" in message


def test_unreadable_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "absent.yaml")


def test_schema_file_is_up_to_date() -> None:
    committed = json.loads((SPECS / "schema.json").read_text())
    assert committed == json_schema(), (
        "specs/schema.json is stale; regenerate it (see specs/README.md)"
    )


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.name)
def test_example_specs_load(path: Path) -> None:
    assert load_spec(path).properties
