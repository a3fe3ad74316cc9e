"""Where input values are drawn from.

A domain samples float64 arrays of a given shape. Kinks (relu and abs at 0, ties
in max) are kept a margin away so that central differences never straddle one;
the cases that test kinks put them back on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class Domain:
    """Samples arrays of a shape; subclasses say from where."""

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class Real(Domain):
    """Uniform on [low, high], at least ``margin`` away from every point in ``avoid``."""

    low: float = -2.0
    high: float = 2.0
    avoid: tuple[float, ...] = ()
    margin: float = 0.05

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        values = rng.uniform(self.low, self.high, size=shape)
        for point in self.avoid:
            close = np.abs(values - point) < self.margin
            # push values out of the forbidden band, keeping their side
            side = np.where(values >= point, 1.0, -1.0)
            values = np.where(
                close, point + side * (self.margin + rng.uniform(0, 0.5, shape)), values
            )
        return values


@dataclass(frozen=True)
class Positive(Real):
    """Strictly positive values (log, the base of pow)."""

    low: float = 0.5
    high: float = 2.0


@dataclass(frozen=True)
class Distinct(Domain):
    """All values distinct and at least ``gap`` apart, so that a maximum is never tied."""

    gap: float = 0.05
    center: float = 0.0

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        size = int(np.prod(shape, dtype=np.int64))
        ranks = rng.permutation(size).astype(np.float64)
        spread = self.gap * (ranks - (size - 1) / 2)
        jitter = rng.uniform(-self.gap / 4, self.gap / 4, size)
        return (self.center + spread + jitter).reshape(shape)


@dataclass(frozen=True)
class Interleaved(Domain):
    """Values on a grid shifted by ``offset``: two inputs with different offsets never tie."""

    offset: float = 0.0
    step: float = 0.2
    count: int = 20

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        grid = rng.integers(-self.count // 2, self.count // 2, size=shape).astype(np.float64)
        jitter = rng.uniform(-self.step / 8, self.step / 8, size=shape)
        return grid * self.step + self.offset + jitter


@dataclass(frozen=True)
class Mask(Domain):
    """Booleans (the condition of ``where``): not differentiable."""

    probability: float = 0.5

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return rng.random(shape) < self.probability


@dataclass(frozen=True)
class Given(Domain):
    """The layout supplies the array itself (class targets, index arrays)."""

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        raise TypeError("a Given input must be supplied by the layout as an array")
