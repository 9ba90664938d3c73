"""A HOLDS verdict's certificate, stamped with the model it is for, written where asked, and
re-checked by the independent checker (:mod:`certify.proof.check`) before it is reported.

A certificate the checker rejects turns the HOLDS into UNKNOWN and is logged as a bug: the
search claimed a proof the checker could not confirm.  A HOLDS without a certificate (an engine
that makes none, a network or a property the format does not cover) is reported with the
reason, unchecked.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from certify.bab.record import uncertifiable
from certify.problem import Problem
from certify.proof.certificate import model_digest
from certify.verdict import ProofNote, Status, Verdict

log = logging.getLogger(__name__)

__all__ = ["confirm"]

#: Checking stops this many seconds before the deadline (then the HOLDS stays unchecked).
DEADLINE_MARGIN = 0.05


def confirm(verdict: Verdict, problem: Problem, model: bytes | None, check: bool, deadline: float,
            write: Path | None = None) -> Verdict:
    """``verdict`` with its proof stamped with ``model``'s digest, written to ``write`` and, with
    ``check``, confirmed by the checker before ``deadline`` (``time.monotonic()``).  ``model`` is
    the ONNX bytes the problem's network is exactly (None when the property's lowering changed
    the network: no certificate applies)."""
    if verdict.status is not Status.HOLDS:
        return verdict
    if model is None:
        return replace(verdict, proof=None, proof_note=ProofNote(
            False, "the property's lowering changes the network; certificates cover the model as is"))
    if verdict.proof is None:
        why = uncertifiable(problem.network) or f"engine {verdict.engine} makes no certificate"
        return replace(verdict, proof_note=ProofNote(False, why))
    cert = replace(verdict.proof, model_sha256=model_digest(model))
    if write is not None:
        cert.save(write)
    if not check:
        return replace(verdict, proof=cert, proof_note=ProofNote(False, "not checked (proof checking is off)",
                                                                 cert.n_nodes))
    from certify.proof.check import check_certificate

    start = time.monotonic()
    result = check_certificate(cert, model, problem.box.lower, problem.box.upper,
                               [(hs.A, hs.b) for hs in problem.unsafe], deadline=deadline - DEADLINE_MARGIN)
    seconds = time.monotonic() - start
    if result.valid:
        return replace(verdict, proof=cert, proof_note=ProofNote(True, "", cert.n_nodes, seconds))
    if result.out_of_time:
        return replace(verdict, proof=cert, proof_note=ProofNote(False, "not checked: no time left", cert.n_nodes,
                                                                 seconds))
    log.error("BUG: the proof checker rejected %s's certificate for %s: %s", verdict.engine,
              problem.name or "the problem", result.reason)
    return replace(verdict, status=Status.UNKNOWN, proof=None,
                   reason=f"{verdict.engine} proved it, but the proof checker rejected its certificate: "
                          f"{result.reason} (logged as a bug)",
                   proof_note=ProofNote(False, result.reason, cert.n_nodes, seconds))
