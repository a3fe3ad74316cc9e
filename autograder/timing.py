"""The grader's efficiency measurement: is the backward vectorized?

Everything the verdict depends on is measured where student code cannot reach it:

- the reference forward's time, by the worker *before* any student code is loaded
  (floored by copies of the data, see ``gradcheck_kit.efficiency``);
- the cost of a round trip of the case's size without student code (an ``echo``), on
  the grader's clock, also before loading;
- the backward's time, on the grader's clock around each request, minus that round
  trip; every repetition gets fresh inputs drawn from the secret, so there is nothing
  to cache, and every repetition's values are judged.

A forged timing field in a reply is never read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gradcheck_kit.cases import Case, sample_case, seed_for
from gradcheck_kit.efficiency import EfficiencySettings, efficiency_case, forward_seconds
from gradcheck_kit.numerical import leaves_of

from .sandbox import Sandbox, WorkerDied, run_request

#: a repetition stops early once this much time went to one op's timed runs: repeating
#: only matters near the bound, not far beyond it
BUDGET = 1.0


@dataclass
class Calibration:
    """What was measured before student code was loaded, per op."""

    forward: dict[str, float] = field(default_factory=dict)
    transport: dict[str, float] = field(default_factory=dict)


@dataclass
class TimedRun:
    """An efficiency case's repetitions: each one's reply, and the best backward time."""

    cases: list[Case]
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


def _echo_time(sandbox: Sandbox, op: Any, case: Case, repeats: int = 3) -> float:
    args = op.call_args(case.arrays, case.output_grad, case.params)
    shapes = [
        [list(np.shape(leaf.get(case.arrays))), "<f8"]
        for leaf in leaves_of(op.grad_names, case.arrays)
    ]
    request, buffers = run_request(op.name, None, [args])
    request = dict(request, cmd="echo", reply=shapes)
    return min(sandbox.round_trip(request, buffers)[2] for _ in range(repeats))


def repetitions(op: Any, case: Case, secret: str, repeats: int) -> list[Case]:
    """The efficiency case again with fresh values, ``repeats`` times: the first is the
    case itself (its name is the one reported), the others are drawn from the secret."""
    fresh = [case]
    for index in range(1, max(1, repeats)):
        rng = seed_for(op.name, f"efficiency\0{secret}\0{index}")
        drawn = sample_case(op, rng, op.large, hidden=False)
        fresh.append(replace(case, arrays=drawn.arrays, output_grad=drawn.output_grad))
    return fresh


def measure(
    sandbox: Sandbox, op: Any, case: Case, calibration: Calibration, secret: str, repeats: int
) -> TimedRun:
    """Run the efficiency case's repetitions one request each, timed on our clock."""
    run = TimedRun(repetitions(op, case, secret, repeats), [])
    transport = calibration.transport.get(op.name, 0.0)
    spent, best = 0.0, math.inf
    for fresh in run.cases:
        args = op.call_args(fresh.arrays, fresh.output_grad, fresh.params)
        try:
            reply, buffers, seconds = sandbox.round_trip(*run_request(op.name, op.adapter, [args]))
        except WorkerDied as died:
            run.replies.append(died)
            break
        run.replies.append((reply, buffers))
        best, spent = min(best, max(seconds - transport, 0.0)), spent + seconds
        if reply.get("status") != "ran" or spent > BUDGET:
            break
    run.backward = best if math.isfinite(best) else None
    return run


def forward_time(op: Any, case: Case, calibration: Calibration) -> float:
    """The reference forward's time: calibrated in the worker before student code ran,
    or, if the worker could not time it, measured here."""
    measured = calibration.forward.get(op.name)
    return measured if measured is not None else forward_seconds(op, case)
