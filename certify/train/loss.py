"""Certified-training losses on live torch modules: IBP and CROWN-IBP.

Two algorithms, each one table keyed by module type:

* ``IBP_RULES[type](module, mid, rad, trace) -> (mid, rad)`` propagates a box in
  centre/radius form (Gowal et al. 2018) and appends ``(module, mid, rad)`` of every leaf's
  *input* to ``trace``;
* ``CROWN_RULES[type](module, A, trace) -> (A, const)`` carries a linear lower bound
  ``A @ out + c`` one module back (Zhang et al. 2018), popping ``trace`` to get the IBP
  bounds it relaxes with (CROWN-IBP, Zhang et al. 2020).

A missing entry means the module is unsupported: :func:`check_supported` says so before
anything runs.  Shapes: ``x`` is ``[B, *in]``; ``A`` is ``[B, S, *out]`` for ``S``
specifications; bounds on margins are ``[B, K]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from certify.errors import ModelError
from certify.relax import relu_relaxation
from certify.train.models import Residual

Trace = list[tuple[nn.Module, Tensor, Tensor]]
Method = Literal["ibp", "crown-ibp"]

# ---------------------------------------------------------------------------------- IBP


def _ibp_linear(m: nn.Linear, mid: Tensor, rad: Tensor, trace: Trace) -> tuple[Tensor, Tensor]:
    return F.linear(mid, m.weight, m.bias), F.linear(rad, m.weight.abs())


def _ibp_conv(m: nn.Conv2d, mid: Tensor, rad: Tensor, trace: Trace) -> tuple[Tensor, Tensor]:
    if m.padding_mode != "zeros":
        raise ModelError(f"Conv2d with padding_mode={m.padding_mode!r} has no bound rule")
    conv = lambda t, w, b: F.conv2d(t, w, b, m.stride, m.padding, m.dilation, m.groups)  # noqa: E731
    return conv(mid, m.weight, m.bias), conv(rad, m.weight.abs(), None)


def _ibp_relu(m: nn.Module, mid: Tensor, rad: Tensor, trace: Trace) -> tuple[Tensor, Tensor]:
    lo, hi = F.relu(mid - rad), F.relu(mid + rad)
    return (hi + lo) / 2, (hi - lo) / 2


def _ibp_same(m: nn.Module, mid: Tensor, rad: Tensor, trace: Trace) -> tuple[Tensor, Tensor]:
    """Modules that act on shapes only (Flatten, Identity): apply to both."""
    return m(mid), m(rad)


def _ibp_avgpool(m: nn.AvgPool2d, mid: Tensor, rad: Tensor, trace: Trace) -> tuple[Tensor, Tensor]:
    if m.ceil_mode or not m.count_include_pad or m.divisor_override is not None:
        raise ModelError("AvgPool2d bounds need ceil_mode=False, count_include_pad=True, no divisor_override")
    return m(mid), m(rad)  # a linear map with non-negative weights


def _bn_affine(m: nn.BatchNorm1d | nn.BatchNorm2d, mid: Tensor) -> tuple[Tensor, Tensor]:
    """BatchNorm as ``x * scale + shift`` with per-channel vectors broadcast to ``mid``.

    In training mode the statistics are those of the box centres of the batch.
    """
    dims = [0] + list(range(2, mid.dim()))
    if m.training or not m.track_running_stats:
        mean, var = mid.mean(dims), mid.var(dims, unbiased=False)
    else:
        mean, var = m.running_mean, m.running_var
    scale = torch.rsqrt(var + m.eps)
    if m.affine:
        scale = scale * m.weight
    shift = -mean * scale + (m.bias if m.affine else 0.0)
    view = [1, -1] + [1] * (mid.dim() - 2)
    return scale.view(view), shift.view(view)


def _ibp_batchnorm(m: nn.Module, mid: Tensor, rad: Tensor, trace: Trace) -> tuple[Tensor, Tensor]:
    scale, shift = _bn_affine(m, mid)  # type: ignore[arg-type]
    return mid * scale + shift, rad * scale.abs()


def _ibp_sequential(m: nn.Sequential, mid: Tensor, rad: Tensor, trace: Trace) -> tuple[Tensor, Tensor]:
    for child in m:
        mid, rad = ibp(child, mid, rad, trace)
    return mid, rad


def _ibp_residual(m: Residual, mid: Tensor, rad: Tensor, trace: Trace) -> tuple[Tensor, Tensor]:
    m1, r1 = ibp(m.body, mid, rad, trace)
    m2, r2 = ibp(m.shortcut, mid, rad, trace)
    return m1 + m2, r1 + r2


IBPRule = Callable[[nn.Module, Tensor, Tensor, Trace], tuple[Tensor, Tensor]]
IBP_RULES: dict[type, IBPRule] = {
    nn.Linear: _ibp_linear,
    nn.Conv2d: _ibp_conv,
    nn.ReLU: _ibp_relu,
    nn.Flatten: _ibp_same,
    nn.Identity: _ibp_same,
    nn.AvgPool2d: _ibp_avgpool,
    nn.BatchNorm1d: _ibp_batchnorm,
    nn.BatchNorm2d: _ibp_batchnorm,
    nn.Sequential: _ibp_sequential,
    Residual: _ibp_residual,
}
_CONTAINERS = (nn.Sequential, Residual)


def _rule(table: dict[type, Callable], m: nn.Module, algorithm: str) -> Callable:
    rule = table.get(type(m))
    if rule is None:
        raise ModelError(f"{algorithm} has no rule for module {type(m).__name__}")
    return rule


def ibp(module: nn.Module, mid: Tensor, rad: Tensor, trace: Trace | None = None) -> tuple[Tensor, Tensor]:
    """Interval bounds of ``module`` over the box ``mid +- rad``, as ``(mid, rad)``."""
    trace = [] if trace is None else trace
    if not isinstance(module, _CONTAINERS):
        trace.append((module, mid, rad))
    return _rule(IBP_RULES, module, "IBP")(module, mid, rad, trace)


# ------------------------------------------------------------------------------- CROWN


def _crown_linear(m: nn.Linear, A: Tensor, trace: Trace) -> tuple[Tensor, Tensor]:
    trace.pop()
    const = A @ m.bias if m.bias is not None else A.new_zeros(A.shape[:2])
    return A @ m.weight, const


def _conv_t(A: Tensor, weight: Tensor, m: nn.Module, in_shape: torch.Size, groups: int) -> Tensor:
    """The transpose of a convolution applied to ``A`` ``[B, S, C_out, H, W]``."""
    b, s = A.shape[:2]
    flat = A.reshape(b * s, *A.shape[2:])
    stride, pad, dil = (m.stride, m.padding, getattr(m, "dilation", 1))
    stride, pad, dil = (t if isinstance(t, tuple) else (t, t) for t in (stride, pad, dil))
    k = weight.shape[-2:]
    out_pad = [in_shape[-2 + i] - ((flat.shape[-2 + i] - 1) * stride[i] - 2 * pad[i] + dil[i] * (k[i] - 1) + 1)
               for i in range(2)]
    x = F.conv_transpose2d(flat, weight, None, stride, pad, tuple(out_pad), groups, dil)
    return x.reshape(b, s, *x.shape[1:])


def _crown_conv(m: nn.Conv2d, A: Tensor, trace: Trace) -> tuple[Tensor, Tensor]:
    _, mid, _ = trace.pop()
    const = (A.sum((-2, -1)) * m.bias).sum(-1) if m.bias is not None else A.new_zeros(A.shape[:2])
    return _conv_t(A, m.weight, m, mid.shape, m.groups), const


def _crown_avgpool(m: nn.AvgPool2d, A: Tensor, trace: Trace) -> tuple[Tensor, Tensor]:
    _, mid, _ = trace.pop()
    c = mid.shape[1]
    k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size, m.kernel_size)
    weight = A.new_full((c, 1, *k), 1.0 / (k[0] * k[1]))
    return _conv_t(A, weight, m, mid.shape, c), A.new_zeros(A.shape[:2])


def _crown_relu(m: nn.Module, A: Tensor, trace: Trace) -> tuple[Tensor, Tensor]:
    """CROWN's ReLU relaxation (:mod:`certify.relax`): chord above, adaptive slope below."""
    _, mid, rad = trace.pop()
    r = relu_relaxation(mid - rad, mid + rad)
    A_pos, A_neg = A.clamp(min=0), A.clamp(max=0)
    const = (A_neg * r.upper_bias.unsqueeze(1)).flatten(2).sum(-1)
    return A_pos * r.lower_slope.unsqueeze(1) + A_neg * r.upper_slope.unsqueeze(1), const


def _crown_reshape(m: nn.Module, A: Tensor, trace: Trace) -> tuple[Tensor, Tensor]:
    _, mid, _ = trace.pop()
    return A.reshape(*A.shape[:2], *mid.shape[1:]), A.new_zeros(A.shape[:2])


def _crown_batchnorm(m: nn.Module, A: Tensor, trace: Trace) -> tuple[Tensor, Tensor]:
    _, mid, _ = trace.pop()
    scale, shift = _bn_affine(m, mid)  # type: ignore[arg-type]
    const = (A * shift.unsqueeze(1)).flatten(2).sum(-1)
    return A * scale.unsqueeze(1), const


def _crown_sequential(m: nn.Sequential, A: Tensor, trace: Trace) -> tuple[Tensor, Tensor]:
    const = A.new_zeros(A.shape[:2])
    for child in reversed(m):
        A, c = crown(child, A, trace)
        const = const + c
    return A, const


def _crown_residual(m: Residual, A: Tensor, trace: Trace) -> tuple[Tensor, Tensor]:
    A2, c2 = crown(m.shortcut, A, trace)  # pushed last, popped first
    A1, c1 = crown(m.body, A, trace)
    return A1 + A2, c1 + c2


CROWNRule = Callable[[nn.Module, Tensor, Trace], tuple[Tensor, Tensor]]
CROWN_RULES: dict[type, CROWNRule] = {
    nn.Linear: _crown_linear,
    nn.Conv2d: _crown_conv,
    nn.ReLU: _crown_relu,
    nn.Flatten: _crown_reshape,
    nn.Identity: _crown_reshape,
    nn.AvgPool2d: _crown_avgpool,
    nn.BatchNorm1d: _crown_batchnorm,
    nn.BatchNorm2d: _crown_batchnorm,
    nn.Sequential: _crown_sequential,
    Residual: _crown_residual,
}


def crown(module: nn.Module, A: Tensor, trace: Trace) -> tuple[Tensor, Tensor]:
    """Back-substitute ``A @ module(x)`` to ``A' @ x + const`` (a lower bound).

    ``trace`` is the one filled by :func:`ibp` on the same module; it is consumed.
    """
    return _rule(CROWN_RULES, module, "CROWN")(module, A, trace)


def check_supported(model: nn.Module, method: Method = "crown-ibp") -> None:
    """Raise :class:`ModelError` naming the first module without a rule for ``method``."""
    tables = [IBP_RULES] + ([CROWN_RULES] if method == "crown-ibp" else [])
    for name, m in model.named_modules():
        for table in tables:
            if type(m) not in table:
                raise ModelError(f"{method}: no bound rule for module {name or '<root>'} ({type(m).__name__})")


# ------------------------------------------------------------------------ margins, loss


def _split_head(model: nn.Module) -> tuple[nn.Module, nn.Linear | None]:
    """``(body, last Linear)`` when the model is a Sequential ending in Linear."""
    if isinstance(model, nn.Sequential) and len(model) > 0:
        body, head = _split_head(model[-1])
        if head is not None:
            rest = list(model)[:-1] + ([body] if not _empty(body) else [])
            return nn.Sequential(*rest), head
    if isinstance(model, nn.Linear):
        return nn.Sequential(), model
    return model, None


def _empty(m: nn.Module) -> bool:
    return isinstance(m, nn.Sequential) and len(m) == 0


def spec_matrix(y: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``C`` ``[B, K, K]`` with row ``j`` = ``e_y - e_j`` (row ``y`` is zero)."""
    eye = torch.eye(num_classes, dtype=dtype, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def margin_lower_bounds(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    method: Method = "ibp",
    beta: float = 1.0,
    domain: tuple[float, float] = (0.0, 1.0),
    trace: Trace | None = None,
) -> Tensor:
    """Lower bounds ``[B, K]`` of ``f_y(x') - f_j(x')`` over ``||x' - x||_inf <= eps`` in ``domain``.

    ``method="crown-ibp"`` mixes ``beta * CROWN-IBP + (1 - beta) * IBP`` (Zhang et al. 2020);
    the last Linear layer is fused with the specification, so IBP bounds the margins directly.
    A given ``trace`` receives the IBP input boxes of every module but that last Linear.
    """
    lo = (x - eps).clamp(*domain)
    hi = (x + eps).clamp(*domain)
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    body, head = _split_head(model)
    trace = [] if trace is None else trace
    h_mid, h_rad = ibp(body, mid, rad, trace)
    if head is None:
        k = h_mid.shape[-1]
        W, b = spec_matrix(y, k, x.dtype), h_mid.new_zeros(x.shape[0], k)
    else:
        k = head.out_features
        C = spec_matrix(y, k, x.dtype)
        W = C @ head.weight
        b = C @ head.bias if head.bias is not None else h_mid.new_zeros(x.shape[0], k)
    lb_ibp = (W @ h_mid.unsqueeze(-1) - W.abs() @ h_rad.unsqueeze(-1)).squeeze(-1) + b
    if method == "ibp" or beta == 0:
        return lb_ibp
    if method != "crown-ibp":
        raise ValueError(f"unknown method {method!r}")
    A, const = crown(body, W, list(trace))
    lb_crown = (A * mid.unsqueeze(1) - A.abs() * rad.unsqueeze(1)).flatten(2).sum(-1) + const + b
    return beta * lb_crown + (1 - beta) * lb_ibp


def robust_cross_entropy(margin_lb: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy on the worst-case logits ``-margin_lb`` (``margin_lb[y] = 0``)."""
    return F.cross_entropy(-margin_lb, y)


def certified_loss(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    method: Method = "ibp",
    kappa: float = 0.0,
    beta: float = 1.0,
    lower: float = 0.0,
    upper: float = 1.0,
) -> Tensor:
    """``kappa * CE(model(x), y) + (1 - kappa) * robust CE`` over the ``eps`` box around ``x``.

    ``x`` ``[B, *in]`` with pixels in ``[lower, upper]``; ``y`` ``[B]`` class indices.
    ``beta`` mixes CROWN-IBP and IBP bounds for ``method="crown-ibp"`` (1 = all CROWN-IBP).
    """
    robust = robust_cross_entropy(margin_lower_bounds(model, x, y, eps, method, beta, (lower, upper)), y)
    if kappa == 0:
        return robust
    return kappa * F.cross_entropy(model(x), y) + (1 - kappa) * robust
