"""Make the quick-start model: a small ReLU MLP on scikit-learn's bundled 8x8 digits.

    python case_studies/quickstart/make_model.py

writes, next to this script,

* ``digits_mlp.onnx``  64 -> 32 -> 16 -> 10 (ReLU), input ``[1, 64]`` pixels in [0, 1];
* ``digit_0.npy``      one correctly classified test image of a 0, shape ``(64,)``, float32.

and checks what it can cheaply: interval arithmetic must prove the image robust at
eps = 0.01, a PGD attack must break robustness at eps = 0.3 (``specs/robustness_digits_violated.yaml``),
and onnxruntime must agree with torch on the exported model.  (The claim of
``specs/robustness_digits.yaml``, robust at eps = 0.02, needs more than interval arithmetic;
see README.md.)  Seeded; runs in a few seconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0
SMALL_EPS, LARGE_EPS = 0.01, 0.3


def train() -> tuple[nn.Sequential, np.ndarray, np.ndarray]:
    """The trained model and the held-out test set (x in [0, 1], shape [n, 64])."""
    torch.manual_seed(SEED)
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=SEED, stratify=digits.target
    )
    model = nn.Sequential(
        nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
    for _ in range(60):
        for idx in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        train_acc = (model(xt).argmax(1) == yt).float().mean().item()
        test_acc = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
    print(f"train accuracy {train_acc:.3f}, test accuracy {test_acc:.3f}")
    return model, x_test, y_test


def pgd(model: nn.Module, x0: torch.Tensor, label: int, eps: float, steps: int = 200) -> torch.Tensor | None:
    """A point of the eps-ball (within [0, 1]) the model misclassifies, or None."""
    lo, hi = (x0 - eps).clamp(0, 1), (x0 + eps).clamp(0, 1)
    for restart in range(10):
        g = torch.Generator().manual_seed(restart)
        x = lo + (hi - lo) * torch.rand(x0.shape, generator=g)
        for _ in range(steps):
            x.requires_grad_(True)
            y = model(x[None])[0]
            others = torch.cat([y[:label], y[label + 1:]])
            loss = others.max() - y[label]
            (grad,) = torch.autograd.grad(loss, x)
            x = torch.max(torch.min(x.detach() + eps / 10 * grad.sign(), hi), lo)
            if model(x[None])[0].argmax().item() != label:
                return x
    return None


def interval_margin(model: nn.Sequential, x0: torch.Tensor, label: int, eps: float) -> float:
    """A sound lower bound (interval arithmetic) on min_j (y_label - y_j) over the clipped ball."""
    lo, hi = (x0 - eps).clamp(0, 1).double(), (x0 + eps).clamp(0, 1).double()
    for layer in model:
        if isinstance(layer, nn.Linear):
            w, b = layer.weight.detach().double(), layer.bias.detach().double()
            mid, rad = (lo + hi) / 2, (hi - lo) / 2
            mid, rad = w @ mid + b, w.abs() @ rad
            lo, hi = mid - rad, mid + rad
        else:
            lo, hi = lo.clamp(min=0), hi.clamp(min=0)
    return min(lo[label].item() - hi[j].item() for j in range(len(lo)) if j != label)


def main() -> None:
    model, x_test, y_test = train()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x_test)).argmax(1).numpy()
    # the first test image of a 0 that is classified correctly, with a proof at SMALL_EPS
    for i in np.flatnonzero((y_test == 0) & (predicted == 0)):
        x0 = torch.from_numpy(x_test[i])
        if interval_margin(model, x0, 0, SMALL_EPS) > 0:
            break
    else:
        raise SystemExit(f"no test image of a 0 is provably robust at eps = {SMALL_EPS}")
    print(f"digit_0.npy = test image {i}; interval margin at eps {SMALL_EPS}: "
          f"{interval_margin(model, x0, 0, SMALL_EPS):.3f} > 0, so robustness holds")
    adv = pgd(model, x0, 0, LARGE_EPS)
    if adv is None:
        raise SystemExit(f"PGD found no counterexample at eps = {LARGE_EPS}")
    with torch.no_grad():
        print(f"PGD at eps {LARGE_EPS}: class {model(adv[None]).argmax().item()}, "
              f"linf {(adv - x0).abs().max().item():.3f}, so robustness is violated")

    np.save(HERE / "digit_0.npy", x_test[i])
    torch.onnx.export(
        model, (torch.zeros(1, 64),), str(HERE / "digits_mlp.onnx"),
        input_names=["input"], output_names=["logits"], dynamo=False,
    )
    check_onnx(model, x_test)
    print(f"wrote {HERE / 'digits_mlp.onnx'} and {HERE / 'digit_0.npy'}")


def check_onnx(model: nn.Module, x_test: np.ndarray) -> None:
    """onnxruntime on the exported file must reproduce torch's logits."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(HERE / "digits_mlp.onnx"))
    for x in x_test[:50]:
        (got,) = session.run(None, {"input": x[None]})
        with torch.no_grad():
            want = model(torch.from_numpy(x[None])).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
    main()
