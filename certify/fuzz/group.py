"""Many instances over several networks: group them by network structure (networks of one
structure are stacked into one batch, see :mod:`certify.fuzz.stack`), fuzz each group in one
batch.

The groups share one budget in rounds: in round ``k`` every group with unsolved problems
gets ``first_slice_steps * 2**k`` steps (fuzzers keep their state between rounds), so easy
violations of every network are found first and the remaining time goes to the hard ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence

from certify.budget import Budget
from certify.fuzz.batch import BatchFuzzer, FuzzOutcome, FuzzStats
from certify.fuzz.options import FuzzOptions
from certify.fuzz.stack import structure_key
from certify.instance import Instance
from certify.problem import Problem
from certify.replay import Oracle
from certify.verdict import Verdict


def group_by_network(problems: Sequence[Problem]) -> list[list[int]]:
    """Indices of ``problems`` grouped by network object (first-seen order)."""
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(problems):
        groups.setdefault(id(p.network), []).append(i)
    return list(groups.values())


def group_by_structure(problems: Sequence[Problem]) -> list[list[int]]:
    """Indices of ``problems`` grouped by network structure (first-seen order): each group can
    run in one :class:`~certify.fuzz.batch.BatchFuzzer`."""
    keys: dict[int, Hashable] = {}
    groups: dict[Hashable, list[int]] = {}
    for i, p in enumerate(problems):
        if id(p.network) not in keys:
            keys[id(p.network)] = structure_key(p.network)
        groups.setdefault(keys[id(p.network)], []).append(i)
    return list(groups.values())


def _oracle_for(oracles: Sequence[Oracle], idx: list[int]) -> Callable[[int], Oracle]:
    return lambda j: oracles[idx[j]]


def fuzz_grouped(problems: Sequence[Problem], budget: Budget, options: FuzzOptions,
                 oracles: Sequence[Oracle] | None = None, stats: list[FuzzStats] | None = None
                 ) -> list[FuzzOutcome]:
    """Fuzz ``problems`` over any number of networks under one budget; outcomes in input order.

    ``oracles[i]`` (an :class:`~certify.replay.Oracle`) replays problem ``i``'s hits.
    Times to first falsification count from this call.  Each group's totals are appended to
    ``stats`` when given.
    """
    start = time.monotonic()
    fuzzers: list[tuple[list[int], BatchFuzzer]] = []
    for idx in group_by_structure(problems):
        oracle_for = None if oracles is None else _oracle_for(oracles, idx)
        fuzzers.append((idx, BatchFuzzer([problems[i] for i in idx], options, budget.device, oracle_for, start)))
    # one group: no need to interleave
    slice_steps = None if len(fuzzers) == 1 else options.first_slice_steps
    while not budget.expired:
        active = [f for _, f in fuzzers if not f.done and not f.exhausted]
        if not active:
            break
        for f in active:
            f.run(budget.deadline, slice_steps)
        slice_steps = None if slice_steps is None else slice_steps * 2
    if stats is not None:
        stats.extend(f.stats for _, f in fuzzers)
    out: list[FuzzOutcome | None] = [None] * len(problems)
    for idx, f in fuzzers:
        for o in f.outcomes():
            out[idx[o.index]] = FuzzOutcome(idx[o.index], o.verdict, o.first_hit_seconds, o.samples)
    return [o for o in out if o is not None]


def fuzz_instances(instances: Sequence[Instance], budget: Budget, options: FuzzOptions) -> list[Verdict]:
    """Verdicts (VIOLATED with a replayed counterexample, or UNKNOWN) for ``instances``, in order.

    Instances are grouped by network structure; each group is fuzzed in one batch, hits replayed
    through each instance's oracle.
    """
    outcomes = fuzz_grouped([i.problem for i in instances], budget, options, [i.oracle for i in instances])
    return [o.verdict for o in outcomes]
