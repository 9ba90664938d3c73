"""Certified vs standard training on MNIST, sample by sample, as a `certify report`.

    python case_studies/certified_mnist/run.py [--models DIR] [--n N] [--n-natural N]

1. trains `mnist.yaml` (IBP, eps 0.1) and `mnist_natural.yaml` (standard training) into
   ``DIR/mnist`` and ``DIR/mnist_natural`` unless their ``model.onnx`` already exists
   (about 15 min and 2 min of CPU on a quiet 2-core machine);
2. runs ``certify evaluate --records`` on the first N test images for each model (one verdict
   record per image: holds proved by certify's engines, violated with an adversarial image
   replayed in onnxruntime, or unknown), writing ``results/*.jsonl`` and ``results/*.json``;
3. runs ``certify report`` on both record files: ``report.html`` / ``report.md`` here.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MNIST = ROOT.parent / "shared" / "datasets" / "mnist"


def certify(*args: str) -> None:
    print("+ certify " + " ".join(args), flush=True)
    code = subprocess.call([sys.executable, "-m", "certify.cli", *args], cwd=ROOT)
    if code != 0:
        sys.exit(f"run.py: certify {args[0]} failed with exit code {code}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=ROOT / "out" / "certified_mnist",
                   help="where the trained models live (trained there if missing)")
    p.add_argument("--n", type=int, default=200, help="test images for the certified model (default 200)")
    p.add_argument("--n-natural", type=int, default=50, help="test images for the standard model (default 50)")
    p.add_argument("--data-dir", type=Path, default=MNIST)
    p.add_argument("--out", type=Path, default=HERE, help="where results/ and report.* go (default: here)")
    p.add_argument("--epochs", type=int, default=None, help="override the configs' epochs (shortened runs)")
    p.add_argument("--max-batches", type=int, default=None, help="cap batches per epoch (shortened runs)")
    args = p.parse_args(argv)
    results = args.out / "results"
    results.mkdir(parents=True, exist_ok=True)
    short = [*(["--epochs", str(args.epochs)] if args.epochs else []),
             *(["--max-batches", str(args.max_batches)] if args.max_batches else [])]
    runs = [("mnist", args.n, "ibp,crown,alpha-crown", "10"), ("mnist_natural", args.n_natural, "ibp,crown", "2")]
    records = []
    for name, n, engines, seconds in runs:
        model = args.models / name / "model.onnx"
        if not model.is_file():
            # the end-of-training certification covers the same images as the report
            certify("train", str(HERE / f"{name}.yaml"), "--out", str(args.models / name),
                    "--eval-n", str(n), *short)
        out = results / f"{name}_samples.jsonl"
        certify("evaluate", str(model), "--dataset", "mnist", "--data-dir", str(args.data_dir), "--eps", "0.1",
                "--n", str(n), "--engines", engines, "--seconds", seconds,
                "--json", str(results / f"{name}_evaluate_first{n}.json"), "--records", str(out))
        records.append(str(out))
    certify("report", *records, "-o", str(args.out / "report"), "--image-shape", "28x28",
            "--title", "MNIST, eps 0.1: certified (IBP) vs standard training, per test image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
