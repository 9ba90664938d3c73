"""veriFIRE, reproduced on a model built here: an infrared wildfire detector, its monotonicity and
blur tolerance checked with certify, and the report.

    python case_studies/wildfire/study.py [--out DIR] [--timeout S] [--quick]

1. makes a synthetic infrared data set (16x16 frames: terrain backgrounds with gradients,
   ridges and sensor noise; hot targets through a Gaussian point-spread function at random
   sub-pixel positions and intensities);
2. trains two small CNN detectors (CPU, seconds each), outputs [no fire, fire]:
   ``detector`` (every hot spot is fire) and ``glint_filter`` (the detector fine-tuned on data
   that call very hot, compact spots "sun glint, not fire" - a rule real systems use);
3. exports them to ONNX and writes, for three test scenes, the two veriFIRE properties as
   spec.yaml files: *monotonicity* (path form: image = background + a * (target - background),
   a in [1, 2]; the fire margin y[1] - y[0] never drops below its value at a = 1 by more than
   ``tol``) and *blur tolerance* (envelope form: the 5x5 footprint of the target, each pixel
   boxed by the point-spread envelope over sub-pixel shifts in [-0.5, 0.5]^2 and intensities
   1-2x; every frame inside stays "fire");
4. checks every (model, spec) with certify and writes ``report.html`` / ``report.md``.

``--quick`` (used by the tests) trains on fewer frames for fewer epochs, one scene.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SIDE = 16  # frame side (pixels)
SIGMA = 0.7  # point-spread function width (pixels)
FOOTPRINT = 5  # the target footprint checked by blur tolerance (pixels)
GLINT = 0.6  # glint_filter: peaks above this are labelled "glint, not fire"


@dataclass(frozen=True, slots=True)
class Config:
    frames: int = 4000
    epochs: int = 8
    scenes: int = 3
    timeout: float = 60.0
    mono_tol: float = 0.05
    seed: int = 0
    solver: str = str(HERE / "solver.yaml")  # a preset name or YAML file


QUICK = Config(frames=1500, epochs=4, scenes=1, timeout=20.0)


# ----------------------------------------------------------------------------- data


def psf(cy: float, cx: float) -> np.ndarray:
    """The point-spread function (peak 1 at (cy, cx)) sampled on the frame's pixel centres."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * SIGMA ** 2))


def background(rng: np.random.Generator) -> np.ndarray:
    """Terrain: a base temperature, a gradient, a ridge pattern and sensor noise, in [0, 1]."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    base = rng.uniform(0.12, 0.32)
    gy, gx = rng.uniform(-0.08, 0.08, 2)
    f, phase, amp = rng.uniform(1.0, 3.0), rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.04)
    ang = rng.uniform(0, np.pi)
    ridge = amp * np.sin(2 * np.pi * f * (np.cos(ang) * xx + np.sin(ang) * yy) + phase)
    noise = rng.normal(0.0, 0.01, (SIDE, SIDE))
    return np.clip(base + gy * yy + gx * xx + ridge + noise, 0.0, 1.0)


def target_position(rng: np.random.Generator) -> tuple[float, float]:
    return float(rng.uniform(4.0, SIDE - 5.0)), float(rng.uniform(4.0, SIDE - 5.0))


def dataset(n: int, rng: np.random.Generator, glint_filter: bool) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frames [n, 1, 16, 16] and labels (1 = fire).  Half have a target; a few negatives
    carry a faint warm spot (peak < 0.06) so that "any bump" is not enough."""
    xs = np.empty((n, 1, SIDE, SIDE), dtype=np.float32)
    ys = np.empty(n, dtype=np.int64)
    for k in range(n):
        bg = background(rng)
        fire = k % 2 == 0
        if fire:
            peak = rng.uniform(0.12, 0.9)
            label = 0 if glint_filter and peak > GLINT else 1
        else:
            peak = rng.uniform(0.0, 0.06) if rng.uniform() < 0.5 else 0.0
            label = 0
        xs[k, 0] = bg + peak * psf(*target_position(rng))
        ys[k] = label
    return xs, ys


# ----------------------------------------------------------------------------- model


def make_model() -> Any:
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(),  # 6 x 16 x 16: spot detectors
        nn.Conv2d(6, 8, 4, stride=4), nn.ReLU(),  # 8 x 4 x 4: pooled per 4x4 block
        nn.Flatten(), nn.Linear(128, 16), nn.ReLU(), nn.Linear(16, 2),
    )


def train(xs: np.ndarray, ys: np.ndarray, epochs: int, seed: int, start: Any = None) -> Any:
    """Adam on cross-entropy; ``start``: a model to fine-tune (a copy is trained)."""
    import copy

    import torch

    torch.manual_seed(seed)
    model = make_model() if start is None else copy.deepcopy(start)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(xs), torch.from_numpy(ys)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def accuracy(model: Any, xs: np.ndarray, ys: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        pred = model(torch.from_numpy(xs)).argmax(dim=1).numpy()
    return float(np.mean(pred == ys))


def export(model: Any, path: Path) -> None:
    import torch

    torch.onnx.export(model, (torch.zeros(1, 1, SIDE, SIDE),), str(path), input_names=["frame"],
                      output_names=["scores"], dynamo=False)


# ----------------------------------------------------------------------------- properties


@dataclass(frozen=True, slots=True)
class Scene:
    name: str
    background: np.ndarray  # [16, 16]
    center: tuple[float, float]
    peak: float

    @property
    def target(self) -> np.ndarray:
        return self.background + self.peak * psf(*self.center)


def scenes(count: int, seed: int) -> list[Scene]:
    rng = np.random.default_rng(seed + 1000)
    peaks = [0.35, 0.3, 0.4]
    return [Scene(f"scene{k + 1}", background(rng), target_position(rng), peaks[k % 3]) for k in range(count)]


def blur_envelope(scene: Scene, shifts: int = 41) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel [lower, upper]: inside the 5x5 footprint around the target, the min / max of
    background + s * peak * psf(centre + shift) over shifts in [-0.5, 0.5]^2 (a ``shifts`` x
    ``shifts`` grid plus the exact in-pixel extremes) and s in [1, 2]; outside it the frame."""
    cy, cx = scene.center
    lo_psf = np.full((SIDE, SIDE), np.inf)
    hi_psf = np.full((SIDE, SIDE), -np.inf)
    grid = np.linspace(-0.5, 0.5, shifts)
    for dy in grid:
        for dx in grid:
            p = psf(cy + dy, cx + dx)
            lo_psf, hi_psf = np.minimum(lo_psf, p), np.maximum(hi_psf, p)
    # the psf of a pixel is largest where the shifted centre comes closest to it: exact maximum
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    ny = np.clip(yy, cy - 0.5, cy + 0.5)
    nx = np.clip(xx, cx - 0.5, cx + 0.5)
    hi_psf = np.maximum(hi_psf, np.exp(-((yy - ny) ** 2 + (xx - nx) ** 2) / (2 * SIGMA ** 2)))
    lower, upper = scene.target.copy(), scene.target.copy()
    r0, c0 = int(round(cy)) - FOOTPRINT // 2, int(round(cx)) - FOOTPRINT // 2
    win = (slice(r0, r0 + FOOTPRINT), slice(c0, c0 + FOOTPRINT))
    lower[win] = scene.background[win] + 1.0 * scene.peak * lo_psf[win]
    upper[win] = scene.background[win] + 2.0 * scene.peak * hi_psf[win]
    return lower, upper


def write_specs(scene: Scene, folder: Path, tol: float) -> list[Path]:
    """``<scene>_monotonicity.yaml`` and ``<scene>_blur.yaml`` with their .npy frames."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    shape = (1, 1, SIDE, SIDE)
    np.save(data / f"{scene.name}_background.npy", scene.background.reshape(shape).astype(np.float32))
    np.save(data / f"{scene.name}_target.npy", scene.target.reshape(shape).astype(np.float32))
    lower, upper = blur_envelope(scene)
    np.save(data / f"{scene.name}_envelope_lower.npy", lower.reshape(shape).astype(np.float32))
    np.save(data / f"{scene.name}_envelope_upper.npy", upper.reshape(shape).astype(np.float32))
    cy, cx = scene.center
    mono = folder / f"{scene.name}_monotonicity.yaml"
    mono.write_text(f"""# yaml-language-server: $schema=../../../specs/schema.json
# veriFIRE monotonicity, path form: a hotter target never lowers the fire score.
# image(a) = background + a * (target - background), a in [1, 2]; target peak {scene.peak} at
# ({cy:.2f}, {cx:.2f}).  Violated when the fire margin y[1] - y[0] at some a drops more than
# tol below its value at a = 1.
kind: monotonicity
name: {scene.name} monotonicity (a in [1, 2])
form: path
background: data/{scene.name}_background.npy
target: data/{scene.name}_target.npy
alpha: [1.0, 2.0]
reference: 1.0
margin: [1, 0]          # the fire score: y[fire] - y[no fire]
direction: increasing
tol: {tol}
""")
    blur = folder / f"{scene.name}_blur.yaml"
    blur.write_text(f"""# yaml-language-server: $schema=../../../specs/schema.json
# veriFIRE blur tolerance, envelope form: the {FOOTPRINT}x{FOOTPRINT} footprint around the target at
# ({cy:.2f}, {cx:.2f}); each pixel in [background + 1 * peak * min psf, background + 2 * peak * max psf]
# over sub-pixel shifts in [-0.5, 0.5]^2 (peak {scene.peak}, psf sigma {SIGMA} px).  Every frame in
# the box must still be classified as fire.
kind: blur_tolerance
name: {scene.name} blur tolerance (5x5 envelope)
input: data/{scene.name}_target.npy
envelope:
  lower: data/{scene.name}_envelope_lower.npy
  upper: data/{scene.name}_envelope_upper.npy
label: 1
""")
    return [mono, blur]


# ----------------------------------------------------------------------------- the study


def check_json(model: Path, spec: Path, cfg: Config, root: Path) -> dict[str, Any]:
    """What ``certify check MODEL SPEC --json`` writes, with paths relative to ``root``."""
    from certify import __version__
    from certify.api import CheckOptions, check

    result = check(model, spec, CheckOptions(solver=cfg.solver, timeout=cfg.timeout, device="cpu"))
    return {"model": str(model.relative_to(root)), "spec": str(spec.relative_to(root)),
            "certify_version": __version__, **result.to_json()}


def run(out: Path, cfg: Config) -> dict[str, Any]:
    import torch

    from certify.report import ReportOptions, make_report

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    models, specs = out / "models", out / "specs"
    models.mkdir(exist_ok=True)
    config = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    config["solver"] = Path(cfg.solver).name if Path(cfg.solver).parent == HERE else cfg.solver
    summary: dict[str, Any] = {"config": config, "models": {}}
    detector = None
    for k, variant in enumerate(("detector", "glint_filter")):
        rng = np.random.default_rng(cfg.seed + k)
        xs, ys = dataset(cfg.frames, rng, glint_filter=variant == "glint_filter")
        tx, ty = dataset(max(400, cfg.frames // 5), np.random.default_rng(cfg.seed + 100 + k),
                         glint_filter=variant == "glint_filter")
        start = time.monotonic()
        model = train(xs, ys, cfg.epochs, cfg.seed, start=detector)  # glint_filter: fine-tuned detector
        detector = detector or model
        export(model, models / f"{variant}.onnx")
        summary["models"][variant] = {"train_seconds": round(time.monotonic() - start, 1),
                                      "test_accuracy": round(accuracy(model, tx, ty), 4),
                                      "train_frames": cfg.frames, "epochs": cfg.epochs}
    spec_files = [p for s in scenes(cfg.scenes, cfg.seed) for p in write_specs(s, specs, cfg.mono_tol)]
    results = out / "results"
    results.mkdir(exist_ok=True)
    for stale in results.glob("*.json"):
        stale.unlink()
    paths = []
    for variant in ("detector", "glint_filter"):
        for spec in spec_files:
            data = check_json(models / f"{variant}.onnx", spec, cfg, out)
            path = results / f"{variant}.{spec.stem}.json"
            path.write_text(json.dumps(data, indent=1) + "\n")
            paths.append(path)
            summary.setdefault("verdicts", {})[f"{variant} {spec.stem}"] = data["status"]
    written = make_report(paths, out / "report", ReportOptions(
        title="Wildfire detector (veriFIRE reproduction): monotonicity and blur tolerance"), search=(out,))
    summary["report"] = str(written.html.relative_to(out))
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per check (default 60; quick: 20)")
    p.add_argument("--quick", action="store_true", help="the shortened version run by the tests")
    p.add_argument("--solver", default=None, help="solver preset name or YAML (default: solver.yaml here)")
    args = p.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    changes = {k: v for k, v in (("timeout", args.timeout), ("solver", args.solver)) if v is not None}
    cfg = Config(**{**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, **changes})
    summary = run(args.out, cfg)
    for variant, info in summary["models"].items():
        print(f"{variant}: test accuracy {info['test_accuracy']:.3f} ({info['train_seconds']} s training)")
    for name, status in summary["verdicts"].items():
        print(f"{status:9s} {name}")
    print(f"report: {args.out / summary['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
