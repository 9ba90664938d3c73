"""The training loop behind ``certify train``: schedules, checkpoints, resume, ONNX export.

The loop reports through callbacks (:class:`Callbacks`) and :mod:`logging`; it never prints.
Files written into ``out_dir``: ``checkpoint.pt`` (after every epoch), ``model.onnx`` and
``result.json`` (at the end).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from certify.errors import SpecError
from certify.train.config import TrainConfig
from certify.train.data import load_dataset
from certify.train.evaluate import Evaluation, evaluate_onnx
from certify.train.init import ibp_init
from certify.train.loss import Trace, check_supported, margin_lower_bounds, robust_cross_entropy
from certify.train.models import build_model
from certify.train.regularizers import ibp_regularizer
from certify.train.schedule import Schedule

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Progress:
    """One optimiser step: running means over the epoch so far."""

    epoch: int
    epochs: int
    batch: int
    batches: int
    eps: float
    kappa: float
    clean_loss: float
    robust_loss: float
    clean_acc: float
    robust_acc: float


@dataclass(frozen=True, slots=True)
class EpochSummary:
    epoch: int
    seconds: float  # wall clock
    cpu_seconds: float  # CPU time of this process (the cost on an unshared machine)
    eps: float
    clean_loss: float
    robust_loss: float
    train_clean_acc: float
    train_robust_acc: float
    test_clean_acc: float
    test_ibp_certified_acc: float  # IBP-certified at the target eps on the eval subset


@dataclass(frozen=True, slots=True)
class TrainResult:
    out_dir: Path
    onnx: Path
    epochs: tuple[EpochSummary, ...]
    evaluation: Evaluation
    train_seconds: float


@dataclass(frozen=True, slots=True)
class Callbacks:
    on_step: Callable[[Progress], None] | None = None
    on_epoch: Callable[[EpochSummary], None] | None = None


@dataclass(slots=True)
class _Meter:
    n: int = 0
    sums: dict[str, float] = field(default_factory=dict)

    def add(self, n: int, **values: float) -> None:
        self.n += n
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * n

    def mean(self, key: str) -> float:
        return self.sums.get(key, 0.0) / max(self.n, 1)


def _step_loss(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig, eps: float, kappa: float,
               beta: float) -> tuple[Tensor, dict[str, float]]:
    """The loss of one batch and its display statistics."""
    logits = model(x)
    clean = F.cross_entropy(logits, y)
    stats = {"clean_loss": clean.item(), "clean_acc": float((logits.argmax(1) == y).float().mean())}
    if cfg.method == "natural" or eps == 0:
        stats.update(robust_loss=clean.item(), robust_acc=0.0)
        return clean, stats
    trace: Trace = []
    lb = margin_lower_bounds(model, x, y, eps, cfg.method, beta, trace=trace)
    robust = robust_cross_entropy(lb, y)
    loss = kappa * clean + (1 - kappa) * robust
    reg, target = cfg.regularizer, cfg.target_train_eps
    if reg.weight > 0 and eps < target:
        input_rad = ((x + eps).clamp(0, 1) - (x - eps).clamp(0, 1)) / 2
        loss = loss + reg.weight * (1 - eps / target) * ibp_regularizer(trace, input_rad, reg.tol)
    verified = (lb.scatter(1, y.unsqueeze(1), float("inf")) > 0).all(1)
    stats.update(robust_loss=robust.item(), robust_acc=float(verified.float().mean()))
    return loss, stats


def _ibp_certified(model: nn.Module, x: Tensor, y: Tensor, eps: float, batch: int = 500) -> tuple[float, float]:
    model.eval()
    clean = cert = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb, yb = x[i:i + batch], y[i:i + batch]
            ok = model(xb).argmax(1) == yb
            lb = margin_lower_bounds(model, xb, yb, eps, "ibp").scatter(1, yb.unsqueeze(1), float("inf"))
            clean += int(ok.sum())
            cert += int((ok & (lb > 0).all(1)).sum())
    return clean / len(x), cert / len(x)


def _run_epoch(model: nn.Module, opt: torch.optim.Optimizer, data: tuple[Tensor, Tensor], cfg: TrainConfig,
               schedule: Schedule, epoch: int, batches: int, gen: torch.Generator, callbacks: Callbacks
               ) -> tuple[_Meter, float]:
    """One pass over ``batches`` shuffled batches; returns the epoch's meter and last eps."""
    x_all, y_all = data
    device = torch.device(cfg.device)
    model.train()
    perm = torch.randperm(len(x_all), generator=gen)
    meter, eps = _Meter(), 0.0
    for b in range(batches):
        idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
        x, y = x_all[idx].to(device), y_all[idx].to(device)
        eps, kappa, beta = (0.0, 1.0, 0.0) if cfg.method == "natural" else schedule.at(epoch * batches + b)
        loss, stats = _step_loss(model, x, y, cfg, eps, kappa, beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        meter.add(len(y), **stats)
        if callbacks.on_step:
            callbacks.on_step(Progress(epoch + 1, cfg.epochs, b + 1, batches, eps, kappa,
                                       meter.mean("clean_loss"), meter.mean("robust_loss"),
                                       meter.mean("clean_acc"), meter.mean("robust_acc")))
    return meter, eps


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    """Write ``model`` (eval mode, batch axis dynamic) as ONNX with the TorchScript exporter."""
    model.eval()
    dummy = torch.zeros(1, *input_shape)
    torch.onnx.export(model, (dummy,), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return path


def train(cfg: TrainConfig, out_dir: Path, resume: Path | None = None, callbacks: Callbacks = Callbacks()
          ) -> TrainResult:
    """Train per ``cfg``; checkpoint every epoch; export ONNX and evaluate at the end."""
    saved = None if resume is None else _read_checkpoint(resume)  # refused before anything runs
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    x_train, y_train = load_dataset(cfg.dataset.name, "train", cfg.dataset.path)
    x_test, y_test = load_dataset(cfg.dataset.name, "test", cfg.dataset.path)
    x_eval, y_eval = x_test[:cfg.eval.n].to(device), y_test[:cfg.eval.n].to(device)
    input_shape = tuple(x_train.shape[1:])
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    model = build_model(cfg.model.name, input_shape, num_classes, cfg.model.kwargs)
    check_supported(model, "crown-ibp" if cfg.method == "crown-ibp" else "ibp")
    if cfg.model.init == "ibp":
        ibp_init(model)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    lr_sched = torch.optim.lr_scheduler.MultiStepLR(opt, cfg.optim.lr_milestones, cfg.optim.lr_gamma)
    batches = -(-len(x_train) // cfg.batch_size)
    if cfg.max_batches:
        batches = min(batches, cfg.max_batches)
    s = cfg.schedule
    schedule = Schedule.standard(cfg.target_train_eps, batches, s.warmup_epochs, s.ramp_epochs, s.shape,
                                 s.kappa, s.beta)
    start_epoch, history = 0, []
    gen = torch.Generator().manual_seed(cfg.seed)
    if resume is not None and saved is not None:
        start_epoch, history = _restore(resume, saved, model, opt, lr_sched, gen)
        log.info("resumed from %s at epoch %d", resume, start_epoch + 1)
    t_train = sum(e.seconds for e in history)
    for epoch in range(start_epoch, cfg.epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        meter, eps = _run_epoch(model, opt, (x_train, y_train), cfg, schedule, epoch, batches, gen, callbacks)
        lr_sched.step()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        t_train += seconds
        test_clean, test_cert = _ibp_certified(model, x_eval, y_eval, cfg.eval_eps)
        summary = EpochSummary(epoch + 1, seconds, cpu, eps, meter.mean("clean_loss"), meter.mean("robust_loss"),
                               meter.mean("clean_acc"), meter.mean("robust_acc"), test_clean, test_cert)
        history.append(summary)
        log.info("epoch %d: %s", epoch + 1, summary)
        _save_checkpoint(out_dir / "checkpoint.pt", cfg, model, opt, lr_sched, gen, epoch + 1, history)
        if callbacks.on_epoch:
            callbacks.on_epoch(summary)
    model.eval()
    onnx_path = export_onnx(model.cpu(), input_shape, out_dir / "model.onnx")
    log.info("certifying the exported model on %d test samples", len(x_eval))
    evaluation = evaluate_onnx(onnx_path, x_eval.cpu(), y_eval.cpu(), cfg.eval_eps)
    result = TrainResult(out_dir, onnx_path, tuple(history), evaluation, t_train)
    (out_dir / "result.json").write_text(json.dumps({
        "config": cfg.model_dump(mode="json"),
        "epochs": [asdict(e) for e in history],
        "train_seconds": t_train,
        "train_cpu_seconds": sum(e.cpu_seconds for e in history),
        "evaluation": evaluation.as_dict(),
    }, indent=2))
    return result


def _save_checkpoint(path: Path, cfg: TrainConfig, model: nn.Module, opt: torch.optim.Optimizer,
                     lr_sched: torch.optim.lr_scheduler.LRScheduler, gen: torch.Generator, epoch: int,
                     history: list[EpochSummary]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "lr_scheduler": lr_sched.state_dict(), "generator": gen.get_state(),
                "history": [asdict(e) for e in history], "config": cfg.model_dump(mode="json")}, tmp)
    tmp.replace(path)


def _read_checkpoint(path: Path) -> dict:
    """The training state saved by :func:`_save_checkpoint`, as plain data.

    The file is read with ``weights_only=True``: torch's restricted unpickler accepts tensors,
    containers and plain values only, so a crafted checkpoint cannot run code.  Anything else
    (a pickled object, a damaged file, not a mapping) is a :class:`SpecError`.
    """
    import pickle

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise SpecError(f"--resume: cannot load checkpoint {path}: {_first_line(exc)}") from None
    if not isinstance(ckpt, dict):
        raise SpecError(f"--resume: checkpoint {path} is not one certify wrote (a {type(ckpt).__name__})")
    return ckpt


def _restore(path: Path, ckpt: dict, model: nn.Module, opt: torch.optim.Optimizer,
             lr_sched: torch.optim.lr_scheduler.LRScheduler, gen: torch.Generator
             ) -> tuple[int, list[EpochSummary]]:
    """Load a checkpoint's state into the live objects; returns the epoch and the history."""
    try:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        lr_sched.load_state_dict(ckpt["lr_scheduler"])
        gen.set_state(ckpt["generator"])
        history = [EpochSummary(**{"cpu_seconds": float("nan"), **e}) for e in ckpt["history"]]
        return int(ckpt["epoch"]), history
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise SpecError(f"--resume: checkpoint {path} does not fit this model: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
