"""Batch fuzzer vs sequential per-property PGD at equal wall-clock budget.

    python benchmarks/fuzz.py BENCH_DIR [--budget S] [--out results.md] [--batch B (0: auto)]
        [--baseline-restarts 1,64] [--baseline-steps N] [--device cpu|cuda] [--threads T]

BENCH_DIR holds ``*_instances.csv`` (``onnx,vnnlib,timeout``) and optionally ``expected.csv``
(``onnx,vnnlib,expected`` with ``sat`` = violated, ``unsat`` = holds).  Every counterexample
of either method is replayed in onnxruntime before it counts.  Loading models and specs and
opening onnxruntime sessions happen before the clocks start.

(a) *sequential*: properties one at a time; each case gets ``--baseline-steps`` signed-gradient
steps (step 2.5 * half-width / steps per dimension) from ``R`` uniform random starts batched
together; passes over the unfalsified properties repeat, with fresh starts, until the budget
is spent.  (b) *batch*: :func:`certify.fuzz.fuzz_grouped` over all properties.

Reported: distinct properties falsified (and how many of them are known to hold: must be 0),
time to first falsification, forward+backward passes per second, lane-samples per second,
and how close the fuzzer runs to bare batched forward+backward passes: over the whole run
(each group's samples priced at its stacked networks' raw rate) and in steady state on the
first network at the same batch size (median ratio of back-to-back window pairs).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from certify.budget import Budget
from certify.fuzz import BatchFuzzer, FuzzOptions, FuzzStats, fuzz_grouped
from certify.fuzz.group import group_by_structure
from certify.fuzz.objective import LaneObjective, Objective
from certify.fuzz.stack import StackedNetwork
from certify.io.onnx import load_onnx
from certify.io.vnnlib import parse_vnnlib, to_problems
from certify.network import Network
from certify.problem import Problem
from certify.replay import OnnxOracle, replay


@dataclass
class Bench:
    properties: list[tuple[str, str]]  # (onnx, vnnlib) as written in the csv
    expected: dict[tuple[str, str], str]
    problems: list[Problem]
    owner: list[int]  # problem index -> property index
    oracles: list[OnnxOracle]  # per problem
    networks: list[Network]


@dataclass
class Run:
    name: str
    first_hit: dict[int, float] = field(default_factory=dict)  # property -> seconds
    groups: list[FuzzStats] = field(default_factory=list)  # the batch fuzzer's, per structure group
    passes: int = 0
    samples: int = 0
    seconds: float = 0.0


def load_bench(folder: Path) -> Bench:
    csvs = sorted(folder.glob("*instances.csv"))
    if not csvs:
        raise SystemExit(f"no *instances.csv in {folder}")
    rows = [r for r in csv.reader(csvs[0].open()) if r and not r[0].startswith("#")]
    expected: dict[tuple[str, str], str] = {}
    if (folder / "expected.csv").exists():
        for r in csv.DictReader((folder / "expected.csv").open()):
            expected[(r["onnx"], r["vnnlib"])] = r["expected"]
    nets: dict[str, Network] = {}
    oracles: dict[str, OnnxOracle] = {}
    queries: dict[str, object] = {}
    bench = Bench([], expected, [], [], [], [])
    for onnx_name, vnnlib_name, *_ in rows:
        onnx_name, vnnlib_name = onnx_name.strip(), vnnlib_name.strip()
        if onnx_name not in nets:
            nets[onnx_name] = load_onnx(folder / onnx_name)
            oracles[onnx_name] = OnnxOracle(folder / onnx_name)
            oracles[onnx_name]._open()
            bench.networks.append(nets[onnx_name])
        if vnnlib_name not in queries:
            queries[vnnlib_name] = parse_vnnlib(folder / vnnlib_name)
        k = len(bench.properties)
        bench.properties.append((onnx_name, vnnlib_name))
        for p in to_problems(queries[vnnlib_name], nets[onnx_name], f"{onnx_name}:{vnnlib_name}"):  # type: ignore[arg-type]
            bench.problems.append(p)
            bench.owner.append(k)
            bench.oracles.append(oracles[onnx_name])
    return bench


def sequential(bench: Bench, budget_s: float, restarts: int, steps: int, device: str, seed: int) -> Run:
    """Per-property signed-gradient PGD, one property at a time, ``steps`` steps per case per pass."""
    run = Run(f"sequential PGD ({restarts} start{'s' if restarts > 1 else ''})")
    gen = torch.Generator(device=device).manual_seed(seed)
    nets = {id(n): n.to(torch.float32, device) for n in bench.networks}
    objs = [Objective.of([p], torch.float32, torch.device(device)) for p in bench.problems]
    start = time.monotonic()
    deadline = start + budget_s
    while time.monotonic() < deadline:
        progressed = False
        for i, p in enumerate(bench.problems):
            k = bench.owner[i]
            if k in run.first_hit:
                continue
            if time.monotonic() >= deadline:
                break
            progressed = True
            net = nets[id(p.network)]
            lanes = LaneObjective.gather(objs[i], torch.zeros(restarts, dtype=torch.long, device=device))
            lo, hi = lanes.lower, lanes.upper
            alpha = 2.5 * (hi - lo) / 2 / steps
            x = lo + (hi - lo) * torch.rand(lo.shape, generator=gen, device=device)
            for _ in range(steps):
                xg = x.detach().requires_grad_(True)
                m = lanes.margin(net(xg.view(restarts, *net.input_shape)).reshape(restarts, -1))
                (g,) = torch.autograd.grad(m.sum(), xg)
                run.passes += 1
                run.samples += restarts
                if bool((m < 0).any()):
                    j = int(m.argmin())
                    if replay(bench.oracles[i], p, x[j].detach().cpu().numpy()) is not None:
                        run.first_hit[k] = time.monotonic() - start
                        break
                x = torch.minimum(torch.maximum(x.detach() - alpha * g.sign(), lo), hi)
        if not progressed:
            break
    run.seconds = time.monotonic() - start
    return run


def group_batches(bench: Bench, options: FuzzOptions) -> dict[int, int]:
    """``id(network)`` -> lanes per pass of the fuzzer that runs its structure group."""
    out: dict[int, int] = {}
    for idx in group_by_structure(bench.problems):
        size = options.batch_for(bench.problems[idx[0]].network, len(idx))
        out.update((id(bench.problems[i].network), size) for i in idx)
    return out


def batch(bench: Bench, budget_s: float, options: FuzzOptions, device: str) -> Run:
    batches = group_batches(bench, options)
    sizes = sorted(set(batches.values()), reverse=True)
    run = Run(f"batch fuzzer (B={'/'.join(map(str, sizes))})")
    start = time.monotonic()
    stats = run.groups
    outcomes = fuzz_grouped(bench.problems, Budget(start + budget_s, device), options, bench.oracles, stats)
    run.seconds = time.monotonic() - start
    for o in outcomes:
        if o.first_hit_seconds is not None:
            k = bench.owner[o.index]
            run.first_hit[k] = min(run.first_hit.get(k, math.inf), o.first_hit_seconds)
    run.samples = sum(s.samples for s in stats)
    run.passes = sum(s.steps for s in stats)
    return run


def _raw_rate(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: str,
              seconds: float) -> float:
    """Lane-samples per second of bare forward+backward passes of ``forward`` on ``x``."""
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(forward(xg).sum(), xg)
        n += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return n * x.shape[0] / (time.perf_counter() - t0)


def raw_throughput(net: Network, batch_size: int, device: str, seconds: float = 2.0) -> float:
    """Lane-samples per second of a bare forward+backward pass of ``net`` at ``batch_size``."""
    net = net.to(torch.float32, device)
    return _raw_rate(net, torch.rand((batch_size, *net.input_shape), device=device), device, seconds)


def group_rate(bench: Bench, idx: Sequence[int], options: FuzzOptions, device: str, seconds: float) -> float:
    """Lane-samples per second of bare forward+backward passes of the networks of the structure
    group ``idx`` stacked (:class:`certify.fuzz.stack.StackedNetwork`) at the group's full batch,
    lanes split evenly: the computation the fuzzer runs for that group."""
    nets = list({id(bench.problems[i].network): bench.problems[i].network for i in idx}.values())
    per = max(1, options.batch_for(nets[0], len(idx)) // len(nets))
    stacked = StackedNetwork(nets, torch.float32, device)
    return _raw_rate(stacked, torch.rand((per * len(nets), *stacked.input_shape), device=device), device, seconds)


def raw_stacked_throughput(bench: Bench, options: FuzzOptions, device: str, seconds: float = 2.0) -> tuple[int, float]:
    """:func:`group_rate` of the first network's group: (networks stacked, samples/s)."""
    first = group_by_structure(bench.problems)[0]
    return len({id(bench.problems[i].network) for i in first}), group_rate(bench, first, options, device, seconds)


def whole_run_efficiency(bench: Bench, options: FuzzOptions, run: Run, device: str) -> float:
    """How close the batch fuzzer's whole run came to the hardware limit: the seconds its
    lane-samples would take as bare forward+backward passes of each group's stacked networks at
    the group's full batch (:func:`group_rate`), over the seconds the run took (warm-up,
    scheduling, bookkeeping and replays included)."""
    bare = sum(stats.samples / group_rate(bench, idx, options, device, 1.0)
               for idx, stats in zip(group_by_structure(bench.problems), run.groups))
    return bare / run.seconds


def steady_ratio(bench: Bench, options: FuzzOptions, device: str, pairs: int = 24,
                 window: float = 0.25) -> tuple[float, float, float]:
    """Steady state on the first network's properties (unsolvable ones keep the fuzzer busy), at
    the fuzzer's full batch: ``pairs`` back-to-back windows of bare forward+backward passes and
    of fuzzing, each ``window`` seconds.  The ratio of each adjacent pair shares the machine's
    state of the moment (this VM's speed drifts by +-25% between seconds), so their median is
    the robust figure: (median fuzzer samples/s, median raw samples/s, median pair ratio)."""
    net = bench.problems[0].network
    probs = [p for p in bench.problems if p.network is net]
    f = BatchFuzzer(probs, dataclasses.replace(options, seed=options.seed + 1, first_lanes=None), device)
    f.run(math.inf, 8)
    net32 = net.to(torch.float32, device)
    x = torch.rand((f.B, *net32.input_shape), device=device)
    fz, rw = [], []
    for _ in range(pairs):
        rw.append(_raw_rate(net32, x, device, window))
        s0, t0 = f.samples, time.perf_counter()
        while time.perf_counter() - t0 < window and not f.done:
            f.run(math.inf, 2)
        fz.append((f.samples - s0) / (time.perf_counter() - t0))
    ratio = statistics.median(a / b for a, b in zip(fz, rw))
    return statistics.median(fz), statistics.median(rw), ratio


def time_to_count(first_hit: dict[int, float], count: int) -> float:
    times = sorted(first_hit.values())
    return times[count - 1] if 0 < count <= len(times) else math.inf


def report(bench: Bench, runs: Sequence[Run], raw: float, steady: tuple[float, float, float], efficiency: float,
           args: argparse.Namespace, stacked: tuple[int, float], raw_batch: int) -> str:
    sat = {k for k, p in enumerate(bench.properties) if bench.expected.get(p) == "sat"}
    unsat = {k for k, p in enumerate(bench.properties) if bench.expected.get(p) == "unsat"}
    fuzz = runs[-1]
    lines = [
        f"# Batch fuzzer vs sequential PGD: {args.bench.name}",
        "",
        f"{len(bench.properties)} properties ({len(sat)} known violated, {len(unsat)} known to hold), "
        f"{len(bench.problems)} problems over {len(bench.networks)} networks; budget {args.budget:g} s per method; "
        f"device {args.device}; torch threads {torch.get_num_threads()}.",
        "",
        "| method | falsified | of known violated | on known holds | median first hit (s) | last hit (s) "
        "| passes/s | samples/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        hits = set(r.first_hit)
        times = sorted(r.first_hit.values())
        med = f"{statistics.median(times):.3f}" if times else "-"
        last = f"{times[-1]:.3f}" if times else "-"
        lines.append(f"| {r.name} | {len(hits)} | {len(hits & sat)} | {len(hits & unsat)} | {med} | {last} | "
                     f"{r.passes / r.seconds:.0f} | {r.samples / r.seconds:.0f} |")
    lines += ["", "| baseline | its count | its time to that count (s) | batch fuzzer's time to that count (s) | speed-up |",
              "|---|---|---|---|---|"]
    for r in runs[:-1]:
        c = len(r.first_hit)
        tb, tf = time_to_count(r.first_hit, c), time_to_count(fuzz.first_hit, c)
        speed = f"{tb / tf:.1f}x" if c and tf < math.inf and tf > 0 else "-"
        lines.append(f"| {r.name} | {c} | {tb:.3f} | {tf:.3f} | {speed} |")
    f_rate, r_rate, ratio = steady
    whole = fuzz.samples / fuzz.seconds
    lines += [
        "",
        f"Raw batched forward+backward of `{bench.properties[0][0]}` at its fuzzing batch "
        f"{raw_batch}: {raw:.0f} samples/s.",
        f"Raw batched forward+backward of the {stacked[0]} network(s) of that structure stacked, as the fuzzer "
        f"runs them, at the same batch: {stacked[1]:.0f} samples/s.",
        f"Batch fuzzer over the whole run (all groups, warm-up, scheduling, replays included): {whole:.0f} "
        f"samples/s; as bare forward+backward passes of each group's (stacked) networks at its full batch "
        f"its samples would take {efficiency:.0%} of the run's time.",
        f"Steady state on `{bench.properties[0][0]}`'s properties at the same batch (24 back-to-back "
        f"pairs of 0.25 s windows): fuzzer {f_rate:.0f} samples/s, bare forward+backward {r_rate:.0f} samples/s "
        f"(medians); median ratio of the pairs {ratio:.0%}.",
        "",
        "Per property, time to first falsification (s):",
        "",
        "| property | expected | " + " | ".join(r.name for r in runs) + " |",
        "|---|---|" + "---|" * len(runs),
    ]
    for k, (o, v) in enumerate(bench.properties):
        cells = [f"{r.first_hit[k]:.3f}" if k in r.first_hit else "-" for r in runs]
        if any(c != "-" for c in cells) or k in sat:
            lines.append(f"| {o} {v} | {bench.expected.get((o, v), '?')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", type=Path)
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--batch", type=int, default=0, help="lanes per pass (0: automatic per network)")
    ap.add_argument("--baseline-restarts", default="1,64")
    ap.add_argument("--baseline-steps", type=int, default=50)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t = time.monotonic()
    bench = load_bench(args.bench)
    print(f"loaded {len(bench.properties)} properties in {time.monotonic() - t:.1f}s", file=sys.stderr)
    options = FuzzOptions(batch=args.batch or None, seed=args.seed)
    runs = []
    for r in (int(v) for v in args.baseline_restarts.split(",") if v.strip()):
        runs.append(sequential(bench, args.budget, r, args.baseline_steps, args.device, args.seed))
        print(f"{runs[-1].name}: {len(runs[-1].first_hit)} falsified", file=sys.stderr)
    runs.append(batch(bench, args.budget, options, args.device))
    print(f"{runs[-1].name}: {len(runs[-1].first_hit)} falsified", file=sys.stderr)
    raw_batch = group_batches(bench, options)[id(bench.networks[0])]
    raw = raw_throughput(bench.networks[0], raw_batch, args.device)
    stacked = raw_stacked_throughput(bench, options, args.device)
    steady = steady_ratio(bench, options, args.device)
    efficiency = whole_run_efficiency(bench, options, runs[-1], args.device)
    text = report(bench, runs, raw, steady, efficiency, args, stacked, raw_batch)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
