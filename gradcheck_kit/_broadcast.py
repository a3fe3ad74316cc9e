"""NumPy broadcasting, and its reverse, for the checker's own use.

Private on purpose: ``unbroadcast`` is an exercise of notebook 01, so it is not part of
the public API (and graded code cannot import this package at all).
"""

from __future__ import annotations

import numpy as np


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` down to ``shape``: the gradient of ``np.broadcast_to(x, grad.shape)``.

    Leading axes that broadcasting added are summed away; axes where ``shape`` has
    size 1 are summed with ``keepdims``.
    """
    grad = np.asarray(grad)
    lead = grad.ndim - len(shape)
    if lead < 0:
        raise ValueError(f"cannot unbroadcast shape {grad.shape} to the longer shape {shape}")
    summed = grad.sum(axis=tuple(range(lead))) if lead else grad
    size_one = tuple(i for i, n in enumerate(shape) if n == 1 and summed.shape[i] != 1)
    if size_one:
        summed = summed.sum(axis=size_one, keepdims=True)
    if summed.shape != tuple(shape):
        raise ValueError(f"shape {grad.shape} does not broadcast from {shape}")
    return summed
