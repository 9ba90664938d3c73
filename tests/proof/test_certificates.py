"""Certificates made by the searches, checked by the independent checker.

Every HOLDS of crown, alpha-crown and bab (each split mode and its variants) on the random
ReLU problems of the exact-MILP agreement tests carries a certificate the checker accepts; the
same certificates, mutated, are rejected with a reason; the CLI writes and re-checks them; a
rejected certificate turns a HOLDS into UNKNOWN.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from certify.budget import Budget
from certify.cli import main
from certify.engines.registry import make_engine
from certify.io.onnx_writer import network_to_onnx
from certify.problem import Problem
from certify.proof.certificate import Certificate, Edge, model_digest, problem_digest
from certify.proof.check import check_certificate
from certify.proof.confirm import confirm
from certify.verdict import Status, Verdict
from tests.engines.test_bab import FAST, HYBRID, PER_DISJUNCT, TIGHTEN_ALL, problems

#: (engine, options): every way the engines reach HOLDS with a certificate.
PROVERS = (
    ("crown", {}),
    ("alpha-crown", {"iterations": 10}),
    ("bab", {"mode": "input", **FAST}),
    ("bab", {"mode": "input", **FAST, **TIGHTEN_ALL}),
    ("bab", {"mode": "input", **FAST, **HYBRID}),
    ("bab", {"mode": "neuron", **FAST}),
    ("bab", {"mode": "neuron", **FAST, **PER_DISJUNCT}),
    ("alpha-crown", {"iterations": 10, "dtype": "float32"}),
    ("bab", {"mode": "input", **FAST, "dtype": "float32"}),
    ("bab", {"mode": "neuron", **FAST, "dtype": "float32"}),
)
IDS = ["crown", "alpha-crown", "input", "input-tightened", "input-hybrid", "neuron", "neuron-per-disjunct",
       "alpha-crown-float32", "input-float32", "neuron-float32"]


def _unsafe(problem: Problem) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(hs.A, hs.b) for hs in problem.unsafe]


def _model(problem: Problem) -> bytes:
    return network_to_onnx(problem.network).SerializeToString()


def _prove(problem: Problem, engine: str, options: dict) -> Verdict:
    return make_engine(engine, options).check(problem, Budget.seconds(30, proofs=True, checked=True))


def _check(cert: Certificate, model: bytes, problem: Problem) -> tuple[bool, str]:
    cert = dataclasses.replace(cert, model_sha256=model_digest(model))
    res = check_certificate(cert, model, problem.box.lower, problem.box.upper, _unsafe(problem))
    return res.valid, res.reason


@pytest.fixture(scope="module")
def holding() -> list[Problem]:
    """The random problems that hold (exact MILP labels)."""
    return [p for p, violated in problems(60) if not violated]


@pytest.mark.parametrize("engine,options", PROVERS, ids=IDS)
def test_every_holds_carries_a_certificate_the_checker_accepts(engine: str, options: dict,
                                                               holding: list[Problem]) -> None:
    proved = 0
    for problem in holding:
        verdict = _prove(problem, engine, options)
        assert verdict.status is not Status.VIOLATED, problem.name
        if verdict.status is not Status.HOLDS:
            continue
        proved += 1
        assert verdict.proof is not None, f"{engine} proved {problem.name} without a certificate"
        valid, reason = _check(verdict.proof, _model(problem), problem)
        assert valid, f"{engine} {options}: {problem.name}: {reason}"
    assert proved >= (3 if engine in ("crown", "alpha-crown") else len(holding) // 2), (engine, proved, len(holding))


@pytest.fixture(scope="module")
def deep(holding: list[Problem]) -> tuple[Problem, Certificate, Certificate]:
    """A problem with an input-split proof and a neuron-split proof, both with several leaves."""
    for problem in holding:
        v_in = _prove(problem, "bab", {"mode": "input", **FAST})
        v_ne = _prove(problem, "bab", {"mode": "neuron", **FAST})
        if v_in.proof is not None and v_ne.proof is not None and v_in.proof.leaves() >= 3 \
                and v_ne.proof.leaves() >= 3 and v_ne.proof.beta_index.size:
            return problem, v_in.proof, v_ne.proof
    pytest.fail("no random problem needs both trees")


def _without_leaf(cert: Certificate) -> Certificate:
    """The last leaf and its sibling's pairing broken: the leaf's closures dropped."""
    has_child = np.zeros(cert.n_nodes, dtype=bool)
    has_child[cert.parent[cert.parent >= 0]] = True
    leaf = int(np.nonzero(~has_child)[0][-1])
    keep = cert.closure_node != leaf
    ptrs = {}
    for ptr, names in (("weights_ptr", ("weights",)), ("alpha_ptr", ("alpha_index", "alpha")),
                       ("beta_ptr", ("beta_index", "beta_side", "beta_point", "beta"))):
        p = getattr(cert, ptr)
        take = np.concatenate([np.arange(p[i], p[i + 1]) for i in np.nonzero(keep)[0]]).astype(np.int64)
        for n in names:
            ptrs[n] = getattr(cert, n)[take]
        ptrs[ptr] = np.concatenate([[0], np.cumsum(np.diff(p)[keep])]).astype(np.int64)
    return dataclasses.replace(cert, closure_node=cert.closure_node[keep],
                               closure_disjunct=cert.closure_disjunct[keep], **ptrs)


def _gap(cert: Certificate) -> Certificate:
    """The HIGH half of the first input split moved up: the halves leave a gap."""
    point = cert.point.copy()
    high = int(np.nonzero(cert.edge == Edge.INPUT_HIGH)[0][0])
    point[high] += 0.25 * (abs(point[high]) + 1e-3)
    return dataclasses.replace(cert, point=point)


def _alpha_out_of_range(cert: Certificate) -> Certificate:
    alpha = cert.alpha.copy()
    alpha[0] = 1.5
    return dataclasses.replace(cert, alpha=alpha)


def _negative_beta(cert: Certificate) -> Certificate:
    beta = cert.beta.copy()
    beta[0] = -abs(beta[0]) - 0.5
    return dataclasses.replace(cert, beta=beta)


def test_mutated_certificates_are_rejected(deep: tuple[Problem, Certificate, Certificate]) -> None:
    problem, by_input, by_neuron = deep
    model = _model(problem)
    assert _check(by_input, model, problem)[0] and _check(by_neuron, model, problem)[0]
    with_alpha = next(c for c in (by_input, by_neuron) if c.alpha.size)
    cases = {
        "leaf removed": _without_leaf(by_neuron),
        "gap": _gap(by_input),
        "alpha 1.5": _alpha_out_of_range(with_alpha),
        "negative beta": _negative_beta(by_neuron),
    }
    for what, cert in cases.items():
        valid, reason = _check(cert, model, problem)
        assert not valid and reason, what
    # the model changed after the proof: one weight moved by 1e-3
    proto = network_to_onnx(problem.network)
    init = proto.graph.initializer[0]
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 1e-3
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    changed = proto.SerializeToString()
    stamped = dataclasses.replace(by_input, model_sha256=model_digest(model))
    res = check_certificate(stamped, changed, problem.box.lower, problem.box.upper, _unsafe(problem))
    assert not res.valid and "model" in res.reason
    # the spec's threshold tightened (every disjunct's right-hand side raised)
    harder = [(A, b + 1.0) for A, b in _unsafe(problem)]
    res = check_certificate(stamped, model, problem.box.lower, problem.box.upper, harder)
    assert not res.valid and "propert" in res.reason
    # ... and re-stamped for the harder spec, the bounds themselves no longer rule it out
    restamped = dataclasses.replace(stamped, problem_sha256=problem_digest(problem.box.lower, problem.box.upper,
                                                                           harder))
    res = check_certificate(restamped, model, problem.box.lower, problem.box.upper, harder)
    assert not res.valid and res.reason


def test_a_rejected_certificate_turns_holds_into_unknown(deep: tuple[Problem, Certificate, Certificate],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    problem, _, by_neuron = deep
    model = _model(problem)
    good = Verdict(Status.HOLDS, "bab", proof=by_neuron)
    kept = confirm(good, problem, model, True, float("inf"))
    assert kept.status is Status.HOLDS and kept.proof_note is not None and kept.proof_note.checked
    bad = Verdict(Status.HOLDS, "bab", proof=_negative_beta(by_neuron))
    out = confirm(bad, problem, model, True, float("inf"))
    assert out.status is Status.UNKNOWN and "logged as a bug" in out.reason
    assert any("BUG" in r.message for r in caplog.records)
    unproved = confirm(Verdict(Status.HOLDS, "milp"), problem, model, True, float("inf"))
    assert unproved.status is Status.HOLDS and not unproved.proof_note.checked
    assert "milp makes no certificate" in unproved.proof_note.reason


def test_check_writes_a_certificate_and_proof_check_confirms_it(deep: tuple[Problem, Certificate, Certificate],
                                                                tmp_path: Path) -> None:
    problem, _, _ = deep
    model_path = tmp_path / "net.onnx"
    onnx.save(network_to_onnx(problem.network), model_path)
    spec = tmp_path / "p.vnnlib"
    spec.write_text(_vnnlib(problem))
    cert_path, out = tmp_path / "p.npz", tmp_path / "out.json"
    code = main(["check", str(model_path), str(spec), "--engine", "bab", "--timeout", "30",
                 "--certificate", str(cert_path), "--json", str(out)])
    data = json.loads(out.read_text())
    assert code == 0 and data["status"] == "holds" and data["proof"]["checked"], data
    assert data["instances"][0]["proof"]["checked"]
    assert main(["proof", "check", str(cert_path), str(model_path), str(spec)]) == 0
    # the same certificate against a model with one weight changed: invalid (exit 3)
    proto = onnx.load(model_path)
    init = proto.graph.initializer[0]
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 1e-3
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    other = tmp_path / "changed.onnx"
    onnx.save(proto, other)
    assert main(["proof", "check", str(cert_path), str(other), str(spec)]) == 3
    # not a certificate: exit 2
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert main(["proof", "check", str(tmp_path / "junk.npz"), str(model_path), str(spec)]) == 2


def _num(x: float) -> str:
    return np.format_float_positional(float(x), unique=True, trim="0")


def _vnnlib(problem: Problem) -> str:
    """The problem as VNN-LIB (decimal literals that read back as the same float64 values)."""
    lo, hi = problem.box.lower.reshape(-1), problem.box.upper.reshape(-1)
    n_out = problem.unsafe[0].A.shape[1]
    lines = [f"(declare-const X_{i} Real)" for i in range(lo.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i in range(lo.size):
        lines += [f"(assert (>= X_{i} {_num(lo[i])}))", f"(assert (<= X_{i} {_num(hi[i])}))"]
    disj = []
    for hs in problem.unsafe:
        rows = []
        for a, b in zip(hs.A, hs.b):
            terms = " ".join(f"(* {_num(c)} Y_{j})" for j, c in enumerate(a))
            rows.append(f"(<= (+ {terms}) {_num(b)})")
        disj.append(f"(and {' '.join(rows)})")
    lines.append(f"(assert (or {' '.join(disj)}))")
    return "\n".join(lines) + "\n"


ACASXU = Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks" / "vnncomp2021" / "acasxu"


def test_tightened_sub_boxes_keep_the_bounds_their_first_closures_used() -> None:
    """ACAS Xu 1_1 prop_5: a sub-box whose first (CROWN) bound rules out a disjunct, then
    tightened by alpha-CROWN, bounds that disjunct *worse* with the tighter intermediate bounds
    (CROWN is not monotone in them).  The tightening hangs under a fork of the sub-box's node, so
    the checker recomputes the first closure with the bounds it was made with."""
    from certify.api import load_instances

    problem = load_instances(ACASXU / "ACASXU_run2a_1_1_batch_2000.onnx", ACASXU / "prop_5.vnnlib")[0].problem
    verdict = make_engine("bab", {}).check(problem, Budget.seconds(60, proofs=True))
    assert verdict.status is Status.HOLDS and verdict.proof is not None
    cert = verdict.proof
    forks = np.flatnonzero(cert.edge == Edge.SAME)
    assert np.isin(cert.slope_node, forks).any()  # the search tightened under forks
    model = (ACASXU / "ACASXU_run2a_1_1_batch_2000.onnx").read_bytes()
    valid, reason = _check(cert, model, problem)
    assert valid, reason


def test_float32_search_only_where_the_checker_rechecks(holding: list[Problem]) -> None:
    """A search asked for float32 rounds in float32 only when every HOLDS it makes is re-checked
    by the checker (proofs on, checked, a network the format covers); otherwise float64."""
    import torch

    from certify.bab.record import search_dtype
    from certify.network import Network, Node, Op

    net = holding[0].network
    sigmoid = Network((Node("x", Op.INPUT, (), (2,)),
                       Node("l", Op.LINEAR, ("x",), (2,), {"weight": torch.eye(2), "bias": torch.zeros(2)}),
                       Node("s", Op.SIGMOID, ("l",), (2,))), "s")
    f32, f64 = torch.float32, torch.float64
    checked = Budget.seconds(1, proofs=True, checked=True)
    assert search_dtype(f32, net, checked) is f32
    assert search_dtype(f32, net, Budget.seconds(1, proofs=True)) is f64  # recorded, not checked
    assert search_dtype(f32, net, Budget.seconds(1)) is f64
    assert search_dtype(f32, sigmoid, checked) is f64  # no certificate for this network
    assert search_dtype(f64, net, checked) is f64
