"""Shortened versions of the case studies (wildfire, acas_xu, certified_mnist)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ACAS = ROOT.parent / "shared" / "benchmarks" / "vnncomp2021" / "acasxu"


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wildfire() -> ModuleType:
    return load(ROOT / "case_studies" / "wildfire" / "study.py", "wildfire_study")


@pytest.fixture(scope="module")
def acas() -> ModuleType:
    return load(ROOT / "case_studies" / "acas_xu" / "run.py", "acas_run")


def test_blur_envelope_contains_every_shifted_brighter_target(wildfire: ModuleType) -> None:
    scene = wildfire.scenes(1, seed=3)[0]
    lower, upper = wildfire.blur_envelope(scene, shifts=11)
    assert np.all(lower <= scene.target + 1e-12) and np.all(scene.target <= upper + 1e-12)
    rng = np.random.default_rng(0)
    cy, cx = scene.center
    r0, c0 = int(round(cy)) - 2, int(round(cx)) - 2
    for _ in range(50):
        dy, dx = rng.uniform(-0.5, 0.5, 2)
        s = rng.uniform(1.0, 2.0)
        frame = scene.background + s * scene.peak * wildfire.psf(cy + dy, cx + dx)
        win = (slice(r0, r0 + 5), slice(c0, c0 + 5))
        assert np.all(lower[win] <= frame[win] + 1e-3) and np.all(frame[win] <= upper[win] + 1e-9)
    outside = np.ones_like(lower, dtype=bool)
    outside[r0:r0 + 5, c0:c0 + 5] = False
    assert np.array_equal(lower[outside], upper[outside])  # only the footprint varies


def test_wildfire_shortened_run(wildfire: ModuleType, tmp_path: Path) -> None:
    cfg = wildfire.Config(frames=300, epochs=1, scenes=1, timeout=3.0)
    summary = wildfire.run(tmp_path, cfg)
    assert set(summary["models"]) == {"detector", "glint_filter"}
    assert len(summary["verdicts"]) == 4 and set(summary["verdicts"].values()) <= {"holds", "violated", "unknown"}
    html = (tmp_path / "report.html").read_text()
    assert html.count('class="verdict"') >= 4 and "monotonicity" in html and "blur tolerance" in html
    for path in (tmp_path / "results").glob("*.json"):
        data = json.loads(path.read_text())
        assert (tmp_path / data["model"]).is_file() and (tmp_path / data["spec"]).is_file()
        if data["status"] == "violated":  # a violation is replayed and drawn as an image
            assert data["counterexample"]["replayed"] is True
            assert "Counterexample images" in html


def test_acas_subset_covers_every_property_first(acas: ModuleType) -> None:
    rows = acas.read_rows(ACAS)
    assert len(rows) == 186
    some = acas.pick(rows, 10)
    assert sorted({v for _, v, _ in some}) == sorted({f"prop_{k}.vnnlib" for k in range(1, 11)})
    assert acas.pick(rows, None) == rows


def test_acas_shortened_run(acas: ModuleType, tmp_path: Path) -> None:
    code = acas.main(["--bench", str(ACAS), "--limit", "1", "--timeout", "5", "--out", str(tmp_path)])
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["vnnlib"].endswith("prop_1.vnnlib")
    html = (tmp_path / "report.html").read_text()
    assert "ACASXU_run2a_1_1_batch_2000.onnx" in html and "(file not found)" not in html


def test_certified_mnist_shortened_run(tmp_path: Path) -> None:
    """case_studies/certified_mnist/run.py end to end: two tiny trainings, per-image records, the report."""
    run = load(ROOT / "case_studies" / "certified_mnist" / "run.py", "certified_mnist_run")
    assert run.main(["--models", str(tmp_path / "models"), "--out", str(tmp_path / "out"), "--epochs", "1",
                     "--max-batches", "2", "--n", "6", "--n-natural", "4"]) == 0
    for name, n in (("mnist", 6), ("mnist_natural", 4)):
        assert (tmp_path / "models" / name / "model.onnx").is_file()
        recs = [json.loads(line) for line in (tmp_path / "out" / "results" / f"{name}_samples.jsonl").read_text()
                .splitlines()]
        assert len(recs) == n and {r["status"] for r in recs} <= {"holds", "violated", "unknown"}
        assert all(r["counterexample"]["replayed"] for r in recs if r["status"] == "violated")
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count('class="verdict"') >= 10 and "sample 0 (label 7)" in html
