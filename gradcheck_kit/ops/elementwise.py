"""01_elementwise: unary ops, broadcasting binary ops, ``where`` and ``unbroadcast``."""

from __future__ import annotations

import numpy as np

from ..domains import Interleaved, Mask, Positive, Real
from ..layouts import BROADCAST_PAIRS, broadcast_layouts, large, shape_text, unary_layouts
from ..registry import OpSpec, register
from .subgradients import kink_ok, set_some

A = "01_elementwise"


def _unary(name: str, forward, domain=Real(), points: float = 1.0, **options) -> OpSpec:
    return register(
        OpSpec(
            name=name,
            assignment=A,
            forward=forward,
            inputs={"input": domain},
            layouts=unary_layouts,
            large=large("shape (150,200)", {"input": (150, 200)}),
            points=points,
            **options,
        )
    )


def _binary(
    name: str, forward, first=Real(), second=Real(), points: float = 2.0, **options
) -> OpSpec:
    return register(
        OpSpec(
            name=name,
            assignment=A,
            forward=forward,
            inputs={"input1": first, "input2": second},
            layouts=broadcast_layouts(2),
            large=large(
                "broadcast (150,200) with (200,)", {"input1": (150, 200), "input2": (200,)}
            ),
            points=points,
            broadcasting=True,
            **options,
        )
    )


# --- unbroadcast(grad, shape): the helper every broadcasting backward needs -----------


def _unbroadcast_layouts(rng, hidden):
    for _family, first, second in BROADCAST_PAIRS:
        out = np.broadcast_shapes(first, second)
        for shape in dict.fromkeys([first, second]):
            label = f"unbroadcast {shape_text(out)} to {shape_text(shape)}"
            yield "broadcast", label, {"input": shape}, {"out_shape": out}


register(
    OpSpec(
        name="unbroadcast",
        assignment=A,
        forward=lambda input, out_shape: np.broadcast_to(input, out_shape),
        inputs={"input": Real()},
        large=large(
            "unbroadcast (150,200) to (200,)", {"input": (200,)}, {"out_shape": (150, 200)}
        ),
        layouts=_unbroadcast_layouts,
        points=2.0,
        broadcasting=True,
        call=lambda arrays, output_grad, params: (output_grad, np.shape(arrays["input"])),
        description="sums grad down to shape (the reverse of NumPy broadcasting)",
    )
)

# --- unary ops -------------------------------------------------------------------------

_unary("neg_backward", lambda input: -input)
_unary("exp_backward", np.exp)
_unary("log_backward", np.log, Positive())
_unary("sin_backward", np.sin)
_unary("cos_backward", np.cos)
_unary("tanh_backward", np.tanh)
_unary("sigmoid_backward", lambda input: 1.0 / (1.0 + np.exp(-input)))


def _zero_some(rng, arrays, params):
    return set_some(rng, arrays, "input", 0.0)


_unary(
    "relu_backward",
    lambda input: np.maximum(input, 0.0),
    Real(avoid=(0.0,)),
    make_ties=_zero_some,
    subgradient_ok=lambda arrays, params, g, grads: kink_ok(
        arrays["input"], g, grads["input"], below=0.0, above=1.0, at_kink=(0.0, 1.0)
    ),
    mistakes={"upstream": lambda a, p, g: {"input": (a["input"] > 0).astype(float)}},
)
_unary(
    "abs_backward",
    np.abs,
    Real(avoid=(0.0,)),
    make_ties=_zero_some,
    subgradient_ok=lambda arrays, params, g, grads: kink_ok(
        arrays["input"], g, grads["input"], below=-1.0, above=1.0, at_kink=(-1.0, 1.0)
    ),
)

# --- broadcasting binary ops -------------------------------------------------------------

_binary("add_backward", lambda input1, input2: input1 + input2)
_binary("sub_backward", lambda input1, input2: input1 - input2)
_binary("mul_backward", lambda input1, input2: input1 * input2)
_binary("div_backward", lambda input1, input2: input1 / input2, second=Real(low=0.5, high=2.0))
_binary("pow_backward", lambda input1, input2: input1**input2, first=Positive())


def _tie_maximum(rng, arrays, params):
    """Copy some values of the smaller input into the full-shaped one, creating ties."""
    x, y = arrays["input1"], arrays["input2"]
    out = np.broadcast_shapes(x.shape, y.shape)
    full, other = ("input1", "input2") if x.shape == out else ("input2", "input1")
    if arrays[full].shape != out or not arrays[full].size:
        return None
    tie = rng.random(out) < 0.4
    copied = np.broadcast_to(arrays[other], out)
    arrays[full] = np.where(tie, copied, arrays[full])
    return arrays


def _maximum_subgradient_ok(arrays, params, g, grads) -> bool:
    x, y = arrays["input1"], arrays["input2"]
    out = np.broadcast_shapes(x.shape, y.shape)
    if x.shape == out:
        full, other = "input1", "input2"
    elif y.shape == out:
        full, other = "input2", "input1"
    else:
        return False
    mine, theirs = np.broadcast_to(arrays[full], out), np.broadcast_to(arrays[other], out)
    tie = mine == theirs
    given = grads[full]
    scale = 1e-6 * (np.abs(g).max() if g.size else 1.0) + 1e-12
    exact_mine = g * (mine > theirs)
    if not np.allclose(given[~tie], exact_mine[~tie], rtol=1e-5, atol=scale):
        return False
    share = given[tie]
    if np.any(share * g[tie] < -scale) or np.any(np.abs(share) > np.abs(g[tie]) + scale):
        return False
    rest = np.where(tie, g - given, g * (theirs > mine))
    from .._broadcast import unbroadcast

    return np.allclose(
        grads[other],
        unbroadcast(rest, arrays[other].shape),
        rtol=1e-5,
        atol=scale * max(1, rest.size),
    )


_binary(
    "maximum_backward",
    np.maximum,
    first=Interleaved(0.0),
    second=Interleaved(0.1),
    points=3.0,
    make_ties=_tie_maximum,
    subgradient_ok=_maximum_subgradient_ok,
)

register(
    OpSpec(
        name="where_backward",
        assignment=A,
        forward=lambda condition, input1, input2: np.where(condition, input1, input2),
        inputs={"condition": Mask(), "input1": Real(), "input2": Real()},
        differentiable=("input1", "input2"),
        large=large(
            "broadcast (150,200) with (200,) with (150,1)",
            {"condition": (150, 200), "input1": (200,), "input2": (150, 1)},
        ),
        layouts=broadcast_layouts(3, ("condition", "input1", "input2")),
        points=2.0,
        broadcasting=True,
    )
)
