"""``certify train`` and ``certify evaluate``: argparse sub-commands.

The lead's :mod:`certify.cli` registers them with :func:`add_train_parser` and
:func:`add_evaluate_parser`; each sets ``func(args) -> int`` (the exit code).  Expected
failures (:class:`certify.errors.CertifyError`) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from certify.errors import CertifyError


class _Bar:
    """A one-line progress display on stderr."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.last = 0.0

    def step(self, p) -> None:  # p: certify.train.loop.Progress
        now = time.perf_counter()
        if now - self.last < self.every and p.batch < p.batches:
            return
        self.last = now
        width = 24
        done = int(width * p.batch / p.batches)
        line = (f"\repoch {p.epoch}/{p.epochs} [{'#' * done}{'.' * (width - done)}] {p.batch}/{p.batches} "
                f"eps {p.eps:.4f} clean {p.clean_loss:.3f} ({100 * p.clean_acc:.1f}%) "
                f"robust {p.robust_loss:.3f} ({100 * p.robust_acc:.1f}%)")
        sys.stderr.write(line)
        sys.stderr.flush()

    def epoch(self, e) -> None:  # e: certify.train.loop.EpochSummary
        sys.stderr.write(f"\repoch {e.epoch}: {e.seconds:.1f}s (cpu {e.cpu_seconds:.1f}s)  eps {e.eps:.4f}  train clean {100 * e.train_clean_acc:.2f}%"
                         f" IBP-robust {100 * e.train_robust_acc:.2f}%  test clean {100 * e.test_clean_acc:.2f}%"
                         f" IBP-certified {100 * e.test_ibp_certified_acc:.2f}%" + " " * 20 + "\n")
        sys.stderr.flush()


def _run_train(args: argparse.Namespace) -> int:
    from certify.train.config import load_config
    from certify.train.loop import Callbacks, train

    try:
        cfg = load_config(args.config)
        if args.epochs is not None:
            cfg = cfg.model_copy(update={"epochs": args.epochs})
        if args.max_batches is not None:
            cfg = cfg.model_copy(update={"max_batches": args.max_batches})
        if args.eval_n is not None:
            cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"n": args.eval_n})})
        out = Path(args.out) if args.out else Path("out") / Path(args.config).stem
        bar = _Bar()
        result = train(cfg, out, Path(args.resume) if args.resume else None, Callbacks(bar.step, bar.epoch))
    except CertifyError as exc:
        print(f"certify: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {result.onnx} and {out / 'checkpoint.pt'}; training {result.train_seconds:.1f}s")
    print(result.evaluation.summary())
    return 0


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="certified training (IBP / CROWN-IBP) from a YAML config")
    p.add_argument("config", help="training config (YAML)")
    p.add_argument("--out", help="output directory (default: out/<config name>)")
    p.add_argument("--resume", metavar="CKPT", help="resume from a checkpoint.pt")
    p.add_argument("--epochs", type=int, help="override the config's epochs")
    p.add_argument("--max-batches", type=int, help="cap batches per epoch (smoke runs)")
    p.add_argument("--eval-n", type=int, help="override how many test images are certified at the end")
    p.set_defaults(func=_run_train)
    return p


def _run_evaluate(args: argparse.Namespace) -> int:
    from certify.io.onnx import load_onnx
    from certify.train.data import load_dataset
    from certify.train.evaluate import EvalOptions, evaluate, parse_engines

    try:
        network = load_onnx(args.model)
        if args.dataset in ("mnist", "digits"):
            x, y = load_dataset(args.dataset, "test", Path(args.data_dir) if args.data_dir else None)
        else:
            x, y = load_dataset("npz", "test", Path(args.dataset))
        options = EvalOptions(engines=parse_engines(args.engines), seconds_per_sample=args.seconds)
        ev = evaluate(network, x[:args.n], y[:args.n], args.eps, options)
    except CertifyError as exc:
        print(f"certify: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps({"model": str(args.model), "dataset": args.dataset, **ev.as_dict()},
                                              indent=2))
    if args.records:
        from certify.train.records import sample_records

        with open(args.records, "w") as fh:
            for rec in sample_records(Path(args.model), network, x[:args.n], y[:args.n], args.eps, options):
                fh.write(json.dumps(rec) + "\n")
    print(ev.summary())
    return 0


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("evaluate", help="clean, PGD and certified accuracy of an ONNX classifier")
    p.add_argument("model", help="MODEL.onnx")
    p.add_argument("--dataset", required=True, help="mnist | digits | FILE.npz (its test split)")
    p.add_argument("--data-dir", help="MNIST idx directory (for --dataset mnist)")
    p.add_argument("--eps", type=float, required=True, help="L-inf radius, pixels in [0, 1]")
    p.add_argument("--n", type=int, default=1000, help="first N test samples (default 1000)")
    p.add_argument("--engines", default="ibp,crown,alpha-crown",
                   help="certify engines tried per sample, cheapest first (default ibp,crown,alpha-crown)")
    p.add_argument("--seconds", type=float, default=10.0, help="time budget per sample (default 10)")
    p.add_argument("--json", help="write the figures as JSON here")
    p.add_argument("--records", metavar="PATH.jsonl",
                   help="also write one verdict record per sample (for `certify report`)")
    p.set_defaults(func=_run_evaluate)
    return p


def register(sub: argparse._SubParsersAction) -> None:
    """Both sub-commands, for ``certify.cli.COMMAND_MODULES``."""
    add_train_parser(sub)
    add_evaluate_parser(sub)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m certify.train.cli``) until certify.cli wires these in."""
    parser = argparse.ArgumentParser(prog="certify")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
