"""The library's front door: load a model and a spec, check it, get one typed result.

>>> from certify.api import check, CheckOptions
>>> result = check("model.onnx", "spec.vnnlib", CheckOptions(timeout=60))   # doctest: +SKIP
>>> result.status                                                           # doctest: +SKIP
<Status.HOLDS: 'holds'>
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from certify.budget import Budget
from certify.errors import SpecError
from certify.instance import Instance
from certify.io.files import is_gzipped, plain_name, resolve
from certify.network import Network
from certify.portfolio import Preset, load_preset, run_portfolio, single_engine
from certify.replay import OnnxOracle
from certify.verdict import Counterexample, Status, Verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CheckOptions:
    """``proofs``: ``check`` (every HOLDS comes with a certificate the independent checker
    confirms before it is reported; a rejected one becomes UNKNOWN), ``record`` (certificates
    made, not checked) or ``off``; ``certificates``: where to write them (a file for a spec of
    one instance, else ``<stem>.<k><suffix>`` beside it)."""

    solver: str = "default"  # a preset name from solvers/ or a preset YAML path
    engine: str | None = None  # run only this engine (overrides solver)
    timeout: float = 60.0
    device: str = "auto"  # auto | cpu | cuda
    proofs: Literal["check", "record", "off"] = "check"
    certificates: Path | None = None


@dataclass(frozen=True, slots=True, eq=False)
class InstanceResult:
    name: str
    verdict: Verdict
    lifted: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, eq=False)
class CheckResult:
    """The answer for a whole spec file: VIOLATED if any instance is, HOLDS if all hold."""

    status: Status
    seconds: float
    engine: str
    reason: str
    instances: tuple[InstanceResult, ...] = field(default_factory=tuple)

    @property
    def counterexample(self) -> Counterexample | None:
        for r in self.instances:
            if r.verdict.status is Status.VIOLATED:
                return r.verdict.counterexample
        return None

    @property
    def lifted(self) -> dict[str, Any] | None:
        for r in self.instances:
            if r.verdict.status is Status.VIOLATED:
                return r.lifted
        return None

    def to_json(self) -> dict[str, Any]:
        cex = self.counterexample
        return {
            "status": self.status.value,
            "seconds": round(self.seconds, 4),
            "engine": self.engine,
            "reason": self.reason,
            "counterexample": None if cex is None else {
                "x": np.asarray(cex.x, dtype=np.float64).reshape(-1).tolist(),
                "y": np.asarray(cex.y, dtype=np.float64).reshape(-1).tolist(),
                "replayed": cex.replayed,
                "precision": cex.precision,
                "runtime": cex.runtime,
            },
            "lifted": _jsonable(self.lifted),
            "proof": self.proof,
            "instances": [
                {"name": r.name, "status": r.verdict.status.value, "engine": r.verdict.engine,
                 "seconds": round(r.verdict.seconds, 4), "reason": r.verdict.reason,
                 **({"certificate": r.verdict.certificate} if r.verdict.certificate else {}),
                 **({"proof": r.verdict.proof_note.as_dict()} if r.verdict.proof_note else {})}
                for r in self.instances
            ],
        }

    @property
    def proof(self) -> dict[str, Any] | None:
        """For HOLDS: whether every instance's proof was checked, and the first reason not."""
        if self.status is not Status.HOLDS:
            return None
        notes = [r.verdict.proof_note for r in self.instances]
        unchecked = [n.reason if n else "no certificate" for n in notes if n is None or not n.checked]
        return {"checked": not unchecked, "reason": unchecked[0] if unchecked else "",
                "seconds": round(sum(n.seconds for n in notes if n), 4)}


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from certify.errors import UsageError

        raise UsageError("--device cuda requested but no CUDA device is available")
    return device


def load_model(path: str | os.PathLike[str]) -> Network:
    """The network of an ONNX file (``X.onnx``, or ``X.onnx.gz`` beside a missing ``X.onnx``).

    A model with an op certify cannot convert is kept whole (:func:`~certify.io.onnx.opaque.
    opaque_network`): nothing is proved about it, counterexamples are still searched for by
    running it in onnxruntime, and every answer names the op.  If onnxruntime cannot run it
    either, the :class:`~certify.errors.UnsupportedOp` error stands."""
    from certify.errors import ModelError, UnsupportedOp
    from certify.io.files import plain_name, read_bytes
    from certify.io.onnx import load_onnx
    from certify.io.onnx.opaque import opaque_network
    from certify.io.runtime import ort_errors

    try:
        return load_onnx(path)
    except UnsupportedOp as exc:
        try:
            net = opaque_network(read_bytes(path), plain_name(resolve(path)).stem, str(exc))
        except (ModelError, *ort_errors()):  # onnxruntime cannot run it either
            raise exc from None
        log.warning("%s: %s; only a search for counterexamples in onnxruntime applies", path, exc)
        return net


def load_instances(model_path: str | os.PathLike[str], spec_path: str | os.PathLike[str],
                   network: Network | None = None) -> list[Instance]:
    """Every instance a spec file asks about (VNN-LIB: one per input box; YAML: per lowering).

    Either file may be stored gzipped beside its name, as VNN-COMP ships them (``X.onnx`` read
    from ``X.onnx.gz``, ``Y.vnnlib`` from ``Y.vnnlib.gz``); only VNN-LIB specs may be gzipped.
    """
    model_path, spec_path = resolve(model_path), resolve(spec_path)
    net = network if network is not None else load_model(model_path)
    oracle = OnnxOracle(model_path)
    spec_name = plain_name(spec_path)
    suffix = spec_name.suffix.lower()
    if not spec_path.is_file():
        raise SpecError(f"{spec_path}: no such spec file")
    if is_gzipped(spec_path) and suffix != ".vnnlib":
        raise SpecError(f"{spec_path}: only VNN-LIB specs may be gzipped (.vnnlib.gz)")
    if suffix == ".vnnlib":
        from certify.io.vnnlib import parse_vnnlib, to_problems

        problems = to_problems(parse_vnnlib(spec_path), net, name=spec_name.stem)
        return [Instance(p, oracle, model=model_path if p.network is net else None) for p in problems]
    if suffix in (".yaml", ".yml"):
        from certify.io.yaml import load_spec
        from certify.lower import lower_document

        doc = load_spec(spec_path)
        return [Instance(lw.problem, lw.oracle or oracle, lw.lift, lw.exact,
                         model=model_path if lw.problem.network is net else None)
                for lw in lower_document(doc, net, spec_path.parent, model_path=model_path)]
    raise SpecError(f"{spec_path}: unknown spec format {suffix!r} (expected .vnnlib, .yaml or .yml)")


def preset_for(options: CheckOptions) -> Preset:
    """The preset to run; an engine asked for by name must be installed (else a clear error)."""
    if not options.engine:
        return load_preset(options.solver)
    from certify.engines.registry import make_engine
    from certify.errors import UsageError

    avail = make_engine(options.engine).available()
    if not avail:
        raise UsageError(f"engine {options.engine!r} is unavailable: {avail.reason}")
    return single_engine(options.engine)


def check_instances(instances: list[Instance], options: CheckOptions, started: float | None = None) -> CheckResult:
    """Run the preset on each instance in turn under one shared timeout, counted from ``started``
    (``time.monotonic()``; default: now), so that loading the files is part of it."""
    start = time.monotonic() if started is None else started
    preset = preset_for(options)
    budget = Budget(start + options.timeout, resolve_device(options.device), proofs=options.proofs != "off",
                    checked=options.proofs == "check")
    results: list[InstanceResult] = []
    models: dict[Path, bytes] = {}
    for k, inst in enumerate(instances):
        name = inst.problem.name or f"instance {k}"
        if budget.expired:
            results.append(InstanceResult(name, Verdict(Status.UNKNOWN, preset.name, 0.0, "timeout")))
            continue
        v = run_portfolio(inst, preset, budget)
        if v.status is Status.HOLDS and options.proofs != "off":
            v = _confirm(inst, v, options, budget, models, certificate_path(options.certificates, k, len(instances)))
        lifted = inst.lift(v.counterexample.x) if v.status is Status.VIOLATED and v.counterexample else None
        results.append(InstanceResult(name, v, lifted))
        if v.status is Status.VIOLATED:
            break
    return summarize(results, time.monotonic() - start)


def certificate_path(target: Path | None, k: int, n: int) -> Path | None:
    """Where instance ``k`` of ``n`` writes its certificate: ``target`` itself for one instance,
    else ``<stem>.<k><suffix>`` beside it."""
    if target is None or n == 1:
        return target
    return target.with_name(f"{target.stem}.{k}{target.suffix}")


def _confirm(inst: Instance, v: Verdict, options: CheckOptions, budget: Budget, models: dict[Path, bytes],
             write: Path | None) -> Verdict:
    """The HOLDS ``v`` confirmed by the proof checker (:func:`certify.proof.confirm.confirm`)."""
    from certify.io.files import read_bytes
    from certify.proof.confirm import confirm

    model = None
    if inst.model is not None:
        path = resolve(inst.model)
        if path not in models:
            models[path] = read_bytes(path)
        model = models[path]
    return confirm(v, inst.problem, model, options.proofs == "check", budget.deadline, write)


def summarize(results: list[InstanceResult], seconds: float) -> CheckResult:
    statuses = [r.verdict.status for r in results]
    if Status.VIOLATED in statuses:
        r = next(r for r in results if r.verdict.status is Status.VIOLATED)
        return CheckResult(Status.VIOLATED, seconds, r.verdict.engine, r.verdict.reason, tuple(results))
    if statuses and all(s is Status.HOLDS for s in statuses):
        engines = sorted({r.verdict.engine for r in results})
        return CheckResult(Status.HOLDS, seconds, "+".join(engines), "", tuple(results))
    reasons = [f"{r.name}: {r.verdict.reason}" if len(results) > 1 else r.verdict.reason
               for r in results if r.verdict.status is Status.UNKNOWN]
    engine = next((r.verdict.engine for r in results if r.verdict.status is Status.UNKNOWN), "none")
    return CheckResult(Status.UNKNOWN, seconds, engine, "; ".join(reasons), tuple(results))


def check(model_path: str | os.PathLike[str], spec_path: str | os.PathLike[str],
          options: CheckOptions = CheckOptions()) -> CheckResult:
    """Check one spec file against one model file; ``options.timeout`` covers the loading too."""
    started = time.monotonic()
    return check_instances(load_instances(model_path, spec_path), options, started)


def _jsonable(value: Any) -> Any:
    """Lists for arrays, recursively, so a lifted counterexample can be written as JSON."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)
