"""The grader's efficiency measurement: is the backward vectorized?

Everything the verdict depends on is measured where student code cannot reach it:

- the reference forward's time, by the worker *before* any student code is loaded
  (floored by copies of the data, see ``gradcheck_kit.efficiency``);
- the cost of a round trip of the case's size without student code (an ``echo``),
  also before loading;
- the backward's time: what a request of several calls costs, less that round trip.

Both round trips are measured by :meth:`Sandbox.round_trip`: the CPU time the kernel
counts for the worker's processes, read by the grader while the worker waits for it
(the grader's own clock where the kernel does not say), so neither student code nor a
busy machine moves it. Every call gets fresh inputs drawn from the secret, so there is
nothing to cache, and every call's values are checked.

A forged timing field in a reply is never read.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gradcheck_kit.cases import Case, sample_case, seed_for
from gradcheck_kit.efficiency import EfficiencySettings, efficiency_case, forward_seconds
from gradcheck_kit.numerical import leaves_of

from .sandbox import Sandbox, WorkerDied, run_request

#: calls per timed request, each on fresh inputs: CPU time needs no amortising over
#: many calls, and a second call catches a function that is right once and cheap after
CALLS = 2
#: timed requests at most; the best counts (robust to a noisy machine)
REQUESTS = 3
#: no further request once this much time went to one op's timed runs: repeating only
#: matters near the bound, not far beyond it
BUDGET = 1.0


@dataclass
class Calibration:
    """What was measured before student code was loaded, per op."""

    forward: dict[str, float] = field(default_factory=dict)
    transport: dict[str, float] = field(default_factory=dict)
    #: the forward's CPU time measured in the grader, beside the timed requests
    here: dict[str, float] = field(default_factory=dict)


@dataclass
class TimedRun:
    """An efficiency case's timed requests: the fresh cases of each request, each
    request's reply, and the best time of one backward call."""

    requests: list[list[Case]]
    replies: list[Any]
    backward: float | None = None


def efficiency_cases(ops: list[Any], settings: EfficiencySettings) -> dict[str, Case]:
    found = {op.name: efficiency_case(op, settings) for op in ops if hasattr(op, "large")}
    return {name: case for name, case in found.items() if case is not None}


def calibrate(sandbox: Sandbox, ops: list[Any], large: dict[str, Case]) -> Calibration:
    """Forward and round-trip times of every efficiency case, before student code runs."""
    calibration = Calibration()
    if not large:
        return calibration
    items = [
        {"op": name, "arrays": c.arrays, "params": c.params, "output_grad": c.output_grad}
        for name, c in large.items()
    ]
    for name, seconds in zip(large, sandbox.calibrate(items) or []):
        if type(seconds) in (int, float) and math.isfinite(seconds) and seconds > 0:
            calibration.forward[name] = float(seconds)
    specs = {op.name: op for op in ops}
    for name, case in large.items():
        try:
            calibration.transport[name] = _echo_time(sandbox, specs[name], case)
        except WorkerDied:
            break
    return calibration


def _echo_time(sandbox: Sandbox, op: Any, case: Case, repeats: int = 2) -> float:
    """Best round trip of a request of ``CALLS`` calls of the case's size."""
    args = op.call_args(case.arrays, case.output_grad, case.params)
    shapes = [
        [list(np.shape(leaf.get(case.arrays))), "<f8"]
        for leaf in leaves_of(op.grad_names, case.arrays)
    ]
    request, buffers = run_request(op.name, None, [args] * CALLS)
    request = dict(request, cmd="echo", reply=shapes)
    return min(sandbox.round_trip(request, buffers)[2] for _ in range(repeats))


def fresh_cases(op: Any, case: Case, secret: str, request: int) -> list[Case]:
    """``CALLS`` copies of the efficiency case with fresh values drawn from the secret:
    the same shapes and parameters (and name), inputs the worker has never seen."""
    fresh = []
    for call in range(CALLS):
        rng = seed_for(op.name, f"efficiency\0{secret}\0{request}\0{call}")
        drawn = sample_case(op, rng, op.large, hidden=False)
        fresh.append(replace(case, arrays=drawn.arrays, output_grad=drawn.output_grad))
    return fresh


def measure(
    sandbox: Sandbox, op: Any, case: Case, calibration: Calibration, secret: str
) -> TimedRun:
    """Up to ``REQUESTS`` requests of ``CALLS`` calls each; the best request's time per
    call, less the round trip's own cost, is the backward's time. Repeating only matters
    near the bound: a request well within it, or far beyond it, is the last."""
    run = TimedRun([], [])
    transport = calibration.transport.get(op.name, 0.0)
    limit = (case.time_bound or 0.0) * forward_time(op, case, calibration)
    spent, best = 0.0, math.inf
    for index in range(REQUESTS):
        cases = fresh_cases(op, case, secret, index)
        args = [op.call_args(c.arrays, c.output_grad, c.params) for c in cases]
        run.requests.append(cases)
        try:
            reply, buffers, seconds = sandbox.round_trip(*run_request(op.name, op.adapter, args))
        except WorkerDied as died:
            run.replies.append(died)
            break
        run.replies.append((reply, buffers))
        best = min(best, max(seconds - transport, 0.0) / CALLS)
        spent += seconds
        clear = best <= limit / 2 or best > 3 * limit
        if reply.get("status") != "ran" or spent > BUDGET or clear:
            break
    run.backward = best if math.isfinite(best) else None
    return run


def forward_time(op: Any, case: Case, calibration: Calibration) -> float:
    """The reference forward's time: the larger of its time calibrated in the worker
    before student code ran and its CPU time here, now. Both are out of student code's
    reach; the one measured now sees the machine as the backward's measurement does
    (other processes thrashing the caches), so a busy machine cannot fail a right
    backward. Measured once per op and kept."""
    now = calibration.here.get(op.name)
    if now is None:
        now = calibration.here[op.name] = forward_seconds(op, case, 3, time.thread_time)
    return max(calibration.forward.get(op.name, 0.0), now)
