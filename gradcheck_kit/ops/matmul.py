"""03_matmul: matrix products, linear layers, softmax and losses."""

from __future__ import annotations

import numpy as np

from ..domains import Given, Real
from ..layouts import large, random_shape, shape_text
from ..registry import OpSpec, register

A = "03_matmul"


def _matmul_layouts(rng, hidden):
    pairs = [
        ("basic", (3, 4), (4, 5)),
        ("basic", (4, 4), (4, 4)),
        ("1-d", (4,), (4, 5)),
        ("1-d", (3, 4), (4,)),
        ("1-d", (4,), (4,)),
        ("batch", (2, 3, 4), (4, 5)),
        ("batch", (3, 4), (2, 4, 5)),
        ("broadcast", (2, 1, 3, 4), (5, 4, 2)),
        ("degenerate", (1, 4), (4, 1)),
        ("degenerate", (0, 3), (3, 2)),
    ]
    if hidden:
        m, k, n = (int(v) for v in rng.integers(1, 6, size=3))
        batch = random_shape(rng, 1, 2, 3)
        pairs.append(("batch", batch + (m, k), (k, n)))
        pairs.append(("basic", (k, k), (k, k)))
    for family, left, right in pairs:
        label = f"{shape_text(left)} @ {shape_text(right)}"
        yield family, label, {"input1": left, "input2": right}, {}


def _matmul_transposed(arrays, params, g):
    """The classic slip: g @ y and x @ g instead of g @ y.T and x.T @ g."""
    x, y = arrays["input1"], arrays["input2"]
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != x.shape[1] or y.shape[0] != y.shape[1]:
        return {}
    return {"input1": g @ y, "input2": x @ g}


register(
    OpSpec(
        name="matmul_backward",
        assignment=A,
        forward=lambda input1, input2: np.matmul(input1, input2),
        inputs={"input1": Real(), "input2": Real()},
        large=large("(100,150) @ (150,100)", {"input1": (100, 150), "input2": (150, 100)}),
        layouts=_matmul_layouts,
        points=3.0,
        broadcasting=False,
        mistakes={"transpose": _matmul_transposed},
    )
)


def _linear_layouts(rng, hidden):
    patterns = [
        ("basic", (5, 3), (4, 3), True),
        ("batch", (2, 5, 3), (4, 3), True),
        ("basic", (5, 3), (4, 3), False),
        ("1-d", (3,), (2, 3), True),
        ("degenerate", (1, 1), (1, 1), True),
    ]
    if hidden:
        n, i, o = (int(v) for v in rng.integers(1, 7, size=3))
        patterns.append(("basic", (n, i), (o, i), True))
        patterns.append(("batch", (2, n, i), (o, i), bool(rng.random() < 0.5)))
    for family, x, w, with_bias in patterns:
        label = f"x {shape_text(x)}, weight {shape_text(w)}" + ("" if with_bias else ", no bias")
        shapes = {"input": x, "weight": w, "bias": (w[0],) if with_bias else None}
        yield family, label, shapes, {}


register(
    OpSpec(
        name="linear_backward",
        assignment=A,
        forward=lambda input, weight, bias: input @ weight.T + (0.0 if bias is None else bias),
        inputs={"input": Real(), "weight": Real(), "bias": Real()},
        large=large(
            "x (250,100), weight (50,100)",
            {"input": (250, 100), "weight": (50, 100), "bias": (50,)},
        ),
        layouts=_linear_layouts,
        points=3.0,
    )
)


def _softmax(x, dim):
    shifted = x - np.max(x, axis=dim, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=dim, keepdims=True)


def _log_softmax(x, dim):
    shifted = x - np.max(x, axis=dim, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=dim, keepdims=True))


def _softmax_layouts(rng, hidden):
    patterns = [
        ("basic", (4, 5), -1),
        ("dims", (4, 5), 0),
        ("dims", (2, 3, 4), 1),
        ("basic", (6,), 0),
        ("degenerate", (3, 1), -1),
    ]
    if hidden:
        shape = random_shape(rng, 1, 3, 6)
        patterns.append(("dims", shape, int(rng.integers(-len(shape), len(shape)))))
    for family, shape, dim in patterns:
        yield family, f"shape {shape_text(shape)}, dim={dim}", {"input": shape}, {"dim": dim}
    # logits large enough that exp overflows unless the maximum is subtracted first
    large = rng.uniform(-3, 3, size=(3, 5)) + 800.0
    yield "large", "large logits (3,5) near 800, dim=-1", {"input": large}, {"dim": -1}


for _name, _forward in (("softmax_backward", _softmax), ("log_softmax_backward", _log_softmax)):
    register(
        OpSpec(
            name=_name,
            assignment=A,
            forward=_forward,
            inputs={"input": Real()},
            params={"dim": -1},
            large=large("shape (150,200), dim=-1", {"input": (150, 200)}, {"dim": -1}),
            layouts=_softmax_layouts,
            points=3.0,
        )
    )


def _cross_entropy(input, target):
    rows = np.arange(input.shape[0])
    return -np.mean(_log_softmax(input, 1)[rows, target])


def _cross_entropy_layouts(rng, hidden):
    sizes = [(4, 3), (8, 5), (1, 4), (5, 1)]
    if hidden:
        sizes += [tuple(int(v) for v in rng.integers(1, 10, size=2))]
    for n, c in sizes:
        family = "degenerate" if 1 in (n, c) else "basic"
        target = rng.integers(0, c, size=n)
        yield family, f"logits ({n},{c})", {"input": (n, c), "target": target}, {}
    large = rng.uniform(-3, 3, size=(4, 6)) + 800.0
    yield (
        "large",
        "large logits (4,6) near 800",
        {"input": large, "target": rng.integers(0, 6, size=4)},
        {},
    )


register(
    OpSpec(
        name="cross_entropy_backward",
        assignment=A,
        forward=_cross_entropy,
        inputs={"input": Real(), "target": Given()},
        differentiable=("input",),
        large=large("logits (1000,30)", {"input": (1000, 30), "target": np.arange(1000) % 30}),
        layouts=_cross_entropy_layouts,
        points=3.0,
    )
)


def _mse_layouts(rng, hidden):
    shapes = [(4, 3), (6,), (), (2, 3, 4)]
    if hidden:
        shapes.append(random_shape(rng, 1, 3))
    for shape in shapes:
        yield "basic", f"shape {shape_text(shape)}", {"input": shape, "target": shape}, {}


register(
    OpSpec(
        name="mse_loss_backward",
        assignment=A,
        forward=lambda input, target: np.mean((input - target) ** 2),
        inputs={"input": Real(), "target": Real()},
        large=large("shape (150,200)", {"input": (150, 200), "target": (150, 200)}),
        layouts=_mse_layouts,
        points=2.0,
    )
)
