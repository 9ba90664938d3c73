"""The worker side: a long-lived process that loads networks once and runs instances."""


from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from certify.errors import CertifyError

log = logging.getLogger(__name__)

#: Networks each worker keeps loaded (least recently used ones are dropped).
NETWORK_CACHE = 8

# ----------------------------------------------------------------------------- the worker side


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    solver: str
    engine: str | None
    device: str
    threads: int
    proofs: str = "check"
    certificates: Path | None = None


@dataclass(frozen=True, slots=True)
class Task:
    onnx_path: str
    vnnlib_path: str
    timeout: float


@dataclass(frozen=True, slots=True)
class FuzzTask:
    """Fuzz every (onnx, vnnlib) in ``vnnlibs`` over one network for ``seconds``."""

    onnx_path: str
    vnnlibs: tuple[str, ...]
    seconds: float


def _watch_parent(lifeline: Connection) -> None:
    """End this worker when the suite's parent is gone (killed), even mid-instance: the parent
    holds the only write end of ``lifeline``, so reading it ends in EOF exactly then."""
    try:
        lifeline.recv()
    except (EOFError, OSError):
        pass
    os._exit(3)


def worker_main(conn: Connection, lifeline: Connection, config: WorkerConfig) -> None:
    """A worker's life: report ready, then run tasks until told to stop or the parent goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    threading.Thread(target=_watch_parent, args=(lifeline,), daemon=True).start()
    try:
        import torch

        from certify.api import CheckOptions, preset_for, resolve_device
        from certify.engines.registry import make_engine

        torch.set_num_threads(config.threads)
        options = CheckOptions(solver=config.solver, engine=config.engine, timeout=1.0,
                               device=resolve_device(config.device), proofs=config.proofs,  # type: ignore[arg-type]
                               certificates=config.certificates)
        for stage in preset_for(options).stages:
            # import every engine now, not inside the first instance's timeout (a fresh
            # worker after a kill would otherwise pay the imports and overrun again)
            make_engine(stage.engine, stage.options)
    except CertifyError as exc:
        conn.send(("fatal", str(exc)))
        return
    conn.send(("ready", os.getpid()))
    cache: OrderedDict[str, Any] = OrderedDict()
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            if isinstance(task, FuzzTask):
                reply: Any = ("fuzz", _run_fuzz(task, options, cache))
            else:
                reply = ("result", _run_task(task, options, cache))
        except MemoryError:
            reply = ("result", {**error_record("out of memory (MemoryError)", 0.0), "error_type": "MemoryError"})
            conn.send(reply)
            return  # this process may be in a bad state: let the parent start a fresh one
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


def _network(path: str, cache: OrderedDict[str, Any]) -> Any:
    """The network of ``path`` (``X.onnx`` or its ``.gz``), from the cache when loaded before."""
    from certify.api import load_model
    from certify.io.files import resolve

    key = os.path.realpath(resolve(path))
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    net = load_model(path)
    cache[key] = net
    while len(cache) > NETWORK_CACHE:
        cache.popitem(last=False)
    return net


def error_record(reason: str, seconds: float, exc: BaseException | None = None,
                  net_loaded: bool | None = None) -> dict[str, Any]:
    """An ``error`` record; with the exception, its class (``error_type``; ``internal <class>`` for
    a bug, i.e. not a :class:`CertifyError`) and, for an unsupported ONNX op, the op (``op``); with
    ``net_loaded``, whether the network had loaded before the error."""
    record: dict[str, Any] = {"status": "error", "seconds": seconds, "engine": "none", "reason": reason,
                              "counterexample": None}
    if exc is not None:
        kind = type(exc).__name__
        record["error_type"] = kind if isinstance(exc, CertifyError) else f"internal {kind}"
        op = getattr(exc, "op_type", None)
        if isinstance(op, str):
            record["op"] = op
    if net_loaded is not None:
        record["net_loaded"] = net_loaded
    return record


def _run_task(task: Task, options: Any, cache: OrderedDict[str, Any]) -> dict[str, Any]:
    from certify.api import check_instances, load_instances
    from certify.io.files import plain_name

    start = time.monotonic()
    net = None
    try:
        net = _network(task.onnx_path, cache)
        instances = load_instances(task.onnx_path, task.vnnlib_path, network=net)
        loaded = time.monotonic() - start
        target = options.certificates
        if target is not None:
            stems = (plain_name(task.onnx_path).stem, plain_name(task.vnnlib_path).stem)  # X.onnx(.gz) -> X
            target = target / f"{stems[0]}__{stems[1]}.npz"
        result = check_instances(instances, replace(options, timeout=max(0.0, task.timeout - loaded),
                                                    certificates=target))
    except CertifyError as exc:
        return error_record(str(exc), time.monotonic() - start, exc, net is not None)
    except Exception as exc:  # a bug on this instance: keep the suite going, keep the traceback
        log.exception("internal error on %s %s", task.onnx_path, task.vnnlib_path)
        return error_record(f"internal error: {type(exc).__name__}: {exc}", time.monotonic() - start, exc,
                             net is not None)
    data = result.to_json()
    opaque = net.is_opaque
    return {"status": data["status"], "seconds": time.monotonic() - start, "load_seconds": loaded,
            "engine": data["engine"], "reason": data["reason"], "net_loaded": not opaque,
            **({"opaque": True} if opaque else {}), **({"proof": data["proof"]} if data.get("proof") else {}),
            "counterexample": _cex_record(data["counterexample"])}


def _cex_record(cex: dict[str, Any] | None) -> dict[str, Any] | None:
    """The counterexample fields a suite record keeps."""
    if cex is None:
        return None
    return {k: cex[k] for k in ("x", "y", "replayed", "precision", "runtime") if k in cex}


def _run_fuzz(task: FuzzTask, options: Any, cache: OrderedDict[str, Any]) -> list[dict[str, Any] | None]:
    """One record (violated, engine "fuzz") or None per vnnlib of the task."""
    import numpy as np

    from certify.api import load_instances
    from certify.budget import Budget
    from certify.fuzz import FuzzOptions, fuzz_instances
    from certify.replay import replay
    from certify.verdict import Status

    start = time.monotonic()
    try:
        net = _network(task.onnx_path, cache)
        groups = [load_instances(task.onnx_path, v, network=net) for v in task.vnnlibs]
        flat = [inst for g in groups for inst in g]
        loaded = time.monotonic() - start
        verdicts = fuzz_instances(flat, Budget.seconds(task.seconds, options.device), FuzzOptions())
    except CertifyError as exc:
        log.warning("fuzz stage skipped for %s: %s", task.onnx_path, exc)
        return [None] * len(task.vnnlibs)
    except Exception:
        log.exception("fuzz stage failed for %s", task.onnx_path)
        return [None] * len(task.vnnlibs)
    out: list[dict[str, Any] | None] = []
    k = 0
    for g in groups:
        found = None
        for inst, v in zip(g, verdicts[k:k + len(g)]):
            if found is None and v.status is Status.VIOLATED and v.counterexample is not None:
                cex = v.counterexample
                checked = cex if cex.replayed else replay(inst.oracle, inst.problem, cex.x)
                if checked is not None:
                    found = (checked, v.seconds)
        k += len(g)
        if found is None:
            out.append(None)
            continue
        cex, secs = found
        out.append({"status": "violated", "seconds": loaded + secs, "load_seconds": loaded, "engine": "fuzz",
                    "reason": "", "net_loaded": True, "counterexample": {
                        "x": np.asarray(cex.x, dtype=np.float64).reshape(-1).tolist(),
                        "y": np.asarray(cex.y, dtype=np.float64).reshape(-1).tolist(),
                        "replayed": True, "precision": cex.precision, "runtime": cex.runtime}})
    return out
