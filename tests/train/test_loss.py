"""The certified-training bounds are sound, exact on a point box, and their gradients flow."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from certify.errors import ModelError
from certify.train import certified_loss, check_supported, ibp_init, margin_lower_bounds
from certify.train.models import Residual, cnn_small, mlp

SHAPE = (1, 12, 12)


def _nets(seed: int) -> list[nn.Module]:
    gen = torch.Generator().manual_seed(seed)
    # nn modules initialise their weights from torch's global RNG: seeded here, and restored after.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bn = nn.BatchNorm2d(3)
        conv_res = nn.Sequential(
            nn.Conv2d(1, 3, 3, stride=2, padding=1), bn, nn.ReLU(),
            Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1))),
            nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3 * 3 * 3, 8), nn.ReLU(), nn.Linear(8, 5),
        )
        nets = [mlp(SHAPE, 5, width=16, depth=2), cnn_small(SHAPE, 5), conv_res]
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5, generator=gen)
        bn.running_var.uniform_(0.5, 2.0, generator=gen)
        bn.weight.uniform_(-1.5, 1.5, generator=gen)
    return [n.eval() for n in nets]


def _data(n: int, seed: int, shape: tuple[int, ...] = SHAPE) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` inputs in [0, 1] and labels in 0..4, from a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=gen), torch.randint(0, 5, (n,), generator=gen)


@pytest.fixture(autouse=True)
def global_rng_untouched():
    """The tests and the bound code draw nothing from torch's global RNG."""
    before = torch.random.get_rng_state()
    yield
    assert torch.equal(torch.random.get_rng_state(), before), "torch's global RNG was used"


def _margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out.gather(1, y.unsqueeze(1)) - out


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.0, 0.3), method=st.sampled_from(["ibp", "crown-ibp"]),
       beta=st.floats(0.0, 1.0))
def test_bounds_hold_on_sampled_points(seed: int, eps: float, method: str, beta: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(3, *SHAPE, generator=gen)
    y = torch.randint(0, 5, (3,), generator=gen)
    for model in _nets(seed):
        with torch.no_grad():
            lb = margin_lower_bounds(model, x, y, eps, method, beta)  # type: ignore[arg-type]
            samples = (x + (torch.rand(64, *x.shape, generator=gen) * 2 - 1) * eps).clamp(0, 1)
            corners = (x + torch.sign(torch.randn(16, *x.shape, generator=gen)) * eps).clamp(0, 1)
            pts = torch.cat([samples, corners])  # [P, B, *in]
            margins = _margins(model, pts.flatten(0, 1), y.repeat(len(pts))).view(len(pts), *lb.shape)
            assert (margins >= lb - 1e-4).all()


@pytest.mark.parametrize("method", ["ibp", "crown-ibp"])
def test_point_box_is_exact(method: str) -> None:
    x, y = _data(4, seed=11)
    for model in _nets(1):
        with torch.no_grad():
            lb = margin_lower_bounds(model, x, y, 0.0, method)  # type: ignore[arg-type]
            assert torch.allclose(lb, _margins(model, x, y), atol=1e-5)


def test_crown_ibp_gradient_reaches_every_parameter() -> None:
    model = _nets(2)[2].train()
    x, y = _data(8, seed=12)
    certified_loss(model, x, y, 0.05, method="crown-ibp", kappa=0.5, beta=0.5).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_ibp_steps_raise_the_certified_margin() -> None:
    with torch.random.fork_rng(devices=[]):  # the module's and ibp_init's draws, restored after
        torch.manual_seed(0)
        model = mlp((1, 8, 8), 5, width=32, depth=1)
        ibp_init(model)
    x, y = _data(32, seed=13, shape=(1, 8, 8))
    eps = 0.02

    def worst_margin() -> float:
        with torch.no_grad():
            lb = margin_lower_bounds(model, x, y, eps, "ibp")
        return float(lb.scatter(1, y.unsqueeze(1), float("inf")).min(1).values.mean())

    before = worst_margin()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        certified_loss(model, x, y, eps, method="ibp").backward()
        opt.step()
    assert before < 0 < worst_margin()


def test_unsupported_module_is_named_before_running() -> None:
    with torch.random.fork_rng(devices=[]):
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 5))
    with pytest.raises(ModelError, match="Tanh"):
        check_supported(model, "ibp")
    with pytest.raises(ModelError, match="Tanh"):
        margin_lower_bounds(model, torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), 0.1)
