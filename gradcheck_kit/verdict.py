"""Verdicts: does a student's result for one case count as a correct gradient?

A result passes when it has the expected structure, each gradient has exactly its
input's shape, every value is finite, the arguments were not modified, and the
values agree with the reference forward: by random projections (a handful of
forward evaluations) and, where the full central-difference gradient is cheap,
element by element; or, at a kink, by being a valid subgradient. Failures are
explained by :mod:`gradcheck_kit.hints`.

Every random choice of a verdict comes from the ``rng`` it is given; the grader
draws it from the instructor's secret (``cases.verdict_rng``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cases import Case
from .numerical import (
    Leaf,
    as_float64,
    directional_derivative,
    full_gradient,
    full_gradient_evals,
    leaves_of,
    step_size,
)
from .registry import OpSpec

#: Relative tolerances by the precision of the inputs (float32 inputs may give float32 results).
RTOL = {np.dtype(np.float64): 1e-6, np.dtype(np.float32): 2e-3}
DIRECTIONS = 3
EPS64 = float(np.finfo(np.float64).eps)
#: the directions ``check()`` uses when it is given no generator: it runs in the student's
#: own kernel, where knowing them grants nothing (see SECURITY.md)
CHECK_SEED = 0
#: a case whose full central-difference gradient costs at most this many forward
#: evaluations (two per gradient element) is compared element by element as well:
#: projections see only a few linear combinations of the gradient, which anyone who knows
#: the directions can match with a wrong gradient. Above it (the efficiency cases, the
#: widest broadcasting layouts) projections judge alone. Costs: benchmarks/check_cost.py
ELEMENTWISE_MAX_EVALS = 1024


@dataclass
class CaseResult:
    """The verdict on one case, as students and reports see it."""

    name: str
    passed: bool
    hint: str | None = None
    message: str = ""
    error: float | None = None
    hidden: bool = False
    family: str = ""
    weight: float = 1.0
    #: the right gradient is all zeros (zero-size input or output_grad = 0)
    trivial: bool = False

    @classmethod
    def of(
        cls, case: Case, passed: bool, hint: str | None = None, message: str = "", error=None
    ) -> CaseResult:
        """The verdict on ``case``, carrying the case's name, visibility and weight."""
        trivial = not np.any(case.output_grad)
        return cls(case.name, passed, hint, message, error, case.hidden, case.family,
                   case.weight, trivial)  # fmt: skip


def score_cases(results: list[CaseResult]) -> float:
    """Weighted fraction of cases passed, between 0 and 1.

    A case whose right answer is all zeros is passed by many wrong functions, so it
    only earns its weight in proportion to the non-trivial cases passed: a function
    that is wrong everywhere else scores 0.
    """
    total = sum(r.weight for r in results)
    if not total:
        return 0.0
    real = [r for r in results if not r.trivial]
    real_weight = sum(r.weight for r in real)
    real_passed = sum(r.weight for r in real if r.passed)
    share = real_passed / real_weight if real_weight else 1.0
    trivial_passed = sum(r.weight for r in results if r.trivial and r.passed)
    return (real_passed + share * trivial_passed) / total


class Malformed(Exception):
    """The result does not have the structure or shape the curriculum asks for."""

    def __init__(self, hint: str, message: str, leaf: Leaf | None = None, value=None):
        super().__init__(message)
        self.hint, self.message, self.leaf, self.value = hint, message, leaf, value


def tolerance(case: Case) -> float:
    return RTOL.get(case.dtype, RTOL[np.dtype(np.float32)])


def loss_function(spec: OpSpec, params: dict, output_grad: np.ndarray):
    """``L(arrays) = <output_grad, forward(arrays)>`` in float64."""
    upstream = np.asarray(output_grad, dtype=np.float64)

    def loss(arrays: dict[str, Any]) -> float:
        return float(np.sum(upstream * spec.evaluate(arrays, params)))

    return loss


def judge(
    spec: OpSpec,
    case: Case,
    result: Any,
    *,
    error: str | None = None,
    mutated: bool = False,
    rng: np.random.Generator | None = None,
    timing: tuple[float, float] | None = None,
) -> CaseResult:
    """Judge ``result``, what the student's function returned for ``case``.

    ``error`` is the text of an exception the function raised (``result`` is then
    ignored); ``mutated`` says whether it modified an argument in place. ``rng`` draws
    every random choice of the verdict (projection directions, and those of a hint); the
    grader passes one drawn from its secret, and without one the directions are those of
    :data:`CHECK_SEED`. For an efficiency case, ``timing`` is (backward seconds, forward
    seconds), measured in the same process; without it only the values are judged.
    """

    def verdict(passed: bool, hint: str | None = None, message: str = "", err=None):
        return CaseResult.of(case, passed, hint, message, err)

    if error is not None:
        return verdict(False, "exception", error)
    if mutated:
        return verdict(
            False,
            "mutated-input",
            "your function modified one of its arguments in place; compute a new "
            "array instead (e.g. grad = output_grad * mask, not output_grad[...] = 0)",
        )
    from . import hints

    leaves = leaves_of(spec.grad_names, case.arrays)
    try:
        grads = normalize(spec, case, result, leaves)
    except Malformed as bad:
        hint, message = hints.explain_malformed(spec, case, bad)
        return verdict(False, hint, message)

    broken = [leaf for leaf in leaves if not np.all(np.isfinite(grads[leaf.label]))]
    if broken:
        hint, message = hints.explain_nonfinite(spec, case, grads, broken)
        return verdict(False, hint, message)

    if case.at_kink and spec.subgradient_ok is not None:
        arrays = {k: as_float64(v) for k, v in case.arrays.items()}
        upstream = np.asarray(case.output_grad, dtype=np.float64)
        if spec.subgradient_ok(arrays, case.params, upstream, grads):
            return verdict(True, message="valid subgradient at the kink")
        return verdict(False, "ties", hints.ties_message(spec))

    if rng is None:
        rng = np.random.default_rng(CHECK_SEED)
    rel_error = projection_error(spec, case, grads, leaves, rng)
    reference = None
    if compares_elementwise(spec, case):
        reference = reference_gradient(spec, case, leaves)
        rel_error = max(rel_error, elementwise_error(spec, case, grads, leaves, reference))
    if rel_error <= 1.0:
        if case.time_bound is not None and timing is not None:
            from .efficiency import time_verdict

            fast, message = time_verdict(case, *timing)
            if not fast:
                return verdict(False, "not-vectorized", message, rel_error * tolerance(case))
            return verdict(True, message=message, err=rel_error * tolerance(case))
        return verdict(True, err=rel_error * tolerance(case))
    # huge values overflow the comparisons that name a mistake; the case fails either way
    with np.errstate(over="ignore", invalid="ignore"):
        hint, message = hints.diagnose(spec, case, grads, leaves, rng=rng, reference=reference)
    return verdict(False, hint, message, rel_error * tolerance(case))


def projection_error(
    spec: OpSpec,
    case: Case,
    grads: dict[str, np.ndarray],
    leaves: list[Leaf],
    rng: np.random.Generator | None = None,
    directions: int = DIRECTIONS,
) -> float:
    """Worst ratio of |numerical - analytic| to the allowed tolerance over a few random
    directions drawn from ``rng`` (:data:`CHECK_SEED` without one); at most 1 means the
    gradients agree. Costs ``2 * directions + 1`` forward evaluations, whatever the input
    size."""
    if not leaves:
        return 0.0
    if rng is None:
        rng = np.random.default_rng(CHECK_SEED)
    loss = loss_function(spec, case.params, case.output_grad)
    arrays = {k: as_float64(v) for k, v in case.arrays.items()}
    values = [np.asarray(leaf.get(arrays)) for leaf in leaves]
    step, noise, floor = _allowance(spec, case, arrays, values)
    rtol = tolerance(case)
    worst = 0.0
    for _ in range(directions):
        ds = [rng.standard_normal(v.shape) for v in values]
        numeric = directional_derivative(loss, arrays, leaves, ds, step)
        with np.errstate(over="ignore", invalid="ignore"):
            terms = [grads[leaf.label] * d for leaf, d in zip(leaves, ds)]
            analytic = float(sum(np.sum(t) for t in terms))
            spread = float(np.sqrt(sum(np.sum(t * t) for t in terms)))
        if not (np.isfinite(analytic) and np.isfinite(spread)):
            # values so large that their sums overflow would make the tolerance infinite
            # (and the ratio 0 or nan); no right gradient comes near them
            return float("inf")
        d_norm = float(np.sqrt(sum(np.sum(d * d) for d in ds)))
        allowed = rtol * (abs(numeric) + spread) + noise + floor * d_norm + 1e-300
        worst = max(worst, abs(numeric - analytic) / allowed)
    return worst


def compares_elementwise(spec: OpSpec, case: Case) -> bool:
    """Whether ``case`` is small enough to be compared element by element as well."""
    leaves = leaves_of(spec.grad_names, case.arrays)
    return 0 < full_gradient_evals(case.arrays, leaves) <= ELEMENTWISE_MAX_EVALS


def reference_gradient(spec: OpSpec, case: Case, leaves: list[Leaf]) -> dict[str, np.ndarray]:
    """The float64 central-difference gradient of the case's loss, by leaf label.

    A grader judges the same cases for every submission of a batch, so the gradients
    are kept, by the case's content (not its name: the same name holds other values
    under another secret), for the next submission."""
    key = case_key(spec, case)
    forward, known = _REFERENCES.get(key, (None, None))
    if forward is not spec.forward:  # another op of that name (a course's) or none yet
        loss = loss_function(spec, case.params, case.output_grad)
        known = full_gradient(loss, case.arrays, leaves)
        if len(_REFERENCES) >= _REFERENCES_KEPT:
            _REFERENCES.pop(next(iter(_REFERENCES)))
        _REFERENCES[key] = (spec.forward, known)
    return {label: grad.copy() for label, grad in known.items()}


#: reference gradients of cases already judged in this process, by case_key, with the
#: forward they were computed from
_REFERENCES: dict[str, tuple[Any, dict[str, np.ndarray]]] = {}
_REFERENCES_KEPT = 4096


def case_key(spec: OpSpec, case: Case) -> str:
    """A digest of everything the reference gradient of ``case`` depends on."""
    digest = hashlib.sha256(spec.name.encode())
    _digest_into(digest, [case.arrays, case.params, case.output_grad])
    return digest.hexdigest()


def _digest_into(digest: Any, value: Any) -> None:
    if isinstance(value, np.ndarray):
        digest.update(f"a{value.dtype.str}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (list, tuple)):
        digest.update(f"l{len(value)}".encode())
        for item in value:
            _digest_into(digest, item)
    elif isinstance(value, dict):
        digest.update(f"d{len(value)}".encode())
        for name in sorted(value):
            digest.update(f"{name}=".encode())
            _digest_into(digest, value[name])
    else:
        digest.update(f"v{type(value).__name__}{value!r}".encode())


def elementwise_error(
    spec: OpSpec,
    case: Case,
    grads: dict[str, np.ndarray],
    leaves: list[Leaf],
    reference: dict[str, np.ndarray],
) -> float:
    """Worst ratio of |numerical - analytic| to the allowed tolerance over every element
    of every gradient; at most 1 means they agree. The tolerance is the projections' own,
    for a direction along one element. Knowing the projections' directions does not help
    here: only the right gradient matches every element."""
    if not leaves:
        return 0.0
    arrays = {k: as_float64(v) for k, v in case.arrays.items()}
    values = [np.asarray(leaf.get(arrays)) for leaf in leaves]
    _, noise, floor = _allowance(spec, case, arrays, values)
    rtol = tolerance(case)
    worst = 0.0
    for leaf in leaves:
        got, want = grads[leaf.label], reference[leaf.label]
        if not want.size:
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            allowed = rtol * (np.abs(want) + np.abs(got)) + noise + floor + 1e-300
            ratio = np.abs(got - want) / allowed
        if not (np.all(np.isfinite(allowed)) and np.all(np.isfinite(ratio))):
            return float("inf")  # overflowing values, as in projection_error
        worst = max(worst, float(np.max(ratio)))
    return worst


def _allowance(
    spec: OpSpec, case: Case, arrays: dict[str, Any], values: list[np.ndarray]
) -> tuple[float, float, float]:
    """(step, noise, floor) of a central difference on this case: ``noise`` is the
    rounding error of two loss evaluations divided by the step, ``floor`` what a
    direction of unit length may be off by even where the derivative is 0."""
    upstream = np.asarray(case.output_grad, dtype=np.float64)
    base_out = spec.evaluate(arrays, case.params)
    loss_scale = float(np.sum(np.abs(upstream * base_out)))
    step = step_size(values)
    noise = 16 * EPS64 * loss_scale / step
    floor = 1e-2 * tolerance(case) * float(np.linalg.norm(upstream))
    return step, noise, floor / np.sqrt(max(upstream.size, 1))


def expected_count(spec: OpSpec, case: Case) -> int:
    if spec.returns_list:
        return len(case.arrays[spec.grad_names[0]])
    return len(spec.grad_names)


def normalize(spec: OpSpec, case: Case, result: Any, leaves: list[Leaf]) -> dict:
    """Turn a result into ``{leaf label: float64 array}``, or raise :class:`Malformed`.

    Accepts what a careful student naturally returns: NumPy scalars for 0-d
    gradients, lists where tuples are asked, views, float32 for float32 inputs.
    """
    count = expected_count(spec, case)
    if spec.returns_list or count > 1:
        if not isinstance(result, (tuple, list)):
            raise Malformed(
                "shape", f"expected {_describe_sequence(spec, count)}, got {_kind(result)}"
            )
        if len(result) != count:
            raise Malformed(
                "shape", f"expected {_describe_sequence(spec, count)}, got {len(result)} values"
            )
        items = list(result)
    else:
        if isinstance(result, tuple) and len(result) == 1:
            result = result[0]
        items = [result]
    slots = _slots(spec, case)
    grads: dict[str, np.ndarray] = {}
    for slot, item in zip(slots, items):
        if slot is None:  # an optional input that was None: its gradient must be None too
            if item is not None:
                raise Malformed("shape", "the input was None, so its gradient must be None")
            continue
        expected_shape = np.shape(slot.get(case.arrays))
        if isinstance(item, np.ndarray) and item.shape != expected_shape and item.size > 10**7:
            # refused by its shape alone: copying a huge broadcast view exhausts memory
            raise Malformed(
                "shape",
                f"gradient of {slot.label} has shape {item.shape}, "
                f"not the input's shape {expected_shape}",
            )
        array = _as_array(item, slot)
        if array.shape != expected_shape:
            raise Malformed("shape", "wrong shape", slot, array)
        grads[slot.label] = array
    missing = [leaf.label for leaf in leaves if leaf.label not in grads]
    if missing:  # pragma: no cover - slots cover every leaf by construction
        raise Malformed("shape", f"no gradient for {', '.join(missing)}")
    return grads


def _slots(spec: OpSpec, case: Case) -> list[Leaf | None]:
    if spec.returns_list:
        name = spec.grad_names[0]
        return [Leaf(name, i) for i in range(len(case.arrays[name]))]
    return [None if case.arrays[name] is None else Leaf(name) for name in spec.grad_names]


def _as_array(item: Any, slot: Leaf) -> np.ndarray:
    if isinstance(item, (bool, np.bool_)) or item is None or isinstance(item, (str, bytes, dict)):
        raise Malformed("shape", f"gradient of {slot.label} is {_kind(item)}, not an array", None)
    if isinstance(item, (np.ndarray, np.generic, int, float)):
        array = np.array(item, copy=True, subok=False)
    else:
        raise Malformed(
            "shape", f"gradient of {slot.label} is {_kind(item)}, not a NumPy array", None
        )
    if array.dtype.kind not in "fiu":
        raise Malformed(
            "shape", f"gradient of {slot.label} has dtype {array.dtype}; return a float array", None
        )
    return array.astype(np.float64) if array.dtype.kind != "f" else array


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    return f"a {type(value).__name__}"


def _describe_sequence(spec: OpSpec, count: int) -> str:
    if spec.returns_list:
        return f"a list of {count} gradients (one per input)"
    return f"a tuple of {count} gradients ({', '.join('grad_' + n for n in spec.grad_names)})"
