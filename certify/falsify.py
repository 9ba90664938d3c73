"""Does a candidate input violate the property, in the precision its replay will use?

One place answers it for every engine that searches for counterexamples (``bab``, ``milp``,
``smt``, ``sample``; the batch fuzzer checks its hits with :func:`check_candidate`):

* :func:`check_candidate`: one input, on the IR in float64, snapped into the box as the replay
  will (:meth:`certify.problem.Box.candidate`);
* :class:`Falsifier`: many inputs at once (torch); a point counts only when it violates in
  float64 *and* in float32 (the precision onnxruntime replays in), so a VIOLATED verdict is
  not lost to rounding at replay; for a box with no float32 point (an input fixed to a value
  such as 0.1), replayed in float64, float64 alone decides;
* :func:`pgd`: signed-gradient descent on the violation inside boxes (branch and bound's
  attacks; the batch fuzzer runs its own, batched across problems).

The portfolio replays every counterexample in onnxruntime before it is reported.
"""

from __future__ import annotations

import numpy as np
import torch

from certify.budget import Budget
from certify.network import Network
from certify.problem import Problem
from certify.spec_matrix import SpecMatrix
from certify.verdict import Counterexample

__all__ = ["Falsifier", "check_candidate", "pgd"]


def check_candidate(problem: Problem, x: np.ndarray) -> Counterexample | None:
    """``x`` as the replay will take it if the float64 forward pass of the IR violates the
    problem there (``replayed=False``: the portfolio replays it)."""
    xc = problem.box.candidate(x)
    if xc is None:
        return None
    net = problem.network.to(dtype=torch.float64)
    with torch.no_grad():
        y = net.forward(torch.as_tensor(xc.astype(np.float64))[None])[0].numpy().reshape(-1)
    if problem.violation(y) <= 0.0:
        return Counterexample(x=xc, y=y, replayed=False)
    return None


class Falsifier:
    """Checks batches of candidate inputs against the unsafe set on the concrete network
    (``net`` in the search's dtype and device; see the module docstring for the precisions)."""

    def __init__(self, problem: Problem, net: Network, spec: SpecMatrix) -> None:
        self.net = net
        self.float32 = problem.box.holds_float32_point
        self.net32 = problem.network.to(dtype=torch.float32, device=net.device)
        self.spec = spec
        self.lo = torch.as_tensor(np.array(problem.box.lower), dtype=net.dtype, device=net.device).reshape(-1)
        self.hi = torch.as_tensor(np.array(problem.box.upper), dtype=net.dtype, device=net.device).reshape(-1)
        self.in_shape = net.input_shape

    def violation(self, net: Network, x: torch.Tensor) -> torch.Tensor:
        """:meth:`SpecMatrix.violation` of ``net``'s outputs at the flat points ``x: [N, n]``."""
        return self.spec.violation(net.forward(x.reshape(-1, *self.in_shape).to(net.dtype)).flatten(1))

    def search(self, x: torch.Tensor) -> Counterexample | None:
        """The most violating of the points ``x: [N, n_in]`` (flat), if one violates."""
        if x.shape[0] == 0:
            return None
        with torch.no_grad():
            x = torch.minimum(torch.maximum(x, self.lo), self.hi)
            v = self.violation(self.net, x)
            cand = (v < 0).nonzero().flatten()
            if cand.numel() == 0:
                return None
            cand = cand[torch.argsort(v[cand])][:64]
            if not self.float32:  # replayed in float64: the float64 violation is the one that counts
                xb = x[cand[0]].reshape(1, *self.in_shape)
                y = self.net.forward(xb)
                return Counterexample(xb[0].cpu().numpy().astype(np.float64), y[0].cpu().numpy().astype(np.float64))
            v32 = self.violation(self.net32, x[cand].to(torch.float32))
            ok = (v32 < 0).nonzero().flatten()
            if ok.numel() == 0:
                return None
            xb = x[cand[ok[0]]].reshape(1, *self.in_shape)
            y = self.net32.forward(xb.to(torch.float32))
        return Counterexample(xb[0].cpu().numpy().astype(np.float64), y[0].cpu().numpy().astype(np.float64))


def pgd(falsifier: Falsifier, lo: torch.Tensor, hi: torch.Tensor, start: torch.Tensor, steps: int,
        shrink: float = 0.7, every: int = 1, budget: Budget | None = None,
        ) -> tuple[torch.Tensor, Counterexample | None]:
    """Signed-gradient descent on the violation from ``start: [N, n]`` (flat), each point kept in
    its box ``lo, hi`` (``[N, n]`` or ``[n]``), steps of ``(hi - lo) / 4`` shrunk by ``shrink``
    every ``every`` steps.  Returns the final points and, as soon as one violates and
    :meth:`Falsifier.search` confirms it, the counterexample."""
    step = (hi - lo) / 4
    x = start.clone()
    for k in range(steps):
        if budget is not None and budget.expired:
            break
        with torch.enable_grad():
            xv = x.detach().requires_grad_(True)
            v = falsifier.violation(falsifier.net, xv)
            (g,) = torch.autograd.grad(v.sum(), xv)
        with torch.no_grad():
            if bool((v < 0).any()):
                cex = falsifier.search(xv.detach())
                if cex is not None:
                    return xv.detach(), cex
            x = torch.minimum(torch.maximum(x - step * g.sign(), lo), hi)
            if (k + 1) % every == 0:
                step = step * shrink
    return x.detach(), None
