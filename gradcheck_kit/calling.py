"""Calling a student's function: on fresh copies of the arguments, through the op's
adapter, with a check that nothing was modified in place and a traceback that shows
the student's frames only.

``check()`` calls student code in the student's kernel and the grader's worker calls
it in the sandbox; both go through this module, so a function is called the same way
in both places. It imports only the standard library and NumPy: the worker loads it
by path (it may not import this package).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Called:
    """What one call gave: the value, or the text of the exception it raised."""

    value: Any = None
    error: str | None = None
    #: the function modified one of its arguments in place
    mutated: bool = False


def non_contiguous(array: np.ndarray) -> np.ndarray:
    """The same values as a non-C-contiguous view."""
    if array.ndim >= 2:
        return np.ascontiguousarray(np.swapaxes(array, -1, -2)).swapaxes(-1, -2)
    if array.ndim == 1:
        return np.repeat(array, 2)[::2]
    return array


def copy_args(value: Any) -> Any:
    """Fresh copies of the arguments, keeping non-contiguous views non-contiguous."""
    if isinstance(value, np.ndarray):
        return value.copy() if value.flags.c_contiguous else non_contiguous(value.copy())
    if isinstance(value, list):
        return [copy_args(v) for v in value]
    if isinstance(value, tuple):
        return tuple(copy_args(v) for v in value)
    return value


def same_args(before: Any, after: Any) -> bool:
    """Were the arguments left exactly as they were (values, shapes and dtypes)?"""
    if isinstance(before, np.ndarray):
        return (
            isinstance(after, np.ndarray)
            and before.dtype == after.dtype
            and before.shape == after.shape
            and np.array_equal(before, after, equal_nan=before.dtype.kind in "fc")
        )
    if isinstance(before, (list, tuple)):
        return (
            type(before) is type(after)
            and len(before) == len(after)
            and all(same_args(b, a) for b, a in zip(before, after))
        )
    return True


def student_traceback(error: BaseException, is_student: Callable[[str], bool]) -> str:
    """The exception and the last few frames whose file ``is_student``."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if is_student(f.filename)]
    lines = [f"{type(error).__name__}: {error}"[:500]]
    for frame in frames[-3:]:
        code = f": {frame.line.strip()}" if frame.line else ""
        lines.append(f"  at line {frame.lineno} in {frame.name}{code}")
    return "\n".join(lines)


def adapted(fn: Callable, adapter: str | None, name: str, namespace: dict) -> Callable:
    """``fn`` as the op calls it: through the op's adapter (Python source defining
    ``adapt(fn, *args)``), which runs with the student's globals ``namespace``."""
    if not adapter:
        return fn
    scope = dict(namespace)
    exec(compile(adapter, f"<adapter of {name}>", "exec"), scope)
    adapt = scope["adapt"]
    return lambda *args: adapt(fn, *args)


def call_student(
    fn: Callable,
    args: tuple,
    is_student: Callable[[str], bool],
    catch: type[BaseException] = Exception,
    passthrough: tuple[type[BaseException], ...] = (),
) -> Called:
    """``fn`` on fresh copies of ``args``. ``NotImplementedError`` (a stub) and
    ``MemoryError`` propagate, and so does anything in ``passthrough`` or outside
    ``catch``; any other exception becomes the result's error text."""
    given = copy_args(args)
    try:
        value = fn(*given)
    except (NotImplementedError, MemoryError, *passthrough):
        raise
    except catch as error:
        return Called(error=student_traceback(error, is_student))
    return Called(value, None, not same_args(args, given))
