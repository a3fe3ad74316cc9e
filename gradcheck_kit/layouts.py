"""Reusable layout generators: which shapes and parameters a family of ops is tried on.

A layout generator takes ``(rng, hidden)`` and yields layouts
``(family, label, {input: shape or array}, {param: value})``. Public cases use fixed
draws; hidden ones (``hidden=True``) add random draws of the same patterns, so a
student cannot tune an answer to the public shapes alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .registry import Layout


def shape_text(shape: tuple[int, ...]) -> str:
    """``(4, 3)`` -> ``"(4,3)"``; ``(3,)`` -> ``"(3,)"``; ``()`` -> ``"()"``."""
    if len(shape) == 1:
        return f"({shape[0]},)"
    return "(" + ",".join(str(n) for n in shape) + ")"


def random_shape(
    rng: np.random.Generator, min_rank: int = 1, max_rank: int = 3, max_size: int = 5
) -> tuple[int, ...]:
    rank = int(rng.integers(min_rank, max_rank + 1))
    return tuple(int(n) for n in rng.integers(2, max_size + 1, size=rank))


def random_broadcast_partner(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that broadcasts to ``shape``: some leading axes dropped, some axes set to 1."""
    drop = int(rng.integers(0, len(shape) + 1))
    kept = list(shape[drop:])
    for axis in range(len(kept)):
        if rng.random() < 0.4:
            kept[axis] = 1
    return tuple(kept)


def unary_layouts(rng: np.random.Generator, hidden: bool) -> Iterator[Layout]:
    yield "basic", "shape (3,4)", {"input": (3, 4)}, {}
    yield "basic", "shape (5,)", {"input": (5,)}, {}
    yield "degenerate", "0-d input ()", {"input": ()}, {}
    yield "degenerate", "size-1 axes (1,4,1)", {"input": (1, 4, 1)}, {}
    yield "degenerate", "zero-size (0,3)", {"input": (0, 3)}, {}
    if hidden:
        for _ in range(3):
            shape = random_shape(rng, 1, 4)
            yield "basic", f"shape {shape_text(shape)}", {"input": shape}, {}


#: Fixed broadcasting pairs: (first, second); every pattern the curriculum names.
BROADCAST_PAIRS: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = [
    ("basic", (3, 4), (3, 4)),
    ("broadcast", (4, 3), (3,)),
    ("broadcast", (3,), (4, 3)),
    ("broadcast", (4, 3), (4, 1)),
    ("broadcast", (4, 1), (1, 3)),
    ("broadcast", (1, 5, 6), (2, 1, 6)),
    ("broadcast", (3, 4, 5, 6, 7), (6, 7)),
    ("broadcast", (3, 4), ()),
    ("broadcast", (), (2, 3)),
    ("degenerate", (), ()),
    ("degenerate", (0, 3), (3,)),
    ("degenerate", (2, 1, 3), (1, 0, 1)),
]


def broadcast_layouts(count: int, names: tuple[str, ...] | None = None):
    """Layouts for an elementwise op of ``count`` broadcasting inputs."""
    names = names or tuple(f"input{i + 1}" for i in range(count))

    def layouts(rng: np.random.Generator, hidden: bool) -> Iterator[Layout]:
        for family, first, second in BROADCAST_PAIRS:
            shapes = ([first, second] * count)[:count]
            yield _broadcast_layout(family, names, shapes)
        if hidden:
            for _ in range(4):
                out = random_shape(rng, 1, 4)
                shapes = [random_broadcast_partner(rng, out) for _ in range(count)]
                shapes[int(rng.integers(count))] = out
                yield _broadcast_layout("broadcast", names, shapes)

    return layouts


def _broadcast_layout(family: str, names: tuple[str, ...], shapes: list) -> Layout:
    if family == "broadcast" and len(set(shapes)) == 1:
        family = "basic"  # a random draw may give equal shapes: call it what it is
    label = ("broadcast " if family == "broadcast" else "shapes ") + " with ".join(
        shape_text(s) for s in shapes
    )
    return family, label, dict(zip(names, shapes)), {}


def reduction_layouts(allow_empty_reduction: bool = True, keepdim: bool = True):
    """Layouts for ``x.op(dim, keepdim)``: every way PyTorch lets ``dim`` be given."""

    def layouts(rng: np.random.Generator, hidden: bool) -> Iterator[Layout]:
        patterns: list[tuple[str, tuple[int, ...], object]] = [
            ("dims", (3, 4, 5), None),
            ("dims", (3, 4, 5), 1),
            ("dims", (3, 4, 5), -1),
            ("dims", (3, 4, 5), (0, 2)),
            ("basic", (6,), 0),
            ("degenerate", (), None),
            ("degenerate", (3, 1, 4), 1),
            ("degenerate", (0, 4), 1),
        ]
        if allow_empty_reduction:
            patterns.append(("degenerate", (2, 0), 1))
        for family, shape, dim in patterns:
            for keep in (False, True) if keepdim else (False,):
                yield _reduction_layout(family, shape, dim, keep, keepdim)
        if hidden:
            for _ in range(4):
                shape = random_shape(rng, 1, 4)
                axes = [a for a in range(len(shape)) if rng.random() < 0.5] or [0]
                dim: object = tuple(axes) if len(axes) > 1 else axes[0] - len(shape)
                yield _reduction_layout("dims", shape, dim, bool(rng.random() < 0.5), keepdim)

    return layouts


def _reduction_layout(family, shape, dim, keep, has_keepdim) -> Layout:
    params = {"dim": dim, "keepdim": keep} if has_keepdim else {"dim": dim}
    label = f"shape {shape_text(shape)}, dim={dim!r}" + (", keepdim" if keep else "")
    return family, label, {"input": shape}, params


def reduced_size(shape: tuple[int, ...], dim) -> int:
    """How many elements one output of a reduction over ``dim`` sums."""
    if dim is None:
        return int(np.prod(shape, dtype=np.int64))
    axes = dim if isinstance(dim, tuple) else (dim,)
    return int(np.prod([shape[a] for a in axes], dtype=np.int64))


def large(label: str, shapes: dict, params: dict | None = None) -> Layout:
    """The layout of an op's efficiency case: about 10^5 elements, enough that a Python
    loop over them stands out from whole-array NumPy by two orders of magnitude."""
    return "efficiency", label, shapes, dict(params or {})
