"""Efficiency cases: is the backward vectorized, or a Python loop in disguise?

A backward written with Python loops over every element, or by numerical
differentiation of the forward, is right in value but not what the course teaches.
Each op has one large-input case; the backward's time (best of several runs) is
compared with the reference forward's time on the same inputs, measured in the same
process. Reverse mode costs a small constant multiple of the forward, so a ratio far
beyond a generous bound fails with hint ``not-vectorized``.

The forward time is floored by the time of ``PASSES`` copies of the data: some forwards
are free views (reshape, permute, expand) or one cheap pass (maximum), while any backward
makes a few whole-array passes (masks, products, sums back over broadcast axes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .cases import Case, sample_case, seed_for


@dataclass(frozen=True)
class EfficiencySettings:
    #: the backward may take up to this many times the forward (correct vectorized
    #: solutions measure 0.1x to 20x; a Python loop over elements, hundreds)
    bound: float = 50.0
    #: weight of the efficiency case against an ordinary case's 1 (0 turns it off)
    weight: float = 2.0
    #: timed runs of each function; the fastest counts (robust to a noisy machine)
    repeats: int = 5


DEFAULT = EfficiencySettings()
#: the floor of the forward's time, in copies of its inputs and output
PASSES = 10
#: per assignment; instructors may change these (or pass --efficiency-* to the grader)
SETTINGS: dict[str, EfficiencySettings] = {
    # correct elementwise backwards measure up to ~15x (an overflow-safe sigmoid with
    # logaddexp); a Python loop costs 40x even around np.sin, hundreds around cheap ops
    "01_elementwise": EfficiencySettings(bound=30.0),
    # conv and pooling backwards loop over kernel offsets or output positions by design
    "04_conv": EfficiencySettings(bound=100.0),
}


def settings_for(assignment: str, **overrides: Any) -> EfficiencySettings:
    base = SETTINGS.get(assignment, DEFAULT)
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(base, **changes) if changes else base


def efficiency_case(spec: Any, settings: EfficiencySettings | None = None) -> Case | None:
    """The op's large-input case, or None if it has none or efficiency is off."""
    settings = settings or settings_for(spec.assignment)
    layout = getattr(spec, "large", None)
    if layout is None or settings.weight <= 0:
        return None
    case = sample_case(spec, seed_for(spec.name, "efficiency"), layout, hidden=False)
    case.name = f"efficiency: {case.name}"
    case.family = "efficiency"
    case.weight = settings.weight
    case.time_bound = settings.bound
    return case


def best_time(
    fn: Callable[[], Any],
    repeats: int,
    budget: float = 1.0,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Fastest of ``repeats`` runs; stops early once ``budget`` seconds are spent, since
    repeating only matters for a function near the bound, not far beyond it. The grader
    passes ``time.thread_time``: CPU time, which a busy machine does not inflate."""
    best, spent = float("inf"), 0.0
    for _ in range(max(1, repeats)):
        start = clock()
        fn()
        elapsed = clock() - start
        best, spent = min(best, elapsed), spent + elapsed
        if spent > budget:
            break
    return best


def forward_seconds(
    spec: Any,
    case: Case,
    repeats: int = DEFAULT.repeats,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Best time of the reference forward on the case's inputs, floored (see ``PASSES``)."""
    forward = best_time(reference_forward(spec, case), repeats, clock=clock)
    return max(forward, copy_floor(case, repeats, clock))


def reference_forward(spec: Any, case: Case) -> Callable[[], Any]:
    inputs = [case.arrays[name] for name in spec.inputs]
    params = {**spec.params, **case.params}
    return lambda: spec.forward(*inputs, **params)


def copy_floor(
    case: Case, repeats: int = DEFAULT.repeats, clock: Callable[[], float] = time.perf_counter
) -> float:
    arrays = [a for a in _arrays(list(case.arrays.values())) if a.size]
    arrays.append(np.asarray(case.output_grad))
    # into buffers made beforehand: a fresh allocation would time page faults, which
    # depend on what the allocator happens to hold, not on the data
    targets = [np.empty_like(a) for a in arrays]

    def copy_all() -> None:
        for target, source in zip(targets, arrays):
            np.copyto(target, source)

    return PASSES * best_time(copy_all, repeats, clock=clock)


def interleaved_times(
    backward: Callable[[], Any], forward: Callable[[], Any], repeats: int, budget: float = 1.0
) -> tuple[float, float]:
    """Best times of ``backward`` and ``forward``, run alternately so that both see the
    same moments of a noisy machine (another process, a busy core)."""
    best_backward = best_forward = float("inf")
    spent = 0.0
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        forward()
        middle = time.perf_counter()
        backward()
        end = time.perf_counter()
        best_forward = min(best_forward, middle - start)
        best_backward = min(best_backward, end - middle)
        spent += end - start
        if spent > budget:
            break
    return best_backward, best_forward


def _arrays(values: list) -> list[np.ndarray]:
    found = []
    for value in values:
        if isinstance(value, list):
            found += _arrays(value)
        elif isinstance(value, np.ndarray):
            found.append(value)
    return found


def time_verdict(case: Case, backward: float, forward: float) -> tuple[bool, str]:
    """Within the bound? The message states the bound, not the measured ratio, so that a
    report is the same on every run of the same submission."""
    ratio = backward / max(forward, 1e-9)
    bound = case.time_bound or DEFAULT.bound
    if ratio <= bound:
        return True, f"the backward took at most {bound:g}x the forward's time"
    return False, (
        f"correct values, but the backward took more than {bound:g}x as long as the forward "
        "on this large input: use whole-array NumPy operations instead of Python loops over "
        "elements, and never differentiate numerically inside a backward"
    )
