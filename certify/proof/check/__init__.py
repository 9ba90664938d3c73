"""The independent proof checker: re-checks a certificate (:mod:`certify.proof.certificate`)
against the model's ONNX bytes and the problem, in outward-rounded float64 arithmetic, so that
a HOLDS verdict rests on this package alone (numpy, onnx and the format module; nothing else
of certify).

Steps, each failing with a reason: the digests (a convenience: everything after is recomputed);
the model as a chain (:mod:`.chain`) that fits the certificate and the problem; the tree's
structure and the closures' parameters (:mod:`.tree`); then every region's bounds and every
closure's bound (:mod:`.propagate`, :mod:`.rounding`), which must be ``> 0``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from certify.proof.certificate import ARRAYS, Certificate, CertificateError, model_digest, problem_digest
from certify.proof.check.chain import Chain, ChainError, parse_chain
from certify.proof.check.rounding import fpu_ok
from certify.proof.check.tree import OUT_OF_TIME, objectives, parameters, plan, structure, walk

__all__ = ["Chain", "CheckResult", "check_certificate", "parse_chain"]


@dataclass(frozen=True)
class CheckResult:
    valid: bool
    reason: str  # "" when valid, else the first failure
    nodes: int
    leaves: int
    closures: int
    seconds: float
    out_of_time: bool = False  # the deadline passed before the check ended (then not valid)


def check_certificate(cert: Certificate, model: bytes, lower: np.ndarray, upper: np.ndarray,
                      unsafe: Sequence[tuple[np.ndarray, np.ndarray]], deadline: float | None = None) -> CheckResult:
    """Whether ``cert`` proves that no point of the box ``[lower, upper]`` (flattened) is in the
    union over ``k`` of ``{x : A_k y(x) <= b_k}`` for the model ``model`` (ONNX bytes).  With a
    ``deadline`` (``time.monotonic()``) the walk stops once it has passed."""
    t0 = time.perf_counter()
    with np.errstate(all="ignore"):
        reason = _check(cert, model, lower, upper, unsafe, deadline)
    try:
        nodes, leaves, closures = cert.n_nodes, cert.leaves(), cert.n_closures
    except (IndexError, ValueError):
        nodes, leaves, closures = cert.n_nodes, 0, cert.n_closures
    return CheckResult(not reason, reason, nodes, leaves, closures, time.perf_counter() - t0, reason == OUT_OF_TIME)


def _check(cert: Certificate, model: bytes, lower: np.ndarray, upper: np.ndarray,
           unsafe: Sequence[tuple[np.ndarray, np.ndarray]], deadline: float | None) -> str:
    if not fpu_ok():
        return "the processor does not round to nearest with subnormals; the checker's bounds assume it"
    for name, (dtype, ndim) in ARRAYS.items():
        a = getattr(cert, name)
        if not isinstance(a, np.ndarray) or a.dtype != np.dtype(dtype) or a.ndim != ndim:
            return f"the certificate's array {name} is not {np.dtype(dtype)}[{ndim}d]"
    try:
        cert.check_shapes("the certificate")
    except CertificateError as e:
        return str(e)
    if cert.problem_sha256 != problem_digest(lower, upper, unsafe):
        return "the certificate was made for another property (problem digest differs)"
    if cert.model_sha256 != model_digest(model):
        return "the certificate was made for another model (model digest differs)"
    try:
        chain = parse_chain(model)
    except ChainError as e:
        return f"model: {e}"
    lower = np.asarray(lower, dtype=np.float64).reshape(-1)
    upper = np.asarray(upper, dtype=np.float64).reshape(-1)
    unsafe = [(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)) for a, b in unsafe]
    rows = np.array([a.shape[0] if a.ndim == 2 else -1 for a, _ in unsafe], dtype=np.int64)
    sizes = chain.relu_sizes
    checks = (
        (tuple(cert.relu_sizes.tolist()) != sizes,
         f"the model's ReLU layers have sizes {list(sizes)}, the certificate's {cert.relu_sizes.tolist()}"),
        (lower.shape != upper.shape or lower.shape[0] != chain.sizes[0],
         f"the box has {lower.shape[0]} and {upper.shape[0]} bounds; the model has {chain.sizes[0]} inputs"),
        (not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))), "the box is not finite"),
        (any(a.ndim != 2 or a.shape[1] != chain.sizes[-1] or b.shape != (a.shape[0],) or
             not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))) for a, b in unsafe),
         f"a disjunct is not finite A [rows, {chain.sizes[-1]}] with b [rows]"),
        (rows.tolist() != cert.rows_per_disjunct.tolist(),
         f"the unsafe set has rows {rows.tolist()} per disjunct, the certificate {cert.rows_per_disjunct.tolist()}"),
    )
    for bad, why in checks:
        if bad:
            return why
    reason = structure(cert, chain.sizes[0], int(sum(sizes))) or parameters(cert, rows)
    if reason:
        return reason
    pl, reason = plan(cert, len(unsafe))
    if reason:
        return reason
    return walk(cert, chain, lower, upper, pl, objectives(cert, unsafe, chain.sizes[-1]), deadline)
