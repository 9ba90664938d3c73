"""Clean, PGD and certified accuracy of a classifier (ONNX, read into certify's IR).

Certification goes through certify's own engines (:func:`certify_sample`): one robustness
:class:`~certify.problem.Problem` per sample, tried cheapest-first (``ibp``, ``crown``,
``alpha-crown``, optionally ``bab``) under a per-sample time budget.  Samples that are
misclassified or broken by PGD are not sent to the engines (they cannot be certified).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from certify.budget import Budget
from certify.engines.registry import make_engine
from certify.lower import margin_halfspaces, robustness_box
from certify.network import Network
from certify.problem import Problem
from certify.verdict import Status

DEFAULT_ENGINES: tuple[str, ...] = ("ibp", "crown", "alpha-crown")


@dataclass(frozen=True, slots=True)
class EvalOptions:
    engines: tuple[str, ...] = DEFAULT_ENGINES
    seconds_per_sample: float = 10.0
    pgd_steps: int = 20
    batch_size: int = 200
    domain: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True, slots=True)
class Evaluation:
    n: int
    eps: float
    clean: float
    pgd: float
    certified: float
    seconds: float
    certified_by: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        return (f"n={self.n} eps={self.eps:g}: clean {100 * self.clean:.2f}%  "
                f"pgd {100 * self.pgd:.2f}%  certified {100 * self.certified:.2f}%")


def robustness_problem(network: Network, x: np.ndarray, label: int, eps: float,
                       domain: tuple[float, float], name: str = "") -> Problem:
    """Is some ``x'`` in the eps-ball around ``x`` (clipped to ``domain``) not classified ``label``?"""
    n_out = network.output_size
    return Problem(network, robustness_box(x.astype(np.float64), eps, domain),
                   margin_halfspaces(label, [j for j in range(n_out) if j != label], n_out), name=name)


def certify_sample(network: Network, x: np.ndarray, label: int, eps: float, options: EvalOptions) -> str | None:
    """The engine that proved ``argmax net(x') == label`` on the eps-ball around ``x``, or None."""
    problem = robustness_problem(network, x, label, eps, options.domain)
    budget = Budget.seconds(options.seconds_per_sample)
    for name in options.engines:
        if budget.expired:
            break
        verdict = make_engine(name).check(problem, budget)
        if verdict.status is Status.HOLDS:
            return name
    return None


def ibp_prefilter(network: Network, x: Tensor, y: Tensor, eps: float,
                  domain: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """``[B]`` bool: proved by batched IBP (certify.bounds, float64), the cheapest engine."""
    from certify.bounds import ibp, ibp_objective, input_bounds
    from certify.train.loss import spec_matrix

    net = network.to(dtype=torch.float64)
    x64 = x.double()
    box = input_bounds((x64 - eps).clamp(*domain), (x64 + eps).clamp(*domain))
    with torch.no_grad():
        lower = ibp_objective(net, ibp(net, box), spec_matrix(y, network.output_size, torch.float64))
    return (lower.scatter(1, y.unsqueeze(1), float("inf")) > 0).all(1)


def pgd_attack(forward, x: Tensor, y: Tensor, eps: float, steps: int = 20,
               domain: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """L-inf PGD on the margin loss from a random start -> adversarial inputs ``[B, *in]``."""
    if eps == 0:
        return x
    gen = torch.Generator(device=x.device).manual_seed(0)
    x_adv = (x + (torch.rand(x.shape, generator=gen, device=x.device) * 2 - 1) * eps).clamp(*domain)
    step = 2.5 * eps / steps
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        out = forward(x_adv)
        true = out.gather(1, y.unsqueeze(1)).squeeze(1)
        other = out.scatter(1, y.unsqueeze(1), float("-inf")).max(1).values
        (grad,) = torch.autograd.grad((other - true).sum(), x_adv)
        x_adv = torch.minimum(torch.maximum(x_adv + step * grad.sign(), x - eps), x + eps).clamp(*domain)
    return x_adv.detach()


def evaluate(network: Network, x: Tensor, y: Tensor, eps: float, options: EvalOptions = EvalOptions()
             ) -> Evaluation:
    """Accuracies over all of ``x`` ``[N, *in]`` (pixels in ``options.domain``), ``y`` ``[N]``."""
    t0 = time.perf_counter()
    net = network.to(dtype=torch.float32)
    clean = pgd = cert = 0
    by: dict[str, int] = {}
    for i in range(0, len(x), options.batch_size):
        xb, yb = x[i:i + options.batch_size].float(), y[i:i + options.batch_size]
        with torch.no_grad():
            ok = net(xb).flatten(1).argmax(1) == yb
        adv = pgd_attack(lambda t: net(t).flatten(1), xb, yb, eps, options.pgd_steps, options.domain)
        with torch.no_grad():
            robust = ok & (net(adv).flatten(1).argmax(1) == yb)
        clean += int(ok.sum())
        pgd += int(robust.sum())
        if "ibp" in options.engines:
            proved = robust & ibp_prefilter(network, xb, yb, eps, options.domain)
            if proved.any():
                cert += int(proved.sum())
                by["ibp"] = by.get("ibp", 0) + int(proved.sum())
            robust = robust & ~proved
        for k in robust.nonzero().flatten().tolist():
            engine = certify_sample(network, xb[k].numpy(), int(yb[k]), eps, options)
            if engine is not None:
                cert += 1
                by[engine] = by.get(engine, 0) + 1
    n = max(len(x), 1)
    return Evaluation(len(x), eps, clean / n, pgd / n, cert / n, time.perf_counter() - t0, by)


def evaluate_onnx(path: str | Path, x: Tensor, y: Tensor, eps: float, options: EvalOptions = EvalOptions()
                  ) -> Evaluation:
    from certify.io.onnx import load_onnx

    return evaluate(load_onnx(path), x, y, eps, options)


def parse_engines(text: str) -> tuple[str, ...]:
    return tuple(e.strip() for e in text.split(",") if e.strip())


__all__: Sequence[str] = ["EvalOptions", "Evaluation", "certify_sample", "robustness_problem", "evaluate", "evaluate_onnx", "pgd_attack"]
