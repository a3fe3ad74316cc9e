"""04_conv: 2-D convolution, pooling and batch normalization (NCHW, as in PyTorch)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..domains import Distinct, Real
from ..layouts import large, shape_text
from ..registry import OpSpec, register
from .subgradients import groups_ok

A = "04_conv"


def pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if np.ndim(value) == 0 else (int(value[0]), int(value[1]))


def conv2d(input, weight, bias, stride=1, padding=0, dilation=1):
    """PyTorch's conv2d (cross-correlation), one kernel offset at a time."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    x = np.pad(input, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    kh, kw = weight.shape[2:]
    out_h = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    out_w = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((x.shape[0], weight.shape[0], out_h, out_w))
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (out_h - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (out_w - 1) + 1, sw)
            out += np.einsum("nchw,oc->nohw", x[:, :, rows, cols], weight[:, :, i, j])
    if bias is not None:
        out += bias[None, :, None, None]
    return out


def _conv_layouts(rng, hidden):
    patterns = [
        ("basic", (2, 3, 5, 5), (4, 3, 3, 3), True, {}),
        ("basic", (1, 1, 4, 4), (1, 1, 2, 2), False, {}),
        ("stride", (2, 2, 7, 6), (3, 2, 3, 2), True, {"stride": 2}),
        ("padding", (1, 2, 4, 5), (2, 2, 3, 3), True, {"padding": 1}),
        ("dilation", (1, 2, 7, 7), (2, 2, 3, 3), True, {"dilation": 2}),
        (
            "pairs",
            (2, 2, 8, 7),
            (3, 2, 3, 2),
            True,
            {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2)},
        ),
        ("uneven", (1, 1, 6, 6), (1, 1, 3, 3), True, {"stride": 4}),
    ]
    if hidden:
        n, c, o = (int(v) for v in rng.integers(1, 4, size=3))
        k = int(rng.integers(1, 4))
        stride = int(rng.integers(1, 3))
        patterns.append(
            (
                "basic",
                (n, c, 6, 5),
                (o, c, k, k),
                bool(rng.random() < 0.5),
                {"stride": stride, "padding": int(rng.integers(0, 2))},
            )
        )
    for family, x, w, with_bias, params in patterns:
        label = f"x {shape_text(x)}, weight {shape_text(w)}" + ("" if with_bias else ", no bias")
        label += "".join(f", {k}={v}" for k, v in params.items())
        full = {"stride": 1, "padding": 0, "dilation": 1, **params}
        yield family, label, {"input": x, "weight": w, "bias": (w[0],) if with_bias else None}, full


register(
    OpSpec(
        name="conv2d_backward",
        assignment=A,
        forward=conv2d,
        inputs={"input": Real(), "weight": Real(), "bias": Real()},
        params={"stride": 1, "padding": 0, "dilation": 1},
        large=large(
            "x (2,8,16,16), weight (16,8,3,3)",
            {"input": (2, 8, 16, 16), "weight": (16, 8, 3, 3), "bias": (16,)},
            {"stride": 1, "padding": 1, "dilation": 1},
        ),
        layouts=_conv_layouts,
        points=5.0,
    )
)


def windows(x: np.ndarray, kernel_size, stride=None) -> np.ndarray:
    """(N, C, out_h, out_w, kh, kw) view of the pooling windows of ``x``."""
    kh, kw = pair(kernel_size)
    sh, sw = pair(kernel_size if stride is None else stride)
    return sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


def _pool_layouts(rng, hidden):
    patterns = [
        ("basic", (2, 3, 4, 4), 2, None),
        ("overlap", (1, 2, 5, 5), 3, 1),
        ("uneven", (1, 2, 7, 5), 2, None),
        ("pairs", (2, 1, 6, 8), (2, 3), (2, 2)),
        ("stride", (1, 1, 7, 7), 2, 3),
    ]
    if hidden:
        k = int(rng.integers(2, 4))
        patterns.append(("basic", (1, 2, 7, 6), k, int(rng.integers(1, k + 1))))
    for family, shape, kernel, stride in patterns:
        label = f"x {shape_text(shape)}, kernel_size={kernel}" + (
            "" if stride is None else f", stride={stride}"
        )
        yield family, label, {"input": shape}, {"kernel_size": kernel, "stride": stride}


def _pool_groups(shape, kernel_size, stride, g):
    index = np.arange(int(np.prod(shape))).reshape(shape).astype(float)
    view = windows(index, kernel_size, stride)
    groups = view.reshape(view.shape[:4] + (-1,)).astype(np.int64)
    upstream = np.asarray(g)
    for position in np.ndindex(groups.shape[:4]):
        yield groups[position], float(upstream[position])


def _non_overlapping(params) -> bool:
    kernel = pair(params["kernel_size"])
    stride = pair(params["kernel_size"] if params.get("stride") is None else params["stride"])
    return all(s >= k for s, k in zip(stride, kernel))


def _tie_pool(rng, arrays, params):
    if not _non_overlapping(params):
        return None  # a tie shared by two windows has many valid splits; keep it checkable
    x = arrays["input"].copy()
    view = windows(x, params["kernel_size"], params.get("stride"))
    for position in np.ndindex(view.shape[:4]):
        if rng.random() < 0.5:
            window = view[position]
            top = window.max()
            flat_choice = int(rng.integers(window.size))
            i, j = np.unravel_index(flat_choice, window.shape)
            kh, kw = pair(params["kernel_size"])
            sh, sw = pair(
                params["kernel_size"] if params.get("stride") is None else params["stride"]
            )
            n, c, oh, ow = position
            x[n, c, oh * sh + i, ow * sw + j] = top
    arrays["input"] = x
    return arrays


def _pool_subgradient_ok(arrays, params, g, grads) -> bool:
    x = arrays["input"]
    groups = _pool_groups(x.shape, params["kernel_size"], params.get("stride"), g)
    return groups_ok(x, grads["input"], groups)


def _pool(name: str, reduce: str, domain, **options) -> OpSpec:
    """max_pool2d / avg_pool2d: ``reduce`` ("max" or "mean") over each window."""
    return register(
        OpSpec(
            name=name,
            assignment=A,
            forward=lambda input, kernel_size, stride: getattr(
                windows(input, kernel_size, stride), reduce
            )(axis=(-2, -1)),
            inputs={"input": domain},
            params={"kernel_size": None, "stride": None},
            large=large(
                "x (4,8,32,32), kernel_size=2",
                {"input": (4, 8, 32, 32)},
                {"kernel_size": 2, "stride": None},
            ),
            layouts=_pool_layouts,
            points=3.0,
            **options,
        )
    )


_pool(
    "max_pool2d_backward",
    "max",
    Distinct(),
    make_ties=_tie_pool,
    subgradient_ok=_pool_subgradient_ok,
)
_pool("avg_pool2d_backward", "mean", Real())


def batch_norm(input, weight, bias, eps=1e-5):
    axes = (0,) + tuple(range(2, input.ndim))
    shape = (1, -1) + (1,) * (input.ndim - 2)
    mean = input.mean(axis=axes, keepdims=True)
    var = input.var(axis=axes, keepdims=True)
    return (input - mean) / np.sqrt(var + eps) * weight.reshape(shape) + bias.reshape(shape)


def _batch_norm_layouts(rng, hidden):
    shapes = [(6, 3), (2, 3, 4, 5), (4, 1), (2, 2, 1, 3)]
    if hidden:
        shapes.append((int(rng.integers(2, 6)), int(rng.integers(1, 4)), 3, 2))
    for shape in shapes:
        family = "basic" if len(shape) == 2 else "nchw"
        yield (
            family,
            f"x {shape_text(shape)}",
            {"input": shape, "weight": (shape[1],), "bias": (shape[1],)},
            {"eps": 1e-5},
        )


register(
    OpSpec(
        name="batch_norm_backward",
        assignment=A,
        forward=batch_norm,
        inputs={"input": Real(), "weight": Real(), "bias": Real()},
        params={"eps": 1e-5},
        large=large(
            "x (32,16,8,8)",
            {"input": (32, 16, 8, 8), "weight": (16,), "bias": (16,)},
            {"eps": 1e-5},
        ),
        layouts=_batch_norm_layouts,
        points=4.0,
    )
)
