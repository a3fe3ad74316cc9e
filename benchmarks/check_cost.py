"""What a passing case costs: forward evaluations and wall time, projection check versus
the full central-difference gradient, per op, measured in one run.

    python benchmarks/check_cost.py            # table on stdout
    python benchmarks/check_cost.py --json     # the same figures as JSON

Targets: at most 8 forward evaluations per passing case for every op, and the public
case set of each notebook checked in under 1 second.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradcheck_kit import all_ops, assignments  # noqa: E402
from gradcheck_kit.check import call_on_case, run_cases  # noqa: E402
from gradcheck_kit.efficiency import efficiency_case  # noqa: E402
from gradcheck_kit.numerical import full_gradient, leaves_of  # noqa: E402
from gradcheck_kit.verdict import loss_function  # noqa: E402
from tests.core import solutions  # noqa: E402


def counting(spec):
    """A copy of ``spec`` whose forward counts its calls."""
    calls = [0]

    def forward(*args, **kwargs):
        calls[0] += 1
        return spec.forward(*args, **kwargs)

    return dataclasses.replace(spec, forward=forward), calls


def measure(spec) -> dict:
    fn = getattr(solutions, spec.name)
    counted, calls = counting(spec)
    cases = counted.cases()
    results = [call_on_case(fn, counted, case) for case in cases]
    calls[0] = 0
    start = time.perf_counter()
    verdicts = [counted.judge(c, r, error=e, mutated=m) for c, (r, e, m) in zip(cases, results)]
    projection_time = time.perf_counter() - start
    projection_calls = calls[0]
    assert all(v.passed for v in verdicts), spec.name
    calls[0] = 0
    start = time.perf_counter()
    for case in cases:
        loss = loss_function(counted, case.params, case.output_grad)
        full_gradient(loss, case.arrays, leaves_of(counted.grad_names, case.arrays))
    full_time = time.perf_counter() - start
    n = len(cases)
    return {
        "op": spec.name,
        "cases": n,
        "projection_evals": projection_calls / n,
        "full_evals": calls[0] / n,
        "projection_ms": 1e3 * projection_time / n,
        "full_ms": 1e3 * full_time / n,
    }


def scaling(sizes=(10, 100, 1000, 10000)) -> list[dict]:
    """The same check on larger inputs: the projection stays at a few evaluations."""
    from gradcheck_kit.cases import Case

    rows = []
    rng = np.random.default_rng(0)
    for name in ("sin_backward", "softmax_backward"):
        spec, calls = counting(next(op for op in all_ops() if op.name == name))
        for size in sizes:
            x = rng.uniform(-2, 2, size=(size // 10, 10))
            case = Case(name, f"{size}", "large", {"input": x}, {}, rng.standard_normal(x.shape))
            result = getattr(solutions, name)(x, case.output_grad)
            calls[0] = 0
            start = time.perf_counter()
            assert spec.judge(case, result).passed
            projection = (calls[0], time.perf_counter() - start)
            calls[0] = 0
            start = time.perf_counter()
            full_gradient(
                loss_function(spec, {}, case.output_grad),
                case.arrays,
                leaves_of(spec.grad_names, case.arrays),
            )
            full = (calls[0], time.perf_counter() - start)
            rows.append(
                {
                    "op": name,
                    "elements": size,
                    "projection_evals": projection[0],
                    "projection_ms": 1e3 * projection[1],
                    "full_evals": full[0],
                    "full_ms": 1e3 * full[1],
                }
            )
    return rows


def notebook_times() -> dict[str, dict[str, float]]:
    """Seconds to check every op of a notebook on its public cases, without and with the
    efficiency case (what ``check()`` runs)."""
    times = {}
    for assignment in assignments():
        ops = [op for op in all_ops(assignment) if hasattr(solutions, op.name)]
        if not ops:
            continue
        times[assignment] = {}
        for label, with_large in (("public", False), ("public+efficiency", True)):
            start = time.perf_counter()
            for op in ops:
                large = [efficiency_case(op)] if with_large else []
                run_cases(getattr(solutions, op.name), op, op.cases() + large)
            times[assignment][label] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [measure(op) for op in all_ops() if hasattr(solutions, op.name)]
    notebooks = notebook_times()
    sized = scaling()
    if args.json:
        print(json.dumps({"ops": rows, "notebooks_s": notebooks, "scaling": sized}, indent=2))
        return
    print(
        f"{'op':24} {'cases':>5} {'evals/case':>10} {'full evals':>10} {'ms/case':>8} "
        f"{'full ms':>8} {'speed-up':>8}"
    )
    for r in rows:
        print(
            f"{r['op']:24} {r['cases']:5d} {r['projection_evals']:10.1f} {r['full_evals']:10.1f} "
            f"{r['projection_ms']:8.3f} {r['full_ms']:8.3f} "
            f"{r['full_ms'] / max(r['projection_ms'], 1e-9):7.1f}x"
        )
    worst = max(r["projection_evals"] for r in rows)
    print(f"\nmost forward evaluations per passing case: {worst:.1f} (target <= 8)")
    median = float(np.median([r["full_evals"] / r["projection_evals"] for r in rows]))
    print(f"median ratio of evaluations, full gradient / projection: {median:.0f}x")
    print(f"\n{'op':18} {'elements':>8} {'evals':>6} {'ms':>8} {'full evals':>10} {'full ms':>9}")
    for r in sized:
        print(
            f"{r['op']:18} {r['elements']:8d} {r['projection_evals']:6d} "
            f"{r['projection_ms']:8.3f} {r['full_evals']:10d} {r['full_ms']:9.1f}"
        )
    print()
    for assignment, seconds in notebooks.items():
        print(
            f"check() of every op of {assignment}: public cases {seconds['public']:.3f} s, "
            f"with the efficiency case {seconds['public+efficiency']:.3f} s (target < 1 s)"
        )


if __name__ == "__main__":
    main()
