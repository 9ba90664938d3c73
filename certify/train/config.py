"""The configuration of ``certify train CONFIG.yaml`` (pydantic, frozen).

Relative dataset paths are resolved against the directory of the config file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from certify.errors import SpecError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Strict):
    name: Literal["mnist", "digits", "npz"]
    path: Path | None = None

    @model_validator(mode="after")
    def _needs_path(self) -> DatasetConfig:
        if self.name != "digits" and self.path is None:
            raise ValueError(f"dataset {self.name!r} needs a path")
        return self


class ModelConfig(_Strict):
    name: str = "cnn-small"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    init: Literal["ibp", "default"] = "ibp"


class ScheduleConfig(_Strict):
    warmup_epochs: float = Field(1.0, ge=0)
    ramp_epochs: float = Field(10.0, ge=0)
    shape: Literal["linear", "smooth"] = "smooth"
    kappa: tuple[float, float] = (1.0, 0.0)
    beta: tuple[float, float] = (1.0, 0.0)


class OptimConfig(_Strict):
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_milestones: list[int] = Field(default_factory=list)
    lr_gamma: float = Field(0.2, gt=0)
    grad_clip: float = Field(10.0, gt=0)


class RegularizerConfig(_Strict):
    weight: float = Field(0.5, ge=0)
    tol: float = Field(0.5, gt=0)


class EvalConfig(_Strict):
    n: int = Field(1000, ge=1)
    eps: float | None = Field(None, ge=0)


class TrainConfig(_Strict):
    dataset: DatasetConfig
    model: ModelConfig = ModelConfig()
    method: Literal["ibp", "crown-ibp", "natural"] = "ibp"
    eps: float = Field(..., ge=0, description="the eps certified at the end (pixels in [0, 1])")
    train_eps: float | None = Field(None, ge=0, description="the eps trained at (default: eps)")
    epochs: int = Field(..., ge=1)
    batch_size: int = Field(128, ge=1)
    max_batches: int | None = Field(None, ge=1, description="cap on batches per epoch (smoke runs)")
    schedule: ScheduleConfig = ScheduleConfig()
    optim: OptimConfig = OptimConfig()
    regularizer: RegularizerConfig = RegularizerConfig()
    eval: EvalConfig = EvalConfig()
    device: str = "cpu"
    threads: int | None = Field(None, ge=1, description="torch.set_num_threads")
    seed: int = 0

    @property
    def target_train_eps(self) -> float:
        return self.eps if self.train_eps is None else self.train_eps

    @property
    def eval_eps(self) -> float:
        return self.eps if self.eval.eps is None else self.eval.eps


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "<root>"
    return f"{where}: {err['msg']}"


def parse_config(data: Any, base_dir: Path = Path(".")) -> TrainConfig:
    """Validate a mapping (as read from YAML); raise :class:`SpecError` naming the bad field."""
    if not isinstance(data, dict):
        raise SpecError("train config: expected a mapping at the top level")
    try:
        cfg = TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"train config: {_first_error(exc)}") from None
    path = cfg.dataset.path
    if path is not None and not path.is_absolute():
        cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"path": base_dir / path})})
    return cfg


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"train config: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"train config: {path} is not valid YAML: {exc}".splitlines()[0]) from None
    return parse_config(data, path.parent)
