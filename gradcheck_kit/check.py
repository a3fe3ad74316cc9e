"""``check()``: the self-check students run in their notebook.

``check(sin_backward)`` finds the op by the function's name, runs its public cases
in this process and shows a table (HTML in Jupyter, text in a terminal). It never
raises for a wrong answer: it returns a :class:`CheckResult` with the score.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import calling
from .cases import Case
from .efficiency import copy_floor, efficiency_case, interleaved_times, reference_forward
from .registry import Checkable, get_op
from .verdict import CaseResult, score_cases

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclass
class CheckResult:
    """The outcome of checking one function on a set of cases."""

    op: str
    cases: list[CaseResult] = field(default_factory=list)
    status: str = "checked"  # or "not implemented"

    @property
    def score(self) -> float:
        """Weighted fraction of cases passed, between 0 and 1 (see ``score_cases``)."""
        return score_cases(self.cases)

    @property
    def passed(self) -> bool:
        return self.status == "checked" and bool(self.cases) and all(c.passed for c in self.cases)

    def summary(self) -> str:
        if self.status == "not implemented":
            return f"{self.op}: not implemented yet (it raises NotImplementedError)"
        good = sum(c.passed for c in self.cases)
        verdict = "all correct" if self.passed else "some cases fail"
        return f"{self.op}: {good}/{len(self.cases)} cases pass, {verdict} (score {self.score:.2f})"

    def __repr__(self) -> str:
        return f"<CheckResult {self.summary()}>"

    def to_text(self) -> str:
        lines = [self.summary()]
        if self.status != "checked":
            return lines[0]
        width = max((len(c.name) for c in self.cases), default=4)
        for c in self.cases:
            mark = "PASS" if c.passed else "FAIL"
            error = "" if c.error is None else f"{c.error:.1e}"
            hint = "" if c.passed else f"  [{c.hint}] {c.message}"
            lines.append(f"  {mark}  {c.name:<{width}}  {error:>8}{hint}")
        return "\n".join(lines)

    def _ipython_display_(self) -> None:
        # the value of a cell ending in check(...) would repeat the table check() has
        # just shown; shown again when asked for in another cell (``result``)
        shell = _shell()
        shown = getattr(self, "_shown_at", None)
        if shell is not None and shown is not None and shown == shell.execution_count:
            return
        _display(self, shell)

    def _repr_html_(self) -> str:
        title = html.escape(self.summary())
        if self.status != "checked":
            return f"<p><b>{title}</b></p>"
        rows = []
        for c in self.cases:
            color = "#1a7f37" if c.passed else "#cf222e"
            mark = "pass" if c.passed else "FAIL"
            error = "" if c.error is None else f"{c.error:.1e}"
            hint = (
                ""
                if c.passed
                else (f"<code>{html.escape(c.hint or '')}</code> {html.escape(c.message)}")
            )
            rows.append(
                f"<tr><td style='text-align:left'>{html.escape(c.name)}</td>"
                f"<td style='color:{color};font-weight:bold'>{mark}</td>"
                f"<td>{error}</td><td style='text-align:left'>{hint}</td></tr>"
            )
        return (
            f"<p><b>{title}</b></p><table><thead><tr><th style='text-align:left'>case</th>"
            "<th>result</th>"
            f"<th>rel. error</th><th style='text-align:left'>hint</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )


def _is_student(filename: str) -> bool:
    return not os.path.abspath(filename).startswith(_PACKAGE_DIR)


def adapted(fn: Callable, spec: Checkable) -> Callable:
    """``fn`` as the op calls it: through the op's adapter, if it has one. The adapter
    runs with the student's globals, as it does in the grader's worker."""
    return calling.adapted(fn, spec.adapter, spec.name, getattr(fn, "__globals__", {}))


def call_on_case(
    fn: Callable, spec: Checkable, case: Case, call: Callable | None = None
) -> tuple[Any, str | None, bool]:
    """Call ``fn`` on copies of the case's inputs: (result, error text, mutated?).

    ``call`` is ``adapted(fn, spec)`` if the caller made it already (the adapter is
    compiled once per op, not per case). ``NotImplementedError`` propagates so that a
    stub is reported as such.
    """
    args = spec.call_args(case.arrays, case.output_grad, case.params)
    try:
        called = calling.call_student(call or adapted(fn, spec), args, _is_student)
    except MemoryError as error:  # reported like any other exception in the kernel
        return None, calling.student_traceback(error, _is_student), False
    return called.value, called.error, called.mutated


def run_cases(fn: Callable, spec: Checkable, cases: Sequence[Case]) -> CheckResult:
    """Run ``fn`` on every case in this process and judge each result."""
    outcome = CheckResult(spec.name)
    call = adapted(fn, spec)
    for case in cases:
        try:
            result, error, mutated = call_on_case(fn, spec, case, call)
        except NotImplementedError:
            return CheckResult(spec.name, [], status="not implemented")
        details = {"error": error, "mutated": mutated}
        if getattr(case, "time_bound", None) is not None and error is None:
            details["timing"] = time_backward(call, spec, case)
        outcome.cases.append(spec.judge(case, result, **details))
    return outcome


def time_backward(call: Callable, spec: Checkable, case: Case, repeats: int = 5):
    """(backward, forward) seconds of ``call`` (the student's function as the op calls
    it): best of runs on fresh copies, alternating with the reference forward; the
    forward is floored as in :mod:`gradcheck_kit.efficiency`."""
    args = spec.call_args(case.arrays, case.output_grad, case.params)
    copies = iter([calling.copy_args(args) for _ in range(repeats)])
    backward, forward = interleaved_times(
        lambda: call(*next(copies)), reference_forward(spec, case), repeats
    )
    return backward, max(forward, copy_floor(case, repeats))


def check(
    fn: Callable, name: str | None = None, *, show: bool = True, efficiency: bool = True
) -> CheckResult:
    """Check a backward function on its public cases and show the results.

    The op is found by the function's name (``sin_backward`` -> the ``sin`` op); pass
    ``name=`` for a function whose ``__name__`` differs (a lambda, an alias). With
    ``efficiency`` (the default), one large case also compares the backward's time with
    the forward's: a Python loop over elements fails it with hint ``not-vectorized``.
    """
    op_name = name or getattr(fn, "__name__", "")
    try:
        spec = get_op(op_name)
    except KeyError:
        raise ValueError(
            f"check() does not know a function named {op_name!r}; name it as in the "
            "assignment (e.g. sin_backward) or pass name='sin_backward'"
        ) from None
    cases = spec.cases()
    large = efficiency_case(spec) if efficiency else None
    result = run_cases(fn, spec, cases + ([large] if large is not None else []))
    if show:
        _show(result)
    return result


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _display(result: CheckResult, shell: Any) -> None:
    if shell is not None and type(shell).__name__ != "TerminalInteractiveShell":
        from IPython.display import HTML, display

        display(HTML(result._repr_html_()))
    else:
        print(result.to_text())


def _show(result: CheckResult) -> None:
    shell = _shell()
    _display(result, shell)
    if shell is not None:
        result._shown_at = getattr(shell, "execution_count", None)
