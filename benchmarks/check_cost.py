"""What a passing case costs: forward evaluations and wall time of the judge, per op, before
(random projections alone) and after (projections, and the elementwise comparison with the
full central-difference gradient where that is cheap), measured in one run.

    python benchmarks/check_cost.py            # tables on stdout
    python benchmarks/check_cost.py --json     # the same figures as JSON

"Before" is the same judge with ``verdict.ELEMENTWISE_MAX_EVALS`` set to 0. Targets: at
most 8 forward evaluations per passing case with projections alone, at most
``ELEMENTWISE_MAX_EVALS`` + 8 with the comparison, and the public case set of each notebook
checked in well under 1 second. Times are the best of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradcheck_kit import all_ops, assignments, get_op, verdict  # noqa: E402
from gradcheck_kit.cases import Case  # noqa: E402
from gradcheck_kit.check import call_on_case, run_cases  # noqa: E402
from gradcheck_kit.efficiency import efficiency_case  # noqa: E402
from gradcheck_kit.numerical import full_gradient, leaves_of  # noqa: E402
from gradcheck_kit.verdict import loss_function  # noqa: E402
from tests.core import solutions  # noqa: E402

#: hidden cases of the grading figures are drawn with this secret (any secret costs the same)
SECRET = "benchmark"


@contextmanager
def elementwise(enabled: bool) -> Iterator[None]:
    """The judge with (the default) or without the elementwise comparison."""
    saved = verdict.ELEMENTWISE_MAX_EVALS
    verdict.ELEMENTWISE_MAX_EVALS = saved if enabled else 0
    try:
        yield
    finally:
        verdict.ELEMENTWISE_MAX_EVALS = saved


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def counting(spec):
    """A copy of ``spec`` whose forward counts its calls."""
    calls = [0]

    def forward(*args, **kwargs):
        calls[0] += 1
        return spec.forward(*args, **kwargs)

    return dataclasses.replace(spec, forward=forward), calls


def judge_cost(spec, cases: list[Case], results: list, calls: list[int], repeats: int) -> dict:
    """Forward evaluations and seconds per case of judging ``results``, before and after."""

    def judge_all():
        return [spec.judge(c, r, error=e, mutated=m) for c, (r, e, m) in zip(cases, results)]

    cost = {}
    for label, enabled in (("before", False), ("after", True)):
        with elementwise(enabled):
            calls[0] = 0
            verdicts = judge_all()
            evals = calls[0]
            assert all(v.passed for v in verdicts), (spec.name, label)
            seconds = best_of(repeats, judge_all)
        cost[f"{label}_evals"] = evals / len(cases)
        cost[f"{label}_ms"] = 1e3 * seconds / len(cases)
    return cost


def measure(spec, repeats: int) -> dict:
    """Per op, over its public cases: what judging a correct solution costs."""
    fn = getattr(solutions, spec.name)
    counted, calls = counting(spec)
    cases = counted.cases()
    results = [call_on_case(fn, counted, case) for case in cases]
    compared = sum(verdict.compares_elementwise(counted, case) for case in cases)
    return {
        "op": spec.name,
        "cases": len(cases),
        "elementwise": compared,
        **judge_cost(counted, cases, results, calls, repeats),
    }


def _conv_case(rng, side: int) -> tuple[Case, tuple[np.ndarray, ...]]:
    x = rng.standard_normal((1, 2, side, side))
    w, b = rng.standard_normal((2, 2, 3, 3)), rng.standard_normal(2)
    params = {"stride": 1, "padding": 0, "dilation": 1}
    upstream = rng.standard_normal((1, 2, side - 2, side - 2))
    arrays = {"input": x, "weight": w, "bias": b}
    return Case("conv2d_backward", f"{side}", "large", arrays, params, upstream), (x, w, b)


def scaling(repeats: int) -> list[dict]:
    """Judging one passing case of growing size: projections stay at a few evaluations,
    the full gradient costs two per element, and the judge switches between the two at
    ``ELEMENTWISE_MAX_EVALS``."""
    rows = []
    rng = np.random.default_rng(0)
    sized: list[tuple[str, int, Case]] = []
    for name in ("sin_backward", "softmax_backward"):
        for size in (10, 100, 300, 500, 1000, 3000, 10000):
            x = rng.uniform(-2, 2, size=(size // 10, 10))
            case = Case(name, f"{size}", "large", {"input": x}, {}, rng.standard_normal(x.shape))
            sized.append((name, size, case))
    for side in (4, 8, 12, 16):
        case, inputs = _conv_case(rng, side)
        size = sum(a.size for a in inputs)
        sized.append(("conv2d_backward", size, case))
    for name, size, case in sized:
        spec, calls = counting(get_op(name))
        args = spec.call_args(case.arrays, case.output_grad, case.params)
        judge_once = partial(spec.judge, case, getattr(solutions, name)(*args))
        row: dict = {"op": name, "elements": size}
        for label, enabled in (("before", False), ("after", True)):
            with elementwise(enabled):
                calls[0] = 0
                assert judge_once().passed, (name, size, label)
                row[f"{label}_evals"] = calls[0]
                row[f"{label}_ms"] = 1e3 * best_of(repeats, judge_once)
        loss = loss_function(spec, case.params, case.output_grad)
        leaves = leaves_of(spec.grad_names, case.arrays)
        calls[0] = 0
        start = time.perf_counter()
        full_gradient(loss, case.arrays, leaves)  # once: at 10^4 elements it takes seconds
        row["full_ms"] = 1e3 * (time.perf_counter() - start)
        row["full_evals"] = calls[0]
        row["elementwise"] = verdict.compares_elementwise(spec, case)
        rows.append(row)
    return rows


def _check_all(ops: list, cases: dict[str, list[Case]]) -> None:
    for op in ops:
        run_cases(getattr(solutions, op.name), op, cases[op.name])


def notebook_times(repeats: int) -> dict[str, dict[str, float]]:
    """Seconds to check every op of a notebook, before and after: on its public cases
    without and with the efficiency case (what ``check()`` runs), and on its public and
    hidden cases (what the grader judges, the efficiency case aside)."""
    times = {}
    for assignment in assignments():
        ops = [op for op in all_ops(assignment) if hasattr(solutions, op.name)]
        if not ops:
            continue
        times[assignment] = {}
        runs = {
            "public": lambda op: op.cases(),
            "public+efficiency": lambda op: op.cases() + [efficiency_case(op)],
            "public+hidden": lambda op: op.cases() + op.cases(hidden=True, secret=SECRET),
        }
        for label, cases_of in runs.items():
            cases = {op.name: [c for c in cases_of(op) if c is not None] for op in ops}
            for when, enabled in (("before", False), ("after", True)):
                with elementwise(enabled):
                    seconds = best_of(repeats, partial(_check_all, ops, cases))
                times[assignment][f"{label} {when}"] = seconds
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best counts")
    args = parser.parse_args()
    rows = [measure(op, args.repeats) for op in all_ops() if hasattr(solutions, op.name)]
    sized = scaling(args.repeats)
    notebooks = notebook_times(args.repeats)
    if args.json:
        print(json.dumps({"ops": rows, "scaling": sized, "notebooks_s": notebooks}, indent=2))
        return
    limit = verdict.ELEMENTWISE_MAX_EVALS
    print("judge of a passing public case, before (projections) and after (elementwise where")
    print(f"the full gradient costs at most {limit} forward evaluations)\n")
    print(
        f"{'op':24} {'cases':>5} {'compared':>8} {'evals before':>12} {'after':>7} "
        f"{'ms before':>9} {'after':>7}"
    )
    for r in rows:
        print(
            f"{r['op']:24} {r['cases']:5d} {r['elementwise']:8d} {r['before_evals']:12.1f} "
            f"{r['after_evals']:7.1f} {r['before_ms']:9.3f} {r['after_ms']:7.3f}"
        )
    print(
        f"\nmost forward evaluations per passing case: before "
        f"{max(r['before_evals'] for r in rows):.1f} (target <= 8), after "
        f"{max(r['after_evals'] for r in rows):.1f} (target <= {limit + 8})"
    )
    total = {k: sum(r["cases"] * r[f"{k}_ms"] for r in rows) for k in ("before", "after")}
    print(
        f"all public cases of every op: {total['before'] / 1e3:.3f} s before, "
        f"{total['after'] / 1e3:.3f} s after"
    )
    print(
        f"\n{'op':18} {'elements':>8} {'evals before':>12} {'ms':>7} {'evals after':>11} "
        f"{'ms':>7} {'compared':>8} {'full evals':>10} {'full ms':>8}"
    )
    for r in sized:
        print(
            f"{r['op']:18} {r['elements']:8d} {r['before_evals']:12d} {r['before_ms']:7.2f} "
            f"{r['after_evals']:11d} {r['after_ms']:7.2f} {'yes' if r['elementwise'] else 'no':>8} "
            f"{r['full_evals']:10d} {r['full_ms']:8.1f}"
        )
    print()
    for assignment, seconds in notebooks.items():
        cells = ", ".join(
            f"{label} {seconds[label + ' before']:.3f} -> {seconds[label + ' after']:.3f} s"
            for label in ("public", "public+efficiency", "public+hidden")
        )
        print(f"{assignment}: {cells}")
    print("(public and public+efficiency are what check() runs: target well under 1 s)")


if __name__ == "__main__":
    main()
