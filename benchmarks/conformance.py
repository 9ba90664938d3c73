"""The full conformance run: every importable engine on N (default 500) random problems.

    python -m benchmarks.conformance --n 500 --jobs 2 --out conformance.json

Prints, per engine: how many verdicts were holds / violated / unknown, how many contradicted
the ground truth (must be 0), how many decided verdicts disagree with milp, and the mean and
max seconds.  Problems come from :mod:`tests.conformance.problems` (seeds 0..N-1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECONDS = {"smt": 3.0, "fuzz": 1.0, "bab": 30.0}


def _engines(names: list[str] | None) -> list[str]:
    from certify.engines.registry import ENGINES, make_engine

    out = []
    for name in ENGINES:
        if names and name not in names:
            continue
        try:
            engine = make_engine(name)
        except ImportError:
            continue
        if engine.available():
            out.append(name)
    return out


def run_case(seed: int, names: list[str]) -> dict:
    import torch

    torch.set_num_threads(1)
    from certify.budget import Budget
    from certify.engines.registry import make_engine
    from tests.conformance.problems import forward, random_case

    t0 = time.monotonic()
    case = random_case(seed)
    row = {"seed": seed, "expected": case.expected.value, "truth": case.truth_source,
           "margins": list(case.margins), "gen_s": time.monotonic() - t0, "engines": {}}
    for name in names:
        engine = make_engine(name)
        start = time.monotonic()
        try:
            v = engine.check(case.problem, Budget.seconds(SECONDS.get(name, 30.0)))
            status, reason = v.status.value, v.reason
            cex_ok = None
            if v.counterexample is not None:
                x = v.counterexample.x.reshape(-1).astype("float64")
                cex_ok = bool(case.problem.box.contains(x)
                              and case.problem.violation(forward(case.layers, x[None])[0]) <= 0)
        except Exception as exc:  # a crash is recorded, not hidden
            status, reason, cex_ok = "error", f"{type(exc).__name__}: {exc}", None
        row["engines"][name] = {"status": status, "seconds": time.monotonic() - start,
                                "reason": reason[:200], "cex_ok": cex_ok}
    return row


def table(rows: list[dict], names: list[str]) -> str:
    lines = ["| engine | holds | violated | unknown | error | wrong | disagree w/ milp | bad cex | mean s | max s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        res = [(r["expected"], r["engines"][name], r["engines"].get("milp")) for r in rows if name in r["engines"]]
        count = {s: sum(1 for _, e, _ in res if e["status"] == s) for s in ("holds", "violated", "unknown", "error")}
        wrong = sum(1 for exp, e, _ in res if e["status"] in ("holds", "violated") and e["status"] != exp)
        disagree = sum(1 for _, e, m in res if m and e["status"] in ("holds", "violated")
                       and m["status"] in ("holds", "violated") and e["status"] != m["status"])
        bad = sum(1 for _, e, _ in res if e["cex_ok"] is False)
        secs = [e["seconds"] for _, e, _ in res]
        lines.append(f"| {name} | {count['holds']} | {count['violated']} | {count['unknown']} | {count['error']} | "
                     f"{wrong} | {disagree} | {bad} | {sum(secs) / max(1, len(secs)):.3f} | {max(secs, default=0):.2f} |")
    exp = [r["expected"] for r in rows]
    lines.append(f"\n{len(rows)} problems: {exp.count('holds')} hold, {exp.count('violated')} violated; ground truth "
                 f"by brute force on {sum(1 for r in rows if r['truth'] == 'brute-force')}, by milp on the rest.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--engines", nargs="*")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    names = _engines(args.engines)
    print("engines:", ", ".join(names), flush=True)
    seeds = list(range(args.seed, args.seed + args.n))
    rows: list[dict] = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for k, row in enumerate(pool.map(run_case, seeds, [names] * len(seeds))):
            rows.append(row)
            if (k + 1) % 25 == 0:
                print(f"{k + 1}/{len(seeds)} done", flush=True)
                if args.out:
                    args.out.write_text(json.dumps(rows))
    if args.out:
        args.out.write_text(json.dumps(rows))
    print(table(rows, names))


if __name__ == "__main__":
    main()
