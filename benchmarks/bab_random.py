"""The ``bab`` engine against the exact MILP oracle on N random small ReLU problems, both modes.

Usage: ``python benchmarks/bab_random.py [N] [--threads 1]``.  The problems and the oracle are
those of ``tests/engines/test_bab.py`` (CI runs 100 of them in each mode with fewer optimizer
steps); this runs N with the default options and prints the agreement and the times.
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
from tests.engines.test_bab import assert_counterexample, problems  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.monotonic()
    probs = problems(args.n)
    print(f"{len(probs)} problems ({sum(v for _, v in probs)} violated) from the MILP oracle in "
          f"{time.monotonic() - start:.1f}s")
    bad = 0
    for mode in ("input", "neuron"):
        engine = make_engine({"mode": mode})
        counts = {s: 0 for s in Status}
        wrong = 0
        times = []
        for problem, is_violated in probs:
            v = engine.check(problem, Budget.seconds(60))
            counts[v.status] += 1
            times.append(v.seconds)
            expected = Status.VIOLATED if is_violated else Status.HOLDS
            if v.status is not Status.UNKNOWN and v.status is not expected:
                wrong += 1
                print("WRONG", problem.name, v.status, v.stats)
            if v.status is Status.VIOLATED:
                assert_counterexample(problem, v.counterexample.x)
        times.sort()
        print(f"{mode}: holds {counts[Status.HOLDS]} violated {counts[Status.VIOLATED]} unknown "
              f"{counts[Status.UNKNOWN]} wrong {wrong}; total {sum(times):.1f}s, median "
              f"{times[len(times) // 2]:.3f}s, max {times[-1]:.2f}s")
        bad += wrong + counts[Status.UNKNOWN]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
