"""Helpers to make kinks and ties on purpose, and to accept any valid subgradient there.

At a tie, the gradient may send each output's upstream value to the tied elements
with any non-negative weights that sum to one; at a kink of relu or abs, any slope
between the one-sided slopes is valid.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def _atol(g: np.ndarray) -> float:
    return 1e-6 * (float(np.abs(g).max()) if g.size else 1.0) + 1e-12


def set_some(
    rng: np.random.Generator, arrays: dict, name: str, value: float, fraction: float = 0.35
) -> dict:
    """Set a random fraction (at least one element) of ``arrays[name]`` to ``value``."""
    x = arrays[name]
    if x.size == 0:
        return None
    chosen = rng.random(x.shape) < fraction
    chosen.reshape(-1)[int(rng.integers(x.size))] = True
    arrays[name] = np.where(chosen, value, x)
    return arrays


def kink_ok(
    x: np.ndarray,
    g: np.ndarray,
    grad: np.ndarray,
    *,
    below: float,
    above: float,
    at_kink: tuple[float, float],
) -> bool:
    """Elementwise op with one kink at 0: slopes ``below``/``above`` away from it, and any
    slope in ``at_kink`` on it."""
    atol = _atol(g)
    smooth = x != 0
    slope = np.where(x > 0, above, below)
    if not np.allclose(grad[smooth], (slope * g)[smooth], rtol=1e-5, atol=atol):
        return False
    low, high = at_kink
    lo = np.minimum(low * g, high * g)[~smooth]
    hi = np.maximum(low * g, high * g)[~smooth]
    kink_grad = grad[~smooth]
    return bool(np.all(kink_grad >= lo - atol) and np.all(kink_grad <= hi + atol))


def groups_ok(x: np.ndarray, grad: np.ndarray, groups: Iterable[tuple[np.ndarray, float]]) -> bool:
    """Max over disjoint groups: ``groups`` yields (flat indices into x, upstream value).

    Inside a group, elements below the maximum get nothing; tied maxima share the
    upstream value with weights that are non-negative and sum to one. Elements in no
    group get nothing.
    """
    flat_x, flat_grad = x.reshape(-1), grad.reshape(-1)
    covered = np.zeros(flat_x.size, dtype=bool)
    scales = []
    for indices, upstream in groups:
        atol = 1e-6 * abs(upstream) + 1e-12
        scales.append(abs(upstream))
        covered[indices] = True
        values, given = flat_x[indices], flat_grad[indices]
        top = values == values.max()
        if np.any(np.abs(given[~top]) > atol):
            return False
        if np.any(given[top] * upstream < -atol):
            return False
        if abs(given[top].sum() - upstream) > 1e-5 * abs(upstream) + 1e-12:
            return False
    atol = 1e-6 * max(scales, default=1.0) + 1e-12
    return bool(np.all(np.abs(flat_grad[~covered]) <= atol))


def reduction_groups(shape: tuple[int, ...], dim, g: np.ndarray, keepdim: bool):
    """The groups of a reduction over ``dim``: one per output element."""
    ndim = len(shape)
    axes = tuple(range(ndim)) if dim is None else (dim if isinstance(dim, tuple) else (dim,))
    axes = tuple(a % ndim for a in axes) if ndim else ()
    index = np.arange(int(np.prod(shape, dtype=np.int64))).reshape(shape)
    kept = [a for a in range(ndim) if a not in axes]
    moved = np.moveaxis(index, kept, list(range(len(kept)))) if ndim else index
    out_shape = tuple(shape[a] for a in kept)
    groups = moved.reshape(int(np.prod(out_shape, dtype=np.int64)), -1)
    upstream = np.asarray(g).reshape(-1)
    for i in range(groups.shape[0]):
        yield groups[i], float(upstream[i])


def tie_with_max(rng: np.random.Generator, arrays: dict, params: dict) -> dict | None:
    """Make some elements equal to the maximum of their reduction slice."""
    x = arrays["input"]
    if x.size == 0:
        return None
    dim = params.get("dim")
    top = np.max(x, axis=dim, keepdims=True)
    chosen = rng.random(x.shape) < 0.3
    arrays["input"] = np.where(chosen, np.broadcast_to(top, x.shape), x)
    return arrays
