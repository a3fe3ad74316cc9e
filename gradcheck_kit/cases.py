"""Cases: concrete inputs for one op, derived from its declaration.

Every layout of the op becomes a base case; a few base cases are then varied into
the families every op shares (float32 inputs, non-contiguous views, unusual upstream
gradients) and the ones only some ops have (ties at kinks, exact zeros). Public
cases use a fixed seed; hidden cases are seeded by the instructor's secret and the
op's name, and include further random layouts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .calling import non_contiguous
from .registry import OpSpec

PUBLIC_SEED = "public"


@dataclass
class Case:
    """One call of a backward function: inputs, parameters and an upstream gradient."""

    op: str
    name: str
    family: str
    arrays: dict[str, Any]
    params: dict[str, Any]
    output_grad: np.ndarray
    hidden: bool = False
    #: inputs sit on a kink on purpose; any valid subgradient passes
    at_kink: bool = False
    #: inputs contain exact zeros on purpose
    has_zeros: bool = False
    weight: float = 1.0
    tags: tuple[str, ...] = field(default_factory=tuple)
    #: efficiency cases: the backward may take this many times the forward
    time_bound: float | None = None

    @property
    def dtype(self) -> np.dtype:
        floats = [a.dtype for a in _float_arrays(self.arrays)]
        return np.result_type(*floats) if floats else np.dtype(np.float64)


def _float_arrays(arrays: dict[str, Any]) -> Iterator[np.ndarray]:
    for value in arrays.values():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, np.ndarray) and item.dtype.kind == "f":
                yield item


def seed_for(op_name: str, secret: str) -> np.random.Generator:
    """A generator that depends on the op and the secret, and on nothing else."""
    digest = hashlib.sha256(f"{secret}\0{op_name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def case_rng(op_name: str, hidden: bool, secret: str | None) -> np.random.Generator:
    """The generator of an op's public cases, or of its hidden ones under ``secret``."""
    return seed_for(op_name, "hidden\0" + (secret or "") if hidden else PUBLIC_SEED)


def verdict_rng(secret: str, op_name: str, case_name: str) -> np.random.Generator:
    """The generator of every random choice the grader's verdict on one case makes (the
    projection directions): drawn from the instructor's secret in the grader, so student
    code, which never sees the secret, cannot know them."""
    return seed_for(f"{op_name}\0{case_name}", "verdict\0" + secret)


def generate_cases(spec: OpSpec, *, hidden: bool = False, secret: str | None = None) -> list[Case]:
    """The public cases of ``spec`` or, with ``hidden=True``, its hidden ones."""
    rng = case_rng(spec.name, hidden, secret)
    base = [sample_case(spec, rng, layout, hidden) for layout in spec.layouts(rng, hidden)]
    cases = list(base)
    gradable = [c for c in base if c.family != "degenerate" and c.output_grad.size > 0]
    picks = _pick(rng, gradable, 2 if hidden else 1)
    for case in picks:
        cases.append(_as_float32(case))
    for case in _pick(rng, [c for c in gradable if _viewable(c)], 1):
        cases.append(_as_views(case))
    for case in picks[:1]:
        cases.append(_with_output_grad(case, np.zeros_like(case.output_grad), "output_grad = 0"))
        cases.append(_with_output_grad(case, case.output_grad * 1e3, "output_grad scaled by 1e3"))
    for make, kind, count in ((spec.make_ties, "ties", 3), (spec.make_zeros, "zeros", 3)):
        if make is None:
            continue
        made = (_with_special(spec, case, rng, make, kind) for case in gradable)
        cases += [case for case in made if case is not None][: count + hidden]
    seen: set[str] = set()
    for case in cases:
        case.hidden = hidden
        # hidden cases repeat some public layouts: the prefix keeps names unique per op
        case.name = _unique(f"hidden: {case.name}" if hidden else case.name, seen)
    return cases


def sample_case(spec: OpSpec, rng: np.random.Generator, layout, hidden: bool) -> Case:
    family, label, shapes, params = layout
    arrays: dict[str, Any] = {}
    for name, domain in spec.inputs.items():
        given = shapes.get(name)
        if isinstance(given, tuple):
            arrays[name] = domain.sample(rng, given)
        elif isinstance(given, list) and all(isinstance(s, tuple) for s in given):
            arrays[name] = [domain.sample(rng, s) for s in given]
        else:  # a concrete array, a list of arrays, or None (an absent optional input)
            arrays[name] = given
    output = spec.evaluate(arrays, params)
    output_grad = rng.standard_normal(output.shape)
    return Case(spec.name, label, family, arrays, dict(params), output_grad, hidden=hidden)


def _pick(rng: np.random.Generator, cases: list[Case], count: int) -> list[Case]:
    if len(cases) <= count:
        return list(cases)
    # prefer the richer layouts (broadcasting, dims) over the plain ones
    order = sorted(range(len(cases)), key=lambda i: (cases[i].family == "basic", rng.random()))
    return [cases[i] for i in sorted(order[:count])]


def _map_float_arrays(arrays: dict[str, Any], fn) -> dict[str, Any]:
    def convert(value):
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            return fn(value)
        return value

    return {name: convert(value) for name, value in arrays.items()}


def _as_float32(case: Case) -> Case:
    arrays = _map_float_arrays(case.arrays, lambda a: a.astype(np.float32))
    return replace(
        case,
        name=f"{case.name} [float32]",
        family="float32",
        arrays=arrays,
        output_grad=case.output_grad.astype(np.float32),
    )


def _viewable(case: Case) -> bool:
    return any(a.ndim >= 1 and a.size > 1 for a in _float_arrays(case.arrays))


def _as_views(case: Case) -> Case:
    arrays = _map_float_arrays(case.arrays, non_contiguous)
    return replace(
        case,
        name=f"{case.name} [non-contiguous views]",
        family="views",
        arrays=arrays,
        output_grad=non_contiguous(case.output_grad),
    )


def _with_output_grad(case: Case, output_grad: np.ndarray, note: str) -> Case:
    return replace(case, name=f"{case.name} [{note}]", family="upstream", output_grad=output_grad)


def _with_special(spec: OpSpec, case: Case, rng, make, kind: str) -> Case | None:
    arrays = make(rng, {k: _copy(v) for k, v in case.arrays.items()}, case.params)
    if arrays is None:  # this layout cannot hold the special values checkably
        return None
    output = spec.evaluate(arrays, case.params)
    output_grad = rng.standard_normal(output.shape)
    return replace(
        case,
        name=f"{case.name} [{kind}]",
        family=kind,
        arrays=arrays,
        output_grad=output_grad,
        at_kink=kind == "ties",
        has_zeros=kind == "zeros",
    )


def _copy(value):
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value.copy() if isinstance(value, np.ndarray) else value


def _unique(name: str, seen: set[str]) -> str:
    candidate, n = name, 2
    while candidate in seen:
        candidate = f"{name} #{n}"
        n += 1
    seen.add(candidate)
    return candidate
