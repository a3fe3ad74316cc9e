"""Float64 central differences of a NumPy forward.

Grading checks a backward by random projections: for a direction ``d``, the
student's vector-Jacobian product dotted with ``d`` must equal the directional
derivative of ``L(x) = <output_grad, f(x)>`` along ``d``, which costs two forward
evaluations whatever the size of ``x``. The full numerical gradient (two
evaluations per element) is computed where that is cheap, to compare element by
element as well, and to explain a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Relative step of the central difference: about the cube root of float64's epsilon,
#: which balances truncation error (O(h^2)) against rounding error (O(eps/h)).
RELATIVE_STEP = 6e-6


@dataclass(frozen=True)
class Leaf:
    """One differentiable array among an op's inputs: ``name`` or ``name[index]``."""

    name: str
    index: int | None = None

    @property
    def label(self) -> str:
        return self.name if self.index is None else f"{self.name}[{self.index}]"

    def get(self, arrays: dict[str, Any]) -> Any:
        value = arrays[self.name]
        return value if self.index is None else value[self.index]

    def replaced(self, arrays: dict[str, Any], new: np.ndarray) -> dict[str, Any]:
        updated = dict(arrays)
        if self.index is None:
            updated[self.name] = new
        else:
            items = list(arrays[self.name])
            items[self.index] = new
            updated[self.name] = items
        return updated


def leaves_of(names: Sequence[str], arrays: dict[str, Any]) -> list[Leaf]:
    """The differentiable arrays among ``arrays`` (lists expand, ``None`` is skipped)."""
    found = []
    for name in names:
        value = arrays[name]
        if isinstance(value, list):
            found += [Leaf(name, i) for i in range(len(value))]
        elif value is not None:
            found.append(Leaf(name))
    return found


def step_size(arrays: Sequence[np.ndarray]) -> float:
    """One step for all inputs, scaled by their spread rather than their size: shift-
    invariant forwards (softmax of logits near 800) need a step as fine as at 0."""
    values = [np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays]
    flat = np.concatenate(values) if values else np.zeros(0)
    spread = float(np.std(flat)) if flat.size > 1 else float(np.abs(flat).max(initial=0.0))
    # capped: inputs spread wider than that are spread to keep ties (max, max-pool) apart,
    # and a coarse step would step over the gaps between them
    return RELATIVE_STEP * min(max(1.0, spread), 10.0)


def directional_derivative(
    loss: Callable[[dict[str, Any]], float],
    arrays: dict[str, Any],
    leaves: Sequence[Leaf],
    directions: Sequence[np.ndarray],
    step: float,
) -> float:
    """Central difference of ``loss`` along ``directions`` (one per leaf): 2 evaluations."""

    def moved(sign: float) -> dict[str, Any]:
        moved_arrays = arrays
        for leaf, direction in zip(leaves, directions):
            base = np.asarray(leaf.get(arrays), dtype=np.float64)
            moved_arrays = leaf.replaced(moved_arrays, base + sign * step * direction)
        return moved_arrays

    return (loss(moved(1.0)) - loss(moved(-1.0))) / (2 * step)


def full_gradient_evals(arrays: dict[str, Any], leaves: Sequence[Leaf]) -> int:
    """Forward evaluations :func:`full_gradient` costs: two per element of every leaf."""
    return 2 * sum(int(np.size(leaf.get(arrays))) for leaf in leaves)


def full_gradient(
    loss: Callable[[dict[str, Any]], float],
    arrays: dict[str, Any],
    leaves: Sequence[Leaf],
) -> dict[str, np.ndarray]:
    """Central-difference gradient of ``loss`` with respect to every leaf, element by element."""
    arrays = {k: as_float64(v) for k, v in arrays.items()}
    h = step_size([np.asarray(leaf.get(arrays)) for leaf in leaves])
    gradients = {}
    for leaf in leaves:
        point = np.array(leaf.get(arrays), dtype=np.float64, order="C")
        moved = leaf.replaced(arrays, point)
        flat_point = point.reshape(-1)  # a view: moving one element moves it in ``moved``
        grad = np.zeros(point.shape)
        flat_grad = grad.reshape(-1)
        for i in range(point.size):
            original = flat_point[i]
            flat_point[i] = original + h
            up = loss(moved)
            flat_point[i] = original - h
            down = loss(moved)
            flat_point[i] = original
            flat_grad[i] = (up - down) / (2 * h)
        gradients[leaf.label] = grad
    return gradients


def as_float64(value: Any) -> Any:
    """Float arrays (also inside lists) promoted to float64; everything else as it is."""
    if isinstance(value, list):
        return [as_float64(v) for v in value]
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value.astype(np.float64)
    return value


def numerical_gradient(
    forward: Callable[..., Any],
    *inputs: Any,
    output_grad: Any = None,
) -> tuple[np.ndarray, ...]:
    """Gradient of ``sum(output_grad * forward(*inputs))`` with respect to each input.

    ``output_grad`` defaults to ones (so for a scalar forward this is its gradient).
    Inputs are promoted to float64; the result has one array per input, each of that
    input's shape. For example::

        >>> gx, = numerical_gradient(np.sin, np.array([0.0, 1.0]))
        >>> np.allclose(gx, np.cos([0.0, 1.0]))
        True
    """
    arrays = {f"x{i}": np.asarray(x, dtype=np.float64) for i, x in enumerate(inputs)}
    names = list(arrays)
    upstream = None if output_grad is None else np.asarray(output_grad, dtype=np.float64)

    def loss(point: dict[str, Any]) -> float:
        out = np.asarray(forward(*(point[n] for n in names)), dtype=np.float64)
        return float(np.sum(out if upstream is None else upstream * out))

    grads = full_gradient(loss, arrays, leaves_of(names, arrays))
    return tuple(grads[n] for n in names)
