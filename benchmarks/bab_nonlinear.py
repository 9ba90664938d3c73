"""Neuron splitting on sigmoid / tanh nets against an independent referee, on N problems.

Usage: ``python benchmarks/bab_nonlinear.py [N] [--seconds S] [--threads 1]``.  The problems
and the referee (a dense grid plus interval arithmetic on every grid cell, sharing no code with
certify) are those of ``tests/engines/test_neuron_split.py``, which runs 30 of them in CI.  It
prints how many were decided, how many contradicted the referee (must be 0) and the times, for
``bab`` in neuron mode and, for comparison, for the same engine with one domain (the root bound
only).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from certify.budget import Budget  # noqa: E402
from certify.engines.bab import make_engine  # noqa: E402
from certify.verdict import Status  # noqa: E402
from tests.engines.test_neuron_split import NEURON, smooth_problems  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=200)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.monotonic()
    probs = smooth_problems(args.n)
    holding = sum(t is Status.HOLDS for _, t in probs)
    print(f"{len(probs)} problems ({holding} hold, {len(probs) - holding} violated) from the referee in "
          f"{time.monotonic() - start:.1f}s")
    wrong_total = 0
    for label, options in (("root only", {**NEURON, "max_domains": 1}), ("neuron splitting", NEURON)):
        engine = make_engine(options)
        decided = {Status.HOLDS: 0, Status.VIOLATED: 0}
        wrong, times = 0, []
        for problem, truth in probs:
            v = engine.check(problem, Budget.seconds(args.seconds))
            times.append(v.seconds)
            if v.status is Status.UNKNOWN:
                continue
            if v.status is not truth:
                wrong += 1
                print("WRONG", problem.name, v.status, truth, v.stats)
            else:
                decided[v.status] += 1
        times.sort()
        print(f"{label}: holds {decided[Status.HOLDS]}/{holding}, violated {decided[Status.VIOLATED]}/"
              f"{len(probs) - holding}, wrong {wrong}; total {sum(times):.1f}s, median {times[len(times) // 2]:.3f}s, "
              f"max {times[-1]:.2f}s")
        wrong_total += wrong
    return 1 if wrong_total else 0


if __name__ == "__main__":
    sys.exit(main())
