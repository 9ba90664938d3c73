"""Tiny random models built in code, shared by every test module.

* :func:`dense` and :func:`conv` build ``torch.nn.Sequential`` models from a seed;
* :func:`export` writes a module to ONNX (batch dimension 1), :func:`to_network` also loads it;
* :func:`onnx_helper_model` builds an ONNX graph directly with ``onnx.helper``, for ops
  torch does not emit (or that certify must reject), :func:`save` writes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from certify.io.onnx import load_onnx
from certify.network import Network

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def _init(module: nn.Module, gen: torch.Generator) -> None:
    """Random normal weights scaled by 1/sqrt(fan_in), small random biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / fan_in**0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
        elif isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


def dense(seed: int, sizes: Sequence[int], activation: str = "relu") -> nn.Sequential:
    """A fully connected net ``sizes[0] -> ... -> sizes[-1]``, activation between layers."""
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if k < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    model = nn.Sequential(*layers)
    _init(model, gen)
    return model.eval()


def conv(seed: int, in_shape: tuple[int, int, int] = (1, 8, 8), channels: Sequence[int] = (4, 4),
         n_out: int = 3, activation: str = "relu", *, batchnorm: bool = True,
         pool: str = "max") -> nn.Sequential:
    """A small CNN: per block Conv2d (padding / stride vary by block), optional BatchNorm2d,
    activation; then one pooling layer (``pool`` in max / avg / none), Flatten, Linear."""
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    c_in = in_shape[0]
    for k, c_out in enumerate(channels):
        if k % 2 == 0:
            layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=1))
        else:
            layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=(1, 0), stride=(2, 1)))
        if batchnorm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(ACTIVATIONS[activation]())
        c_in = c_out
    if pool == "max":
        layers.append(nn.MaxPool2d(2, stride=2, padding=1))
    elif pool == "avg":
        layers.append(nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False))
    elif pool != "none":
        raise ValueError(f"pool must be max, avg or none, not {pool!r}")
    layers.append(nn.Flatten())
    with torch.no_grad():
        n_flat = nn.Sequential(*layers)(torch.zeros(1, *in_shape)).shape[1]
    layers.append(nn.Linear(n_flat, n_out))
    model = nn.Sequential(*layers)
    _init(model, gen)
    return model.eval()


def export(module: nn.Module, input_shape: tuple[int, ...], path: Path, *,
           keep_batchnorm: bool = True, constant_folding: bool = True) -> Path:
    """Write ``module`` to ``path`` as ONNX with input ``[1, *input_shape]`` (TorchScript exporter).

    ``keep_batchnorm`` keeps BatchNormalization nodes (so the loader's folding is exercised);
    ``constant_folding=False`` keeps the exporter's Shape/Gather/Concat sub-graphs.
    """
    module = module.eval()
    training = torch.onnx.TrainingMode.PRESERVE if keep_batchnorm else torch.onnx.TrainingMode.EVAL
    torch.onnx.export(module, (torch.zeros(1, *input_shape),), str(path), dynamo=False,
                      training=training, do_constant_folding=constant_folding,
                      input_names=["x"], output_names=["y"])
    return Path(path)


def to_network(module: nn.Module, input_shape: tuple[int, ...], tmp_path: Path,
               **export_options: bool) -> tuple[Path, Network]:
    """Export ``module`` under ``tmp_path`` and load it back with :func:`certify.io.onnx.load_onnx`."""
    path = export(module, input_shape, Path(tmp_path) / f"{type(module).__name__.lower()}.onnx",
                  **export_options)
    return path, load_onnx(path)


def onnx_helper_model(nodes: Sequence[Any], inputs: Mapping[str, Sequence[int | str]],
                      output: str | Mapping[str, Sequence[int | str] | None],
                      initializers: Mapping[str, np.ndarray] | None = None, opset: int = 13,
                      name: str = "helper") -> Any:
    """An ``onnx.ModelProto`` from ``onnx.helper`` nodes.

    ``inputs`` maps input names to shapes (ints, or strings for symbolic dims); ``output`` is an
    output name (shape left unknown) or a mapping name -> shape; ``initializers`` are float32
    unless given another dtype.  The graph is not checked here: onnxruntime checks it.
    """
    from onnx import TensorProto, helper, numpy_helper

    outputs = {output: None} if isinstance(output, str) else dict(output)
    graph = helper.make_graph(
        list(nodes), name,
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v)) for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, None if v is None else list(v))
         for k, v in outputs.items()],
        [numpy_helper.from_array(_array(v), k) for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 8)
    return model


def _array(value: Any) -> np.ndarray:
    arr = np.asarray(value)
    return arr.astype(np.float32) if arr.dtype == np.float64 else arr


def save(model: Any, path: Path) -> Path:
    """Write an ``onnx.ModelProto`` to ``path``."""
    import onnx

    onnx.save(model, str(path))
    return Path(path)
