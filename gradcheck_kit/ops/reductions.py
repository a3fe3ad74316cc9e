"""02_reductions: reductions over ``dim``, shape ops, indexing, concatenation and scans."""

from __future__ import annotations

import numpy as np

from ..domains import Distinct, Real
from ..layouts import large, random_shape, reduced_size, reduction_layouts, shape_text
from ..registry import OpSpec, register
from .subgradients import groups_ok, reduction_groups, tie_with_max

A = "02_reductions"
_DIM = {"dim": None, "keepdim": False}


def _reduction(
    name: str,
    forward,
    domain=Real(),
    points: float = 2.0,
    allow_empty_reduction: bool = True,
    **options,
) -> OpSpec:
    return register(
        OpSpec(
            name=name,
            assignment=A,
            forward=forward,
            inputs={"input": domain},
            params=dict(_DIM),
            large=large(
                "shape (30,25,40), dim=1", {"input": (30, 25, 40)}, {"dim": 1, "keepdim": False}
            ),
            layouts=reduction_layouts(allow_empty_reduction),
            points=points,
            **options,
        )
    )


_reduction("sum_backward", lambda input, dim, keepdim: np.sum(input, axis=dim, keepdims=keepdim))
_reduction(
    "mean_backward",
    lambda input, dim, keepdim: np.mean(input, axis=dim, keepdims=keepdim),
    allow_empty_reduction=False,
)


def _put_zeros(rng, arrays, params):
    """A lone zero in one slice and two zeros in another (the hard case for prod): with
    a single slice (dim=None), one or the other."""
    x = arrays["input"].copy()
    if x.size == 0:
        return None
    dim = params.get("dim")
    axes = range(x.ndim) if dim is None else (dim if isinstance(dim, tuple) else (dim,))
    axes = sorted(a % x.ndim for a in axes) if x.ndim else []
    kept = [a for a in range(x.ndim) if a not in axes]
    slices = list(np.ndindex(*[x.shape[a] for a in kept]))
    picks = rng.permutation(len(slices))[:2]
    counts = [1, 2] if len(picks) == 2 else [int(rng.integers(1, 3))]
    for pick, count in zip(picks, counts):
        inside = list(np.ndindex(*[x.shape[a] for a in axes]))
        for spot in rng.permutation(len(inside))[: min(count, len(inside))]:
            index = [0] * x.ndim
            for a, i in zip(kept, slices[pick]):
                index[a] = i
            for a, i in zip(axes, inside[spot]):
                index[a] = i
            x[tuple(index)] = 0.0
    arrays["input"] = x
    return arrays


_reduction(
    "prod_backward",
    lambda input, dim, keepdim: np.prod(input, axis=dim, keepdims=keepdim),
    points=3.0,
    make_zeros=_put_zeros,
)


def _max_subgradient_ok(arrays, params, g, grads) -> bool:
    x = arrays["input"]
    groups = reduction_groups(x.shape, params.get("dim"), g, params.get("keepdim", False))
    return groups_ok(x, grads["input"], groups)


_reduction(
    "max_backward",
    lambda input, dim, keepdim: np.max(input, axis=dim, keepdims=keepdim),
    Distinct(),
    points=3.0,
    allow_empty_reduction=False,
    make_ties=tie_with_max,
    subgradient_ok=_max_subgradient_ok,
)


def _var_layouts(rng, hidden):
    base = reduction_layouts(allow_empty_reduction=False)
    for family, label, shapes, params in base(rng, hidden):
        for correction in (1, 0) if family == "dims" else (1,):
            if reduced_size(shapes["input"], params["dim"]) <= correction:
                continue
            note = f", correction={correction}" if correction != 1 else ""
            yield family, label + note, shapes, {**params, "correction": correction}


register(
    OpSpec(
        name="var_backward",
        assignment=A,
        forward=lambda input, dim, keepdim, correction: np.var(
            input, axis=dim, ddof=correction, keepdims=keepdim
        ),
        inputs={"input": Real()},
        params={**_DIM, "correction": 1},
        large=large(
            "shape (30,25,40), dim=1",
            {"input": (30, 25, 40)},
            {"dim": 1, "keepdim": False, "correction": 1},
        ),
        layouts=_var_layouts,
        points=3.0,
    )
)

# --- shape ops ----------------------------------------------------------------------------


def _shape_change_layouts(verb: str, family: str, pairs: list, extra):
    """Layouts that take ``input`` of one shape to another (reshape, expand); ``extra``
    draws one more pair from the rng for hidden cases."""

    def layouts(rng, hidden):
        for before, after in pairs + ([extra(rng)] if hidden else []):
            label = f"{verb} {shape_text(before)} to {shape_text(after)}"
            yield family, label, {"input": before}, {"shape": after}

    return layouts


def _flattened(rng):
    shape = random_shape(rng, 2, 3)
    return shape, (int(np.prod(shape)),)


_reshape_layouts = _shape_change_layouts(
    "reshape",
    "basic",
    [((3, 4), (12,)), ((2, 3, 4), (4, 6)), ((6,), (2, 1, 3)), ((), (1, 1)), ((0, 4), (2, 0))],
    _flattened,
)


register(
    OpSpec(
        name="reshape_backward",
        assignment=A,
        forward=lambda input, shape: np.reshape(input, shape),
        inputs={"input": Real()},
        large=large("reshape (150,200) to (200,150)", {"input": (150, 200)}, {"shape": (200, 150)}),
        layouts=_reshape_layouts,
        points=1.0,
        call=lambda arrays, output_grad, params: (arrays["input"], output_grad),
    )
)


def _permute_layouts(rng, hidden):
    patterns = [
        ((3, 4), (1, 0)),
        ((2, 3, 4), (2, 0, 1)),
        ((2, 3, 4), (1, 2, 0)),
        ((2, 3, 4, 5), (0, 3, 1, 2)),
        ((4,), (0,)),
    ]
    if hidden:
        shape = random_shape(rng, 3, 4)
        patterns.append((shape, tuple(int(a) for a in rng.permutation(len(shape)))))
    for shape, dims in patterns:
        yield "basic", f"permute {shape_text(shape)} by {dims}", {"input": shape}, {"dims": dims}


register(
    OpSpec(
        name="permute_backward",
        assignment=A,
        forward=lambda input, dims: np.transpose(input, dims),
        inputs={"input": Real()},
        params={"dims": None},
        large=large(
            "permute (30,25,40) by (2, 0, 1)", {"input": (30, 25, 40)}, {"dims": (2, 0, 1)}
        ),
        layouts=_permute_layouts,
        points=2.0,
    )
)


def _broadcast_from(rng):
    out = random_shape(rng, 2, 4)
    return tuple(1 if rng.random() < 0.5 else n for n in out[1:]), out


_expand_layouts = _shape_change_layouts(
    "expand",
    "broadcast",
    [
        ((3, 1), (3, 4)),
        ((4,), (2, 3, 4)),
        ((1, 3, 1), (2, 3, 5)),
        ((), (2, 2)),
        ((2, 3), (2, 3)),
        ((1,), (0,)),
    ],
    _broadcast_from,
)


register(
    OpSpec(
        name="expand_backward",
        assignment=A,
        forward=lambda input, shape: np.broadcast_to(input, shape),
        inputs={"input": Real()},
        large=large("expand (1,200) to (150,200)", {"input": (1, 200)}, {"shape": (150, 200)}),
        layouts=_expand_layouts,
        points=2.0,
        broadcasting=True,
        call=lambda arrays, output_grad, params: (arrays["input"], output_grad),
    )
)


def _getitem_layouts(rng, hidden):
    patterns = [
        ("int", (5, 3), (2,)),
        ("slice", (6, 4), (slice(1, 5, 2),)),
        ("negative step", (6,), (slice(None, None, -2),)),
        ("int and slice", (3, 4, 5), (1, slice(None), slice(2, None))),
        ("integer array with repeats", (5, 3), (np.array([0, 2, 2, 4, 0]),)),
        ("two integer arrays", (4, 5), (np.array([0, 1, 1]), np.array([2, 2, 4]))),
        ("boolean mask", (4, 3), None),
        ("newaxis and ellipsis", (2, 3, 4), (Ellipsis, None, 1)),
    ]
    for _label, shape, index in patterns:
        if index is None:
            index = (rng.random(shape) < 0.5,)
        yield (
            "basic",
            f"x{_index_text(index)} with x of shape {shape_text(shape)}",
            {"input": shape},
            {"index": index if len(index) > 1 else index[0]},
        )
    if hidden:
        shape = random_shape(rng, 2, 3, 6)
        picks = rng.integers(0, shape[0], size=int(rng.integers(2, 8)))
        yield (
            "basic",
            f"x[{picks.tolist()}] with x of shape {shape_text(shape)}",
            {"input": shape},
            {"index": picks},
        )


def _index_text(index: tuple) -> str:
    def one(item) -> str:
        if isinstance(item, slice):
            parts = ["" if v is None else str(v) for v in (item.start, item.stop, item.step)]
            return ":".join(parts[:2]) + (f":{parts[2]}" if item.step is not None else "")
        if item is Ellipsis:
            return "..."
        if item is None:
            return "None"
        if isinstance(item, np.ndarray):
            return "mask" if item.dtype == bool else str(item.tolist())
        return str(item)

    return "[" + ", ".join(one(item) for item in index) + "]"


register(
    OpSpec(
        name="getitem_backward",
        assignment=A,
        forward=lambda input, index: np.asarray(input[index]),
        inputs={"input": Real()},
        params={"index": None},
        large=large(
            "x[1000 indices with repeats] with x of shape (1500,20)",
            {"input": (1500, 20)},
            {"index": np.arange(1000) * 7 % 750},
        ),
        layouts=_getitem_layouts,
        points=3.0,
    )
)


def _cat_layouts(rng, hidden):
    patterns = [
        ([(2, 3), (4, 3)], 0),
        ([(2, 3), (2, 1), (2, 5)], 1),
        ([(3,), (4,)], 0),
        ([(2, 3, 4), (2, 3, 4)], -1),
        ([(2, 3), (0, 3)], 0),
        ([(3, 2)], 0),
    ]
    if hidden:
        count = int(rng.integers(2, 5))
        patterns.append(([(2, int(rng.integers(1, 4))) for _ in range(count)], 1))
    for shapes, dim in patterns:
        label = "cat " + ", ".join(shape_text(s) for s in shapes) + f" along dim={dim}"
        yield "basic", label, {"inputs": shapes}, {"dim": dim}


register(
    OpSpec(
        name="cat_backward",
        assignment=A,
        forward=lambda inputs, dim: np.concatenate(inputs, axis=dim),
        inputs={"inputs": Real()},
        params={"dim": 0},
        large=large(
            "cat (75,200), (75,200) along dim=0", {"inputs": [(75, 200), (75, 200)]}, {"dim": 0}
        ),
        layouts=_cat_layouts,
        points=2.0,
        returns_list=True,
    )
)


def _scan_layouts(rng, hidden):
    patterns = [((5,), 0), ((3, 4), 1), ((3, 4), 0), ((2, 3, 4), -1), ((2, 1, 3), 1), ((0, 3), 1)]
    if hidden:
        shape = random_shape(rng, 1, 3, 6)
        patterns.append((shape, int(rng.integers(-len(shape), len(shape)))))
    for shape, dim in patterns:
        family = "degenerate" if 0 in shape or 1 in shape else "dims"
        yield family, f"shape {shape_text(shape)}, dim={dim}", {"input": shape}, {"dim": dim}


register(
    OpSpec(
        name="cumsum_backward",
        assignment=A,
        forward=lambda input, dim: np.cumsum(input, axis=dim),
        inputs={"input": Real()},
        params={"dim": None},
        large=large("shape (150,200), dim=1", {"input": (150, 200)}, {"dim": 1}),
        layouts=_scan_layouts,
        points=2.0,
    )
)
register(
    OpSpec(
        name="cumprod_backward",
        assignment=A,
        forward=lambda input, dim: np.cumprod(input, axis=dim),
        inputs={"input": Real(low=0.5, high=1.5)},
        params={"dim": None},
        large=large("shape (6000,5), dim=1", {"input": (6000, 5)}, {"dim": 1}),
        layouts=_scan_layouts,
        points=3.0,
        make_zeros=_put_zeros,
    )
)
