"""Datasets for training: MNIST idx files, scikit-learn's bundled digits, or a ``.npz``.

Every loader returns ``(x, y)`` with ``x`` float32 ``[N, C, H, W]`` in ``[0, 1]`` and ``y``
int64 ``[N]``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from certify.errors import SpecError

_MNIST = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: Path) -> np.ndarray:
    """An idx file (optionally gzipped) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise SpecError(f"dataset: {path} is not an unsigned-byte idx file")
    ndim = data[3]
    dims = np.frombuffer(data, ">u4", ndim, 4).astype(int)
    return np.frombuffer(data, np.uint8, int(np.prod(dims)), 4 + 4 * ndim).reshape(dims)


def load_mnist(directory: Path, split: str) -> tuple[Tensor, Tensor]:
    arrays = []
    for stem in _MNIST[split]:
        candidates = [directory / stem, directory / f"{stem}.gz"]
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            raise SpecError(f"dataset.path: no {stem}[.gz] in {directory}")
        arrays.append(read_idx(path))
    images, labels = arrays
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def load_digits(split: str, test_fraction: float = 0.2) -> tuple[Tensor, Tensor]:
    """scikit-learn's 8x8 digits (1,797 images), the last 20% as the test split."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    cut = int(round(len(y) * (1 - test_fraction)))
    return (x[:cut], y[:cut]) if split == "train" else (x[cut:], y[cut:])


def load_npz(path: Path, split: str) -> tuple[Tensor, Tensor]:
    """Keys ``x_train, y_train, x_test, y_test`` (or ``x, y`` for both splits).

    Images ``[N, H, W]`` or ``[N, C, H, W]``; integer pixels are scaled by 1/255.
    """
    with np.load(path) as z:
        keys = (f"x_{split}", f"y_{split}") if f"x_{split}" in z else ("x", "y")
        if keys[0] not in z or keys[1] not in z:
            raise SpecError(f"dataset.path: {path} needs arrays x_{split}/y_{split} or x/y")
        x, y = z[keys[0]], z[keys[1]]
    xf = x.astype(np.float32) / (255.0 if np.issubdtype(x.dtype, np.integer) else 1.0)
    t = torch.from_numpy(xf)
    if t.dim() == 3:
        t = t.unsqueeze(1)
    return t, torch.from_numpy(y.astype(np.int64))


def load_dataset(name: str, split: str, path: Path | None = None) -> tuple[Tensor, Tensor]:
    """``name`` is ``mnist`` (``path``: an idx directory), ``digits``, or ``npz`` (``path``: a file)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, not {split!r}")
    if name == "digits":
        return load_digits(split)
    if path is None:
        raise SpecError(f"dataset.path: required for dataset {name!r}")
    if name == "mnist":
        return load_mnist(Path(path), split)
    if name == "npz":
        return load_npz(Path(path), split)
    raise SpecError(f"dataset.name: unknown dataset {name!r} (mnist, digits, npz)")
