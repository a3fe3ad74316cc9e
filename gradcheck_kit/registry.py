"""The op registry: every backward function students write is declared here once.

An op declaration says what the forward computes (a float64 NumPy reference), which
arguments are arrays and which of them get gradients, where inputs are drawn from,
and which layouts (shapes and parameters) to try. Cases, numerical gradients, verdicts
and hints are all derived from it; see ``gradcheck_kit.ops`` for the curriculum's ops
and the README for declaring a new one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .domains import Domain, Real
from .numerical import as_float64

#: A layout is one concrete shape/parameter choice for a case:
#: (family, readable label, {input name: shape or concrete array}, {param name: value}).
Layout = tuple[str, str, dict[str, Any], dict[str, Any]]
LayoutFn = Callable[[np.random.Generator, bool], Iterable[Layout]]


@dataclass(frozen=True)
class OpSpec:
    """Everything the checker needs to know about one backward function.

    ``inputs`` names the forward's array arguments in order (they come before
    ``output_grad`` in the backward's signature); ``params`` the non-array
    arguments that follow it, with their defaults.  ``differentiable`` lists the
    inputs that receive gradients (default: all of them).
    """

    name: str
    assignment: str
    forward: Callable[..., np.ndarray]
    inputs: dict[str, Domain]
    layouts: LayoutFn
    params: dict[str, Any] = field(default_factory=dict)
    differentiable: tuple[str, ...] | None = None
    points: float = 1.0
    #: the inputs broadcast against each other elementwise (enables unbroadcast hints)
    broadcasting: bool = False
    #: optional: make ties or kinks in sampled arrays -> (arrays, ok-to-grade)
    make_ties: Callable[[np.random.Generator, dict, dict], dict] | None = None
    #: optional: is ``grads`` a valid subgradient at a tie point?
    subgradient_ok: Callable[[dict, dict, np.ndarray, dict], bool] | None = None
    #: optional: put exact zeros in sampled arrays (prod, cumprod)
    make_zeros: Callable[[np.random.Generator, dict, dict], dict] | None = None
    #: optional known wrong answers: hint code -> f(arrays, params, output_grad) -> grads
    mistakes: dict[str, Callable[..., dict]] = field(default_factory=dict)
    #: optional override of the positional call (for helpers like ``unbroadcast``)
    call: Callable[[dict, np.ndarray, dict], tuple] | None = None
    #: the forward's result is returned as a list (cat) rather than a tuple
    returns_list: bool = False
    description: str = ""
    #: optional Python source defining ``adapt(fn, *args)``: how to call the student's
    #: function with a case's arguments (see ``Checkable``); None means ``fn(*args)``
    adapter: str | None = None
    #: one large layout for the efficiency case (see ``gradcheck_kit.efficiency``)
    large: Layout | None = None

    def cases(self, hidden: bool = False, secret: str | None = None) -> list:
        from .cases import generate_cases

        return generate_cases(self, hidden=hidden, secret=secret)

    def judge(self, case, result, **details):
        from .verdict import judge

        return judge(self, case, result, **details)

    @property
    def grad_names(self) -> tuple[str, ...]:
        return self.differentiable if self.differentiable is not None else tuple(self.inputs)

    def signature(self) -> str:
        names = [*self.inputs, "output_grad"]
        names += [f"{k}={v!r}" for k, v in self.params.items()]
        return f"{self.name}({', '.join(names)})"

    def call_args(self, arrays: dict, output_grad: np.ndarray, params: dict) -> tuple:
        """Positional arguments for the student's function, in curriculum order."""
        if self.call is not None:
            return self.call(arrays, output_grad, params)
        values = [arrays[name] for name in self.inputs]
        values.append(output_grad)
        values += [params.get(name, default) for name, default in self.params.items()]
        return tuple(values)

    def evaluate(self, arrays: dict, params: dict) -> np.ndarray:
        """The reference forward, always in float64 (integer and boolean arrays kept)."""
        positional = [as_float64(arrays[name]) for name in self.inputs]
        return np.asarray(self.forward(*positional, **{**self.params, **params}), dtype=np.float64)


class Checkable(Protocol):
    """What the checker and the grader need of a registered op.

    :class:`OpSpec` is the usual kind (a backward checked against a forward); other
    kinds (the graph traversal of 05_engine) implement the same few members.
    ``call_args`` gives the positional arguments for the student's function; if
    ``adapter`` is set, it is Python source defining ``adapt(fn, *args)``, executed
    next to the student's code, and the student's function is called through it.
    Every value in a case's arguments and in a result is plain data (arrays,
    numbers, strings, None, slices, Ellipsis, and lists/tuples/str-keyed dicts).
    """

    name: str
    assignment: str
    points: float
    adapter: str | None

    def cases(self, hidden: bool = False, secret: str | None = None) -> list: ...

    def call_args(self, arrays: dict, output_grad: Any, params: dict) -> tuple: ...

    def judge(self, case: Any, result: Any, **details: Any) -> Any: ...


_REGISTRY: dict[str, Checkable] = {}


def register(spec: Checkable) -> Checkable:
    """Add (or replace) an op; later declarations of the same name win."""
    _REGISTRY[spec.name] = spec
    return spec


def declare_op(
    name: str,
    forward: Callable[..., np.ndarray],
    *,
    assignment: str = "custom",
    inputs: dict[str, Domain] | Sequence[str] | None = None,
    layouts: LayoutFn | None = None,
    **options: Any,
) -> OpSpec:
    """Declare an op from its forward and input domains; everything else is derived.

    ``inputs`` may be a list of names (each drawn from ``Real()``) or a mapping of
    names to domains; without it, the forward's positional parameters are used.
    Without ``layouts``, elementwise broadcasting layouts are used.
    """
    from .layouts import broadcast_layouts, unary_layouts

    if inputs is None:
        import inspect

        inputs = [
            p.name
            for p in inspect.signature(forward).parameters.values()
            if p.default is inspect.Parameter.empty
        ]
    if not isinstance(inputs, dict):
        inputs = {input_name: Real() for input_name in inputs}
    if layouts is None:
        if len(inputs) == 1:
            layouts = unary_layouts
        else:
            layouts = broadcast_layouts(len(inputs))
            options.setdefault("broadcasting", True)
    return register(
        OpSpec(
            name=name,
            assignment=assignment,
            forward=forward,
            inputs=inputs,
            layouts=layouts,
            **options,
        )
    )


def get_op(name: str) -> Checkable:
    _load_curriculum()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no op named {name!r}; known ops: {', '.join(sorted(_REGISTRY))}") from None


def all_ops(assignment: str | None = None) -> list[Checkable]:
    _load_curriculum()
    return [op for op in _REGISTRY.values() if assignment in (None, op.assignment)]


def assignments() -> list[str]:
    _load_curriculum()
    return sorted({op.assignment for op in _REGISTRY.values()})


def _load_curriculum() -> None:
    from . import ops  # noqa: F401  (importing registers the curriculum's ops)
