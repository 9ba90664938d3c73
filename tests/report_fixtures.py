"""Result records for the report tests, written in code (no verification needed to make them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

EVIL = '<script>alert("pwned")</script>'


def image_check(model: str, spec: str, name: str, side: int = 8, nested: bool = False) -> dict[str, Any]:
    """A violated robustness result on a side x side image (as ``certify check --json`` writes)."""
    rng = np.random.default_rng(0)
    x0 = rng.uniform(0, 1, side * side)
    delta = rng.uniform(-0.1, 0.1, side * side)
    x = np.clip(x0 + delta, 0, 1)
    shape = (1, 1, side, side) if nested else (1, side * side)
    return {
        "model": model, "spec": spec, "certify_version": "0.1.0", "status": "violated", "seconds": 1.5,
        "engine": "fuzz", "reason": "",
        "counterexample": {"x": x.tolist(), "y": [0.1, 0.9, -0.3], "replayed": True},
        "lifted": {"input": x.reshape(shape).tolist(), "perturbation": (x - x0).reshape(shape).tolist(),
                   "linf": float(np.max(np.abs(x - x0))), "label": 0, "predicted": 1},
        "instances": [{"name": name, "status": "violated", "engine": "fuzz", "seconds": 1.5, "reason": ""}],
    }


def tabular_check(model: str, spec: str) -> dict[str, Any]:
    """A violated result on a 5-input (tabular) model, without a lifted counterexample."""
    return {
        "model": model, "spec": spec, "certify_version": "0.1.0", "status": "violated", "seconds": 0.25,
        "engine": "bab", "reason": "",
        "counterexample": {"x": [0.6, -0.5, 0.1, 0.45, -0.45], "y": [1.0, 2.0, 3.0, 4.0, 5.0], "replayed": True},
        "lifted": None,
        "instances": [{"name": "prop_2", "status": "violated", "engine": "bab", "seconds": 0.25, "reason": ""}],
    }


def holds_check(model: str, spec: str) -> dict[str, Any]:
    """A two-instance HOLDS result whose instances carry certified disjunct margins."""
    return {
        "model": model, "spec": spec, "certify_version": "0.1.0", "status": "holds", "seconds": 3.0,
        "engine": "crown+lp", "reason": "", "counterexample": None, "lifted": None,
        "instances": [
            {"name": "eps 0.01", "status": "holds", "engine": "crown", "seconds": 1.0, "reason": "",
             "certificate": {"method": "crown", "disjunct_margins": [0.5, 1.25, 2.0]}},
            {"name": "eps 0.02", "status": "holds", "engine": "lp", "seconds": 2.0, "reason": "",
             "certificate": {"method": "lp", "disjunct_margins": [0.01, 0.3]}},
        ],
    }


def suite_records() -> list[dict[str, Any]]:
    """Records as ``certify suite`` writes them (one JSON object per line)."""
    out = []
    for k, status in enumerate(["holds", "violated", "unknown", "holds", "error"]):
        out.append({"onnx": f"net_{k}.onnx", "vnnlib": f"prop_{k % 2 + 1}.vnnlib", "occurrence": 0,
                    "line": k + 1, "timeout": 10.0, "status": status, "seconds": 0.1 * (k + 1) ** 2,
                    "engine": "bab" if status != "error" else "none",
                    "reason": "timeout" if status == "unknown" else "",
                    "counterexample": None if status != "violated" else
                    {"x": [0.1, 0.2, 0.3, 0.4, 0.5], "y": [1.0, 0.0], "replayed": True}})
    return out


def write_fixture_results(folder: Path) -> list[Path]:
    """Write a model file, one check JSON of each kind and a suite JSONL into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(b"not really onnx, but hashable")
    (folder / "spec.yaml").write_text("kind: robustness\n")
    paths = []
    for name, data in [("image.json", image_check("model.onnx", "spec.yaml", EVIL)),
                       ("tabular.json", tabular_check("acas.onnx", "prop_2.vnnlib")),
                       ("holds.json", holds_check("model.onnx", "spec.yaml"))]:
        (folder / name).write_text(json.dumps(data))
        paths.append(folder / name)
    suite = folder / "suite.results.jsonl"
    suite.write_text("".join(json.dumps(r) + "\n" for r in suite_records()))
    paths.append(suite)
    return paths
