"""Hints: name the student's likely mistake by testing their result against known
wrong answers, computed from the full numerical gradient.

Every hint is a machine-readable code and a sentence that says what to fix:
``unbroadcast``, ``shape``, ``transpose``, ``sign``, ``scale``, ``upstream``,
``nonfinite``, ``mutated-input``, ``zeros``, ``ties``, ``exception``,
``wrong-value``, and ``not-vectorized`` (from :mod:`gradcheck_kit.efficiency`).
Only failing cases get here, so the O(size) numerical gradient is
affordable (the verdict passes it along where it computed it already).
"""

from __future__ import annotations

import itertools
import time
from fractions import Fraction

import numpy as np

from ._broadcast import unbroadcast
from .cases import Case
from .layouts import shape_text
from .numerical import (
    Leaf,
    as_float64,
    directional_derivative,
    full_gradient,
    leaves_of,
    step_size,
)
from .registry import OpSpec
from .verdict import CHECK_SEED, Malformed, loss_function, tolerance

HINT_CODES = (
    "unbroadcast",
    "shape",
    "transpose",
    "sign",
    "scale",
    "upstream",
    "nonfinite",
    "mutated-input",
    "zeros",
    "ties",
    "exception",
    "wrong-value",
    "not-vectorized",
)


#: above this many input elements a failure is not explained element by element (the
#: full numerical gradient costs O(size^2)); only the efficiency cases are this large
LARGEST_EXPLAINED = 20_000
#: nor when the full numerical gradient (two forwards per element) would take longer
#: than this: a wrong backward must not cost the grader seconds of explaining
EXPLAIN_SECONDS = 1.0


def too_large_to_explain(spec: OpSpec, case: Case) -> bool:
    leaves = leaves_of(spec.grad_names, case.arrays)
    elements = sum(np.size(leaf.get(case.arrays)) for leaf in leaves)
    if elements + np.size(case.output_grad) > LARGEST_EXPLAINED:
        return True
    if elements <= 512:  # cheap whatever the forward: the verdict compares these anyway
        return False
    arrays = {k: as_float64(v) for k, v in case.arrays.items()}
    start = time.perf_counter()
    spec.evaluate(arrays, case.params)
    return 2 * elements * (time.perf_counter() - start) > EXPLAIN_SECONDS


class _Reference:
    """Numerical gradients of one case, computed on demand and kept."""

    def __init__(self, spec: OpSpec, case: Case, grads: dict[str, np.ndarray] | None = None):
        self.spec, self.case = spec, case
        self.arrays = {k: as_float64(v) for k, v in case.arrays.items()}
        self.leaves = leaves_of(spec.grad_names, case.arrays)
        # the verdict may have computed them already, to compare element by element
        self._grads: dict[str, np.ndarray] | None = grads
        self._ones: dict[str, np.ndarray] | None = None

    @property
    def grads(self) -> dict[str, np.ndarray]:
        if self._grads is None:
            loss = loss_function(self.spec, self.case.params, self.case.output_grad)
            self._grads = full_gradient(loss, self.arrays, self.leaves)
        return self._grads

    @property
    def ignoring_upstream(self) -> dict[str, np.ndarray]:
        """What the gradient would be if ``output_grad`` were all ones."""
        if self._ones is None:
            ones = np.ones(np.shape(self.case.output_grad))
            loss = loss_function(self.spec, self.case.params, ones)
            self._ones = full_gradient(loss, self.arrays, self.leaves)
        return self._ones

    def expanded(self, leaf: Leaf) -> np.ndarray | None:
        """Gradient with respect to the input broadcast to the output's shape, before
        it is summed back: what a student who forgot to unbroadcast returns."""
        if not self.spec.broadcasting:
            return None
        out_shape = np.shape(self.case.output_grad)
        value = leaf.get(self.arrays)
        if value.shape == out_shape:
            return self.grads[leaf.label]
        arrays = leaf.replaced(self.arrays, np.broadcast_to(value, out_shape).copy())
        loss = loss_function(self.spec, self.case.params, self.case.output_grad)
        return full_gradient(loss, arrays, [leaf])[leaf.label]


def close(actual: np.ndarray, expected: np.ndarray, rtol: float) -> bool:
    if np.shape(actual) != np.shape(expected):
        return False
    if not np.all(np.isfinite(actual)):
        return False
    size = max(float(np.linalg.norm(expected)), float(np.linalg.norm(actual)))
    return float(np.linalg.norm(actual - expected)) <= rtol * size + 1e-12


def _match_rtol(case: Case) -> float:
    return max(50 * tolerance(case), 1e-4)


def _prefix(spec: OpSpec, leaf: Leaf) -> str:
    many = len(spec.grad_names) > 1 or spec.returns_list
    return f"gradient of {leaf.label}: " if many else ""


# --- shape and structure -------------------------------------------------------------


def explain_malformed(spec: OpSpec, case: Case, bad: Malformed) -> tuple[str, str]:
    if bad.leaf is None or bad.value is None:
        return bad.hint, bad.message
    leaf, got = bad.leaf, bad.value
    want = np.shape(leaf.get(case.arrays))
    prefix = _prefix(spec, leaf)
    if too_large_to_explain(spec, case):
        if spec.broadcasting and got.shape == np.shape(case.output_grad):
            return "unbroadcast", (
                f"{prefix}the gradient is still in the broadcast shape {shape_text(got.shape)}; "
                f"sum it back to the input's shape {shape_text(want)}"
            )
        return "shape", (
            f"{prefix}returned shape {shape_text(got.shape)}, but the gradient must have "
            f"exactly the input's shape {shape_text(want)}"
        )
    reference = _Reference(spec, case)
    rtol = _match_rtol(case)
    expanded = reference.expanded(leaf)
    if expanded is not None:
        found = _match_axis_sum(expanded, got, rtol)
        needed = _axes_to_sum(want, expanded.shape)
        if found is not None and found == needed:
            return "unbroadcast", (
                f"{prefix}right axes {found} summed but the result has shape "
                f"{shape_text(got.shape)}, not the input's {shape_text(want)}; "
                "keep size-1 axes (keepdims=True) or reshape to the input's shape"
            )
        if got.shape == expanded.shape:
            return "unbroadcast", (
                f"{prefix}the gradient is still in the broadcast shape "
                f"{shape_text(got.shape)}; sum it over axes {needed} to get back to the input's "
                f"shape {shape_text(want)} (reverse the broadcasting)"
            )
        if found is not None:
            should = (
                f"sum over axes {needed} (the leading axes broadcasting added and the axes "
                "where the input has size 1)"
                if needed
                else "nothing needs summing: this input was not broadcast"
            )
            return "unbroadcast", (
                f"{prefix}summed over the wrong axes {found}: the input has shape "
                f"{shape_text(want)}, so {should}"
            )
    truth = reference.grads[leaf.label]
    summed = _try_unbroadcast(got, want)
    if summed is not None and close(summed, truth, rtol):
        return "unbroadcast", (
            f"{prefix}the gradient still has the broadcast (batch) shape "
            f"{shape_text(got.shape)}; sum it over axes {_axes_to_sum(want, got.shape)} to get "
            f"back to the input's shape {shape_text(want)}"
        )
    if got.ndim == truth.ndim and got.ndim >= 2:
        for perm in itertools.permutations(range(got.ndim)):
            if perm != tuple(range(got.ndim)) and close(np.transpose(got, perm), truth, rtol):
                return "transpose", (
                    f"{prefix}the gradient is transposed: it has shape {shape_text(got.shape)} "
                    f"but should be {shape_text(want)}; check the order of the factors and "
                    "which operand needs a .T"
                )
    return "shape", (
        f"{prefix}returned shape {shape_text(got.shape)}, but the gradient must have exactly "
        f"the input's shape {shape_text(want)}"
    )


def _try_unbroadcast(got: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    try:
        if np.broadcast_shapes(got.shape, shape) != got.shape:
            return None
        return unbroadcast(got, shape)
    except ValueError:
        return None


def _axes_to_sum(input_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[int, ...]:
    lead = len(out_shape) - len(input_shape)
    return tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(input_shape) if n == 1 and out_shape[lead + i] != 1
    )


def _match_axis_sum(expanded: np.ndarray, got: np.ndarray, rtol: float):
    """Which set of axes, summed (with or without keepdims), turns ``expanded`` into ``got``."""
    ndim = expanded.ndim
    for count in range(ndim + 1):
        for axes in itertools.combinations(range(ndim), count):
            for keep in (True, False):
                candidate = expanded.sum(axis=axes, keepdims=keep) if axes else expanded
                if close(got, candidate, rtol):
                    return axes
    return None


# --- non-finite values ------------------------------------------------------------


def explain_nonfinite(spec: OpSpec, case: Case, grads: dict, broken: list[Leaf]):
    leaf = broken[0]
    bad = ~np.isfinite(grads[leaf.label])
    if case.has_zeros and np.all(_near_zeros(case, leaf)[bad]):
        return "zeros", (
            f"{_prefix(spec, leaf)}nan or inf where the input has zeros: dividing the product "
            "by x fails at x = 0; compute the product of the other elements instead (for "
            "example with prefix and suffix products)"
        )
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    return "nonfinite", (
        f"{_prefix(spec, leaf)}the gradient contains nan or inf (first at index {where}); look "
        "for a division by zero, log of zero or an overflowing exp (subtract the max first)"
    )


def _near_zeros(case: Case, leaf: Leaf) -> np.ndarray:
    """Elements that share a slice along ``dim`` with an exact zero of the input."""
    value = np.asarray(leaf.get(case.arrays))
    dim = case.params.get("dim")
    is_zero = value == 0
    if dim is None or value.ndim == 0:
        return np.broadcast_to(np.any(is_zero), value.shape)
    return np.broadcast_to(np.any(is_zero, axis=dim, keepdims=True), value.shape)


# --- ties -------------------------------------------------------------------------------


def ties_message(spec: OpSpec) -> str:
    return (
        "not a valid subgradient where inputs are tied (or sit at the kink): the weights "
        "given to tied elements must be non-negative and sum to one for each output, e.g. "
        "send the whole output_grad to the first maximum only, or split it evenly"
    )


# --- wrong values -------------------------------------------------------------------


def diagnose(
    spec: OpSpec,
    case: Case,
    grads: dict,
    leaves: list[Leaf],
    *,
    rng: np.random.Generator | None = None,
    reference: dict[str, np.ndarray] | None = None,
) -> tuple[str, str]:
    """The most specific hint that explains why ``grads`` is wrong.

    ``rng`` draws the directions of a hint on an input too large for the full gradient
    (the verdict's own generator; :data:`~gradcheck_kit.verdict.CHECK_SEED` without one);
    ``reference`` is the full numerical gradient if the verdict computed it."""
    if too_large_to_explain(spec, case):
        return _diagnose_by_projection(spec, case, grads, leaves, rng)
    reference = _Reference(spec, case, reference)
    rtol = _match_rtol(case)
    wrong = [
        leaf for leaf in leaves if not close(grads[leaf.label], reference.grads[leaf.label], rtol)
    ]
    if not wrong:
        return "wrong-value", (
            "close to the right gradient, but not within tolerance (relative tolerance "
            f"{tolerance(case):g}); look for a lost digit of precision, such as a float32 result "
            "for float64 inputs"
        )
    for leaf in wrong:
        hint = _explain_leaf(spec, case, reference, leaf, grads[leaf.label], rtol)
        if hint is not None:
            return hint
    leaf = wrong[0]
    got, want = grads[leaf.label], reference.grads[leaf.label]
    return "wrong-value", f"{_prefix(spec, leaf)}{_largest_error(got, want)}"


def _explain_leaf(spec, case, reference: _Reference, leaf, got, rtol):
    want = reference.grads[leaf.label]
    prefix = _prefix(spec, leaf)
    if close(got, -want, rtol) and np.any(want):
        return "sign", f"{prefix}the sign is flipped: the gradient is the negative of yours"
    ones = reference.ignoring_upstream[leaf.label]
    upstream = np.asarray(case.output_grad, dtype=np.float64)
    if not np.all(upstream == 1.0) and close(got, ones, rtol) and not close(ones, want, rtol):
        return "upstream", (
            f"{prefix}the result ignores output_grad: you returned the gradient of "
            "sum(f(x)), but it must be multiplied by (chained with) output_grad"
        )
    factor = _scale_factor(got, want, rtol)
    if factor is not None:
        return "scale", (
            f"{prefix}off by a constant factor: your gradient is {_nice(factor)} times the "
            f"right one; check the divisor (N, N - correction, the window size) or a missing 2"
        )
    for name, mistake in spec.mistakes.items():
        arrays = {k: as_float64(v) for k, v in case.arrays.items()}
        wrong_grads = mistake(arrays, case.params, np.asarray(case.output_grad, np.float64))
        candidate = wrong_grads.get(leaf.label)
        if candidate is not None and close(got, np.asarray(candidate), rtol):
            return name, f"{prefix}{MISTAKE_SENTENCES.get(name, name)}"
    if got.ndim >= 2:
        for perm in itertools.permutations(range(got.ndim)):
            permuted = np.transpose(got, perm)
            if perm != tuple(range(got.ndim)) and close(permuted, want, rtol):
                return "transpose", (
                    f"{prefix}the gradient is transposed (axes {perm} swapped); check the order "
                    "of the factors and which operand needs a .T"
                )
    if case.has_zeros:
        mismatch = ~np.isclose(got, want, rtol=rtol, atol=rtol * (np.abs(want).max() + 1e-12))
        if np.all(_near_zeros(case, leaf)[mismatch]):
            return "zeros", (
                f"{prefix}wrong only where the input contains zeros: prod(x) / x is not the "
                "product of the other elements when x = 0; compute that product directly"
            )
    return None


def _diagnose_by_projection(spec, case, grads, leaves, rng=None) -> tuple[str, str]:
    """Sign, scale and ignored upstream, told apart along random directions, one leaf at a
    time: a few forward evaluations, for inputs too large for the full gradient."""
    if rng is None:
        rng = np.random.default_rng(CHECK_SEED)
    arrays = {k: as_float64(v) for k, v in case.arrays.items()}
    upstream = np.asarray(case.output_grad, dtype=np.float64)
    with_upstream = loss_function(spec, case.params, upstream)
    with_ones = loss_function(spec, case.params, np.ones(upstream.shape))
    for leaf in leaves:
        got, value = grads[leaf.label], np.asarray(leaf.get(arrays))
        step = step_size([value])
        ratios, ignoring = [], True
        for _ in range(2):
            d = rng.standard_normal(value.shape)
            analytic = float(np.sum(got * d))
            right = directional_derivative(with_upstream, arrays, [leaf], [d], step)
            ones = directional_derivative(with_ones, arrays, [leaf], [d], step)
            ignoring &= abs(analytic - ones) <= 1e-4 * max(abs(ones), 1e-12)
            ratios.append(analytic / right if right else np.inf)
        prefix = _prefix(spec, leaf)
        if ignoring and not np.all(upstream == 1.0):
            return "upstream", f"{prefix}the result ignores output_grad (on this large input)"
        if abs(ratios[0] - ratios[1]) <= 1e-4 * abs(ratios[0]) and abs(ratios[0] - 1) > 1e-3:
            if abs(ratios[0] + 1) <= 1e-4:
                return "sign", f"{prefix}the sign is flipped (on this large input)"
            return "scale", (
                f"{prefix}off by a constant factor: your gradient is {_nice(ratios[0])} times "
                "the right one (on this large input)"
            )
        if abs(ratios[0] - 1) > 1e-4 or abs(ratios[1] - 1) > 1e-4:
            break
    return "wrong-value", (
        "wrong values on this large input; the hints of the smaller cases say where"
    )


MISTAKE_SENTENCES = {
    "transpose": "the gradient is transposed: check the order of the factors and which operand "
    "needs a .T (shapes alone do not catch this for square matrices)",
    "upstream": "output_grad is applied in the wrong place: chain it exactly once",
    "unbroadcast": "the broadcast axes were summed the wrong way",
}


def _scale_factor(got: np.ndarray, want: np.ndarray, rtol: float) -> float | None:
    denom = float(np.sum(want * want))
    if denom == 0.0:
        return None
    factor = float(np.sum(got * want)) / denom
    if abs(factor - 1) < 1e-3 or abs(factor) < 1e-9:
        return None
    return factor if close(got, factor * want, rtol) else None


def _nice(factor: float) -> str:
    fraction = Fraction(factor).limit_denominator(64)
    if abs(float(fraction) - factor) < 1e-6 * max(1.0, abs(factor)):
        return str(fraction)
    return f"{factor:.4g}"


def _largest_error(got: np.ndarray, want: np.ndarray) -> str:
    if got.size == 0:
        return "wrong values"
    index = np.unravel_index(int(np.argmax(np.abs(got - want))), got.shape)
    where = tuple(int(i) for i in index)
    return (
        f"wrong values; the largest error is at index {where}: expected {want[index]:.6g}, "
        f"got {got[index]:.6g}"
    )
