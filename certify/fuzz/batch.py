"""The batch fuzzer: many problems over one network, one tensor batch of lanes.

Each of the ``B`` lanes works on one problem in *episodes*.  An episode starts from a point
chosen by a strategy (``pgd``: an energy-picked seed, randomly perturbed by ACT's adaptive
step; ``corners``: a box vertex; ``uniform``: a uniform sample; ``boundary``: the seed with
some coordinates pushed to the bound its gradient points to) and then descends the margin by
signed-gradient steps of ACT's per-dimension size (with its own base, ``descent_s0``), decaying over the episode's
``pgd_steps`` steps.  Every step is one forward and one backward pass of the whole batch.
Episodes end on a common beat (every ``reset_every`` steps, with staggered lengths) so the
bookkeeping is amortised; the last point of an episode joins its problem's seed pool.  On
low-dimensional inputs episodes are one step long (see
:func:`certify.fuzz.options.auto_episode`): every pass evaluates fresh starts and feeds the
pools, and the search is ACT's energy-guided mutation of seeds without descent.  Lanes keep
their problem until it is solved, then move to the unsolved problems round-robin.  The batch
starts at ``first_lanes`` lanes per problem and doubles every episode up to its full size.

A lane whose margin drops below zero is a *hit*: it is checked in float64 on the IR or, when
an oracle is given, replayed in onnxruntime, before the problem counts as falsified; a hit
that fails is logged as a bug and the search goes on.  The lanes compute in float32; for a box
that holds no float32 point the hit is clipped into the box in float64 before it is checked
(such boxes are replayed in float64, see :mod:`certify.replay`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from certify.budget import Budget
from certify.fuzz import strategies as st
from certify.fuzz.objective import LaneObjective, Objective
from certify.fuzz.options import FuzzOptions
from certify.fuzz.pool import SeedPool
from certify.fuzz.rng import Rng
from certify.fuzz.stack import StackedNetwork, structure_key
from certify.network import Network
from certify.problem import Problem
from certify.replay import Oracle, replay
from certify.verdict import Counterexample, Status, Verdict, unknown

log = logging.getLogger(__name__)

ENGINE = "fuzz"


@dataclass(frozen=True, slots=True)
class FuzzOutcome:
    """What the fuzzer found for problem ``index``.

    ``verdict``: VIOLATED (with the counterexample; ``replayed`` when an oracle was given) or
    UNKNOWN; ``first_hit_seconds``: wall time from the start to the falsification (None if
    none); ``samples``: lane-samples spent on this problem.
    """

    index: int
    verdict: Verdict
    first_hit_seconds: float | None
    samples: int


@dataclass(frozen=True, slots=True)
class FuzzStats:
    """Totals of one :class:`BatchFuzzer`: steps (forward+backward passes of the batch),
    lane-samples, and wall seconds spent stepping."""

    steps: int
    samples: int
    seconds: float


class BatchFuzzer:
    """Resumable batch fuzzing state for ``problems`` over one network, or over several
    networks of identical structure (:func:`certify.fuzz.stack.structure_key`), which are
    stacked so that one pass serves all of them.

    Lanes form one block per network with unsolved problems; a block's lanes serve its
    network's problems round-robin.  When every problem of a network is solved, the blocks are
    laid out again over the remaining networks.  ``start``: the ``time.monotonic()`` instant
    that times to first falsification count from.
    """

    def __init__(self, problems: Sequence[Problem], options: FuzzOptions, device: str = "cpu",
                 oracle_for: Callable[[int], Oracle] | None = None, start: float | None = None) -> None:
        if not problems:
            raise ValueError("BatchFuzzer needs at least one problem")
        self.problems = tuple(problems)
        self.options = options
        self.oracle_for = oracle_for
        self.start = time.monotonic() if start is None else start
        dev = torch.device(device)
        self.device = dev
        nets: dict[int, int] = {}
        self.networks: list[Network] = []
        for p in problems:
            if id(p.network) not in nets:
                nets[id(p.network)] = len(self.networks)
                self.networks.append(p.network)
        key = structure_key(self.networks[0])
        if any(structure_key(n) != key for n in self.networks[1:]):
            raise ValueError("the problems' networks differ in structure; group them with "
                             "certify.fuzz.group_by_structure first")
        self.net_of = [nets[id(p.network)] for p in problems]
        self.max_batch = options.batch_for(self.networks[0], len(problems))
        self.batch = self.max_batch if options.first_lanes is None else \
            min(self.max_batch, max(len(self.networks), options.first_lanes * len(problems)))
        self._net64: dict[int, Network] = {}
        self._stack = StackedNetwork(self.networks, torch.float32, dev)  # every network, once
        self.obj = Objective.of(problems, torch.float32, dev)
        self.rng = Rng(options.seed, dev)
        P = len(problems)
        self.pool = SeedPool.start(self.obj.lower, self.obj.upper, options.pool, self.rng)
        # Every episode has the same length, so weights are also shares of lane-samples.
        self.weights = torch.tensor(options.weights.as_tuple(), dtype=torch.float32, device=dev)
        episode = options.episode_for(self.networks[0])
        self.beat = min(options.reset_every, episode)
        self.length = self.beat * -(-episode // self.beat)  # a multiple of the beat
        # per problem
        self.solved = torch.zeros(P, dtype=torch.bool, device=dev)
        self.found: list[Counterexample | None] = [None] * P
        self.hit_seconds: list[float | None] = [None] * P
        self.per_problem = torch.zeros(P, dtype=torch.long, device=dev)
        self.failed_replays = 0
        self.steps = 0
        self._grown_at = 0
        self._held: list[tuple[torch.Tensor, ...]] = []  # one-step passes' results, see _flush
        self.samples = 0
        self.seconds = 0.0
        self._layout()

    def _layout(self) -> None:
        """(Re)build the lane blocks over the networks that still have unsolved problems and
        start a fresh episode on every lane (the seed pools are kept)."""
        self._flush()
        dev = self.device
        todo: dict[int, list[int]] = {}
        for i, net in enumerate(self.net_of):
            if self.found[i] is None:
                todo.setdefault(net, []).append(i)
        self.block_nets = sorted(todo)
        self.block_problems = [todo[g] for g in self.block_nets]
        G = len(self.block_nets)
        self.L = max(1, self.batch // G)
        self.B = G * self.L
        self.rotate = any(len(ps) > self.L for ps in self.block_problems)
        self.ptrs = [self.L % len(ps) for ps in self.block_problems]
        self.net = self._stack.subset(self.block_nets)
        pid = [ps[j % len(ps)] for ps in self.block_problems for j in range(self.L)]
        self.pid = torch.tensor(pid, dtype=torch.long, device=dev)
        self.lanes = LaneObjective.gather(self.obj, self.pid)
        self._count_lanes()
        self.x = self.lanes.lower.clone()
        self.step_size = torch.zeros_like(self.x)
        self.left = torch.zeros(self.B, dtype=torch.long, device=dev)
        self._staggered = False
        self._queue: list[torch.Tensor] = []
        self._reset(torch.arange(self.B, device=dev), self.x, reassign=False)

    # -- public -----------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return all(c is not None for c in self.found)

    @property
    def exhausted(self) -> bool:
        """Whether ``options.max_samples`` lane-samples are spent."""
        return self.options.max_samples is not None and self.samples >= self.options.max_samples

    @property
    def stats(self) -> FuzzStats:
        return FuzzStats(self.steps, self.samples, self.seconds)

    def run(self, deadline: float, max_steps: int | None = None) -> None:
        """Step until every problem is falsified, ``deadline`` (monotonic) passes, ``max_steps``
        steps have run or ``options.max_samples`` lane-samples are spent.

        While the batch is below its full size it doubles after every episode length of steps
        (the warm-up of ``options.first_lanes``)."""
        t0 = time.monotonic()
        n = 0
        with torch.no_grad():
            while (not self.done and not self.exhausted and (max_steps is None or n < max_steps)
                   and time.monotonic() < deadline):
                if self.batch < self.max_batch and self.steps - self._grown_at >= self.length:
                    self.batch = min(self.max_batch, 2 * self.batch)
                    self._grown_at = self.steps
                    self._layout()
                self._step()
                n += 1
        self.seconds += time.monotonic() - t0

    def outcomes(self) -> list[FuzzOutcome]:
        samples = self.per_problem.tolist()
        out = []
        for i, cex in enumerate(self.found):
            if cex is not None:
                seconds = float(self.hit_seconds[i] or 0.0)
                verdict = Verdict(Status.VIOLATED, engine=ENGINE, seconds=seconds, counterexample=cex,
                                  stats={"samples": samples[i]})
                out.append(FuzzOutcome(i, verdict, seconds, samples[i]))
            else:
                verdict = unknown(ENGINE, f"no counterexample found in {samples[i]} samples",
                                  self.seconds, samples=samples[i])
                out.append(FuzzOutcome(i, verdict, None, samples[i]))
        return out

    # -- one forward + backward pass ----------------------------------------------------
    def _step(self) -> None:
        B = self.B
        x = self.x.detach().requires_grad_(True)
        with torch.enable_grad():
            y = self.net(x.view(B, *self.net.input_shape)).reshape(B, -1)
            m, slope = self.lanes.margin_and_slope(y.detach())
            # (y * slope).sum() rather than grad_outputs=slope: the latter's shape check imports
            # sympy on first use (a second of start-up)
            (g,) = torch.autograd.grad((y * slope).sum(), x)
        x = x.detach()
        self.steps += 1
        self.samples += B
        self.per_problem += self._lanes_per_problem
        hit = m < 0
        solved_now = False
        if bool(hit.any()):
            m, solved_now = self._confirm(hit, m, x)
            if solved_now and not self.done and any(
                    all(self.found[i] is not None for i in ps) for ps in self.block_problems):
                self._layout()  # a network is finished: give its lanes to the others
                return
        if self.length == 1:  # one-step episodes: every lane restarts
            self._held.append((self.pid, x, g, m))
            if not self.done:
                if not self._queue:
                    self._refill()
                self.x = self._queue.pop()
            return
        self.left -= 1
        if self.steps % self.beat == 0 or solved_now:
            done = (self.left <= 0) | self.solved[self.pid]
            r = done.nonzero().squeeze(1) if bool(done.any()) else None
            if r is not None:  # before the step below overwrites ``x`` and ``g``
                self.pool.insert(self.pid[r], x, g, m[r], rows=r)
        else:
            r = None
        decay = 0.1 + 0.9 * self.left.clamp(min=0).to(x.dtype) / self.length
        self.x = st.pgd_(x, g, self.step_size, self.lanes.lower, self.lanes.upper, decay)
        if r is not None and not self.done:
            self._reset(r, self.x)

    def _reset(self, lanes: torch.Tensor, x_next: torch.Tensor, reassign: bool = True) -> None:
        """Start a new episode on ``lanes``, moving lanes of solved problems on first when
        ``reassign`` (:meth:`_move_on`).  Writes the lanes' first points into ``x_next``; one-step
        episodes skip the step sizes, which only descent steps use (and draw their later starts
        in :meth:`_refill`)."""
        if reassign:
            self._move_on(lanes)
        order, start, picks, lo, hi = self._starts(self.pid[lanes])
        lanes = lanes[order]
        if self._staggered:
            self.left[lanes] = self.length
        else:  # the first episodes end on staggered beats, so resets spread evenly over time
            beats = self.length // self.beat
            phase = (self.rng.uniform((lanes.shape[0],)).to(lanes.device) * beats).long().clamp_(max=beats - 1)
            self.left[lanes] = self.beat * (1 + phase) - self.steps % self.beat
            self._staggered = True
        x_next.index_copy_(0, lanes, start)
        if self.length > 1:
            self.step_size.index_copy_(0, lanes, st.act_step(start, lo, hi, st.act_scale(self.options.descent_s0, picks)))

    def _refill(self) -> None:
        """One-step episodes: draw the starts of the next ``reset_every`` passes at once (one
        pass while the batch is still growing), amortising the bookkeeping as episode beats do.
        The seeds are picked from the pools as they are now; the passes' own results join the
        pools as they come."""
        passes = self.options.reset_every if self.batch >= self.max_batch else 1
        self._flush()
        self._move_on(torch.arange(self.B, device=self.device))
        order, start, *_ = self._starts(self.pid.repeat(passes))
        x = torch.empty_like(start).index_copy_(0, order, start)
        self._queue = list(x.view(passes, self.B, -1).unbind(0))

    def _flush(self) -> None:
        """Insert the held results of one-step passes into the pools, in one go.  The pools are
        only read when starts are drawn, so holding the results until then changes nothing but
        the cost: one insertion per refill instead of one per pass."""
        if self._held:
            pid, x, g, m = (torch.cat(parts) for parts in zip(*self._held))
            self._held = []
            self.pool.insert(pid, x, g, m)

    def _starts(self, pid: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Episode starts for lanes of problems ``pid: [R]``: a strategy drawn by weight, applied
        to an energy-picked seed.  The lanes are sorted by strategy before anything is gathered
        (:func:`certify.fuzz.strategies.sorted_starts`); returns that order ``[R]`` and, in it,
        the starts ``[R, n]``, how often their seeds had been picked before ``[R]`` (0 for
        ``uniform`` starts) and the lanes' boxes ``[R, n]`` (lower, upper)."""
        order, counts = self.rng.grouped(self.weights, pid.shape[0])
        pid = pid[order]
        seeded = pid[counts[st.UNIFORM]:]  # uniform starts pick no seed
        seed, grad, before = self.pool.pick(seeded, self.rng)
        scale = st.act_scale(self.options.s0, before)
        lo, hi = self.obj.lower.index_select(0, pid), self.obj.upper.index_select(0, pid)
        start = st.sorted_starts(counts, seed, grad, scale, lo, hi, self.rng)
        return order, start, torch.cat([before.new_zeros(counts[st.UNIFORM]), before]), lo, hi

    def _move_on(self, lanes: torch.Tensor) -> None:
        """Lanes of solved problems among ``lanes`` (all of them, when a block has more problems
        than lanes) move on to their block's next unsolved problems, round-robin."""
        move = lanes if self.rotate else lanes[self.solved[self.pid[lanes]]]
        if move.numel():
            self._reassign(move)

    def _count_lanes(self) -> None:
        self._lanes_per_problem = torch.bincount(self.pid, minlength=len(self.problems))

    def _reassign(self, lanes: torch.Tensor) -> None:
        """Point ``lanes`` at the next unsolved problems of their blocks."""
        blocks = (lanes // self.L).tolist()
        new = []
        for b in blocks:
            ps = self.block_problems[b]
            for _ in range(len(ps)):
                p = ps[self.ptrs[b]]
                self.ptrs[b] = (self.ptrs[b] + 1) % len(ps)
                if self.found[p] is None:
                    break
            new.append(p)
        pid = torch.tensor(new, dtype=torch.long, device=self.device)
        self.pid[lanes] = pid
        self.lanes.assign(lanes, self.obj, pid)
        self._count_lanes()

    # -- hits ---------------------------------------------------------------------------
    def _confirm(self, hit: torch.Tensor, m: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Verify the best hit of each unsolved problem; returns ``m`` with failed hits set to
        ``inf`` (their lanes end their episode) and whether a problem was solved."""
        lanes = hit.nonzero().squeeze(1)
        pids = self.pid[lanes].tolist()
        margins = m[lanes].tolist()
        best: dict[int, tuple[float, int]] = {}
        for lane, p, mv in zip(lanes.tolist(), pids, margins):
            if self.found[p] is None and (p not in best or mv < best[p][0]):
                best[p] = (mv, lane)
        if not best:
            return m, False
        m = m.clone()
        changed = False
        for p, (mv, lane) in best.items():
            cex = self._verify(p, x[lane], mv)
            if cex is None:
                m[lane] = math.inf  # not a seed worth keeping; the lane moves on
                self.left[lane] = 0
                continue
            self.found[p] = cex
            self.hit_seconds[p] = time.monotonic() - self.start
            self.solved[p] = True
            changed = True
        return m, changed

    def _verify(self, p: int, x: torch.Tensor, margin: float) -> Counterexample | None:
        problem = self.problems[p]
        # a copy: the next step overwrites ``x`` in place
        x32 = x.to("cpu", torch.float32, copy=True).numpy().reshape(problem.box.shape)
        if self.oracle_for is not None:
            cex = replay(self.oracle_for(p), problem, x32)
            if cex is None:
                self.failed_replays += 1
                log.warning("fuzz: candidate for problem %r has IR margin %.3g but does not replay in the "
                            "oracle (IR/oracle mismatch: a bug)", problem.name or p, margin)
            return cex
        net = self.net_of[p]
        if net not in self._net64:
            self._net64[net] = problem.network.to(dtype=torch.float64, device="cpu")
        # A box without float32 points (an input fixed to 0.1, say) is collapsed to one float32
        # value just outside it (float32_box); such boxes are replayed in float64, so the hit
        # is moved into the box in float64 (the oracle's replay does the same).
        xc = x32 if problem.box.holds_float32_point else problem.box.clip(x32)
        y = self._net64[net](torch.from_numpy(xc.astype(np.float64))[None]).reshape(-1).numpy()
        if problem.violation(y) <= 0.0:
            return Counterexample(x=xc, y=y, replayed=False)
        self.failed_replays += 1
        log.warning("fuzz: candidate for problem %r has float32 margin %.3g but float64 violation %.3g",
                    problem.name or p, margin, problem.violation(y))
        return None


def fuzz_many(problems: Sequence[Problem], budget: Budget, options: FuzzOptions,
              oracle_for: Callable[[int], Oracle] | None = None) -> list[FuzzOutcome]:
    """Fuzz ``problems`` (one network, or networks of one structure) in one batch until all are falsified, the
    budget's deadline passes or ``options.max_samples`` lane-samples are spent.

    ``oracle_for(i)`` gives the oracle that replays problem ``i``'s hits; without it hits are
    checked in float64 on the IR and reported with ``replayed=False``.
    """
    fuzzer = BatchFuzzer(problems, options, budget.device, oracle_for)
    fuzzer.run(budget.deadline)
    return fuzzer.outcomes()
