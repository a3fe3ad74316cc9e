"""The grading pipeline for one submission: read, run in the worker, judge, score.

The grader reads the notebook (linear-time JSON, nothing of the student's parsed
here), picks the assignment, and hands the code cells to the sandboxed worker, which
extracts and runs them. Cases are generated and judged here; the worker only ever
sees the arguments of each call and sends back what the student's function returned.
While the grader judges one op, the worker is already running the next.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import gradcheck_kit
from gradcheck_kit.cases import verdict_rng
from gradcheck_kit.efficiency import settings_for
from gradcheck_kit.numerical import leaves_of
from gradcheck_kit.registry import OpSpec
from gradcheck_kit.verdict import Malformed, normalize, projection_error

from . import channel, timing
from .notebook import BadSubmission, code_cells, read_notebook
from .sandbox import Sandbox, SandboxOptions, WorkerDied
from .scoring import OpGrade, score_op

DEFAULT_SECRET = "gradcheck-default-secret"
SECRET_ENV = "GRADCHECK_SECRET"
_GRADER_IMPORT = "importing 'gradcheck_kit' is not allowed"


@dataclass
class Grade:
    """The outcome of grading one submission."""

    submission: str
    assignment: str
    ops: list[OpGrade] = field(default_factory=list)
    #: where the hidden cases' secret came from: "--seed", "environment" or "default"
    secret_source: str = "default"
    notes: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return round(sum(op.score for op in self.ops), 6)

    @property
    def max_score(self) -> float:
        return round(sum(op.max_score for op in self.ops), 6)


def resolve_secret(seed: str | None) -> tuple[str, str]:
    """(secret, where it came from): ``--seed`` wins over the environment."""
    if seed is not None:
        return seed, "--seed"
    if os.environ.get(SECRET_ENV):
        return os.environ[SECRET_ENV], "environment"
    return DEFAULT_SECRET, "default"


#: ``def NAME`` or ``NAME =`` / ``NAME:`` at the start of a line. Spaces and tabs
#: only: ``\s`` would run across lines and make the scan quadratic in blank lines
_BINDING = re.compile(
    r"^[ \t]*(?:(?:async[ \t]+)?def[ \t]+([A-Za-z_]\w*)|([A-Za-z_]\w*)[ \t]*[:=])", re.M
)


def names_bound(cells: list[str], wanted: set[str]) -> set[str]:
    """Which of ``wanted`` the cells seem to bind at the start of a line: a linear scan
    of the text, enough to pick the assignment (the worker finds what really exists)."""
    found: set[str] = set()
    for source in cells:
        for match in _BINDING.finditer(source):
            name = match.group(1) or match.group(2)
            if name in wanted:
                found.add(name)
    return found


def detect_assignment(defined: set[str], ops: list[Any]) -> str | None:
    """The assignment whose functions the notebook covers best (most names, then the
    larger share of the assignment, then the name, for a stable answer)."""
    names: dict[str, set[str]] = {}
    for op in ops:
        names.setdefault(op.assignment, set()).add(op.name)
    best = max(
        names.items(),
        key=lambda item: (len(item[1] & defined), len(item[1] & defined) / len(item[1]), item[0]),
        default=None,
    )
    if best is None or not best[1] & defined:
        return None
    return best[0]


def grade_submission(
    path: str | os.PathLike,
    *,
    assignment: str | None = None,
    seed: str | None = None,
    hidden: bool = True,
    options: SandboxOptions | None = None,
    efficiency: dict | None = None,
) -> Grade:
    """Grade the notebook at ``path``; raises :class:`BadSubmission` if it is unreadable.

    ``efficiency`` overrides the assignment's efficiency settings (``bound``, ``weight``,
    ``repeats``; a weight of 0 turns the efficiency cases off).
    """
    options = options or SandboxOptions()
    # student code must not read the submission's neighbours (other submissions)
    hide = (*options.hide, os.path.dirname(os.path.abspath(os.fspath(path))))
    sandbox = Sandbox(dataclasses.replace(options, hide=hide))
    sandbox.start()  # the worker imports NumPy while we read the notebook
    try:
        return _grade(sandbox, os.fspath(path), assignment, seed, hidden, efficiency or {})
    finally:
        sandbox.close()


def _grade(
    sandbox: Sandbox,
    path: str,
    assignment: str | None,
    seed: str | None,
    hidden: bool,
    efficiency: dict,
) -> Grade:
    cells = code_cells(read_notebook(path))
    assignment = choose_assignment(path, cells, assignment, sandbox)
    secret, source = resolve_secret(seed)
    grade = Grade(path, assignment, secret_source=source)
    ops = gradcheck_kit.all_ops(assignment)
    settings = settings_for(assignment, **efficiency)
    large = timing.efficiency_cases(ops, settings)
    calibration = timing.calibrate(sandbox, ops, large)  # before any student code runs
    defined = load_student_code(sandbox, cells, ops, grade)
    graded = [op for op in ops if op.name in defined]
    # every public case, then the efficiency cases, and the hidden cases last: what a
    # function learns of hidden inputs cannot reach a public case's (visible) message
    public = run_cases(sandbox, [(op, op.cases()) for op in graded])
    timed = {
        op.name: timing.measure(sandbox, op, large[op.name], calibration, secret)
        for op in graded
        if op.name in large
    }
    hidden_runs = (
        run_cases(sandbox, [(op, op.cases(hidden=True, secret=secret)) for op in graded])
        if hidden
        else {}
    )
    for op in ops:
        runs = [r for r in (public.get(op.name), hidden_runs.get(op.name)) if r is not None]
        grade.ops.append(judge_op(op, runs, timed.get(op.name), calibration, secret))
    return grade


def choose_assignment(
    path: str, cells: list[str], assignment: str | None, sandbox: Sandbox | None = None
) -> str:
    """The assignment asked for, or the one whose functions the cells define.

    When no curriculum name is found, ``sandbox`` (the submission's worker, if given)
    is asked which cells do not parse, so that the message names a syntax error rather
    than blaming the assignment; the grader itself never parses student code."""
    if assignment is not None:
        if assignment not in gradcheck_kit.assignments():
            known = ", ".join(gradcheck_kit.assignments())
            raise BadSubmission(f"unknown assignment {assignment!r} (known: {known})")
        return assignment
    every_op = gradcheck_kit.all_ops()
    found = detect_assignment(names_bound(cells, {op.name for op in every_op}), every_op)
    if found is None:
        syntax = _syntax_error(sandbox, cells) if sandbox is not None and cells else None
        if syntax:
            raise BadSubmission(
                f"{path}: defines none of the curriculum's functions, and {syntax}: fix it, "
                "or pass --assignment NAME to grade it anyway"
            )
        what = "has no code cells" if not cells else "defines none of the curriculum's functions"
        raise BadSubmission(
            f"{path}: {what} (e.g. def sin_backward(input, output_grad): ...); "
            "pass --assignment NAME to grade it anyway"
        )
    return found


def _syntax_error(sandbox: Sandbox, cells: list[str]) -> str | None:
    """'code cell N has a syntax error (...)' for the first cell the worker could not
    parse, or None."""
    loaded = sandbox.load(cells, [])
    errors = [
        e
        for e in _list(loaded.get("syntax_errors"))
        if isinstance(e, dict) and type(e.get("cell")) is int
    ]
    if not errors:
        return None
    first = errors[0]
    more = f" ({len(errors) - 1} more cells too)" if len(errors) > 1 else ""
    from .sanitize import line

    # the message quotes the student's code: shown inert, on one line
    detail = line((_text(first.get("error")).splitlines() or [""])[0])[:200]
    return f"code cell {first['cell']} has a syntax error ({detail}){more}"


def load_student_code(sandbox: Sandbox, cells: list[str], ops: list[Any], grade: Grade) -> set[str]:
    """Run the notebook's code in the worker; the names of the ops it defines. What went
    wrong on the way (syntax errors, cells that raised) becomes the grade's notes."""
    loaded = sandbox.load(cells, [op.name for op in ops])
    if loaded.get("fatal"):
        fatal = _text(loaded["fatal"])
        grade.notes.append(f"loading your code crashed the grader's worker: {fatal}")
    # student code runs during the load and can write to the protocol's descriptor:
    # trust no field of the reply to have the type the worker would give it
    for error in _list(loaded.get("syntax_errors")):
        if isinstance(error, dict) and type(error.get("cell")) is int:
            grade.notes.append(f"cell {error['cell']}: syntax error, {_text(error.get('error'))}")
    for error in _list(loaded.get("errors")):
        if not isinstance(error, dict):
            continue
        text = _text(error.get("error", ""))
        if _GRADER_IMPORT in text:
            continue  # notebooks import check() for self-checks; expected and harmless
        cell, line = error.get("cell"), error.get("line")
        where = f"cell {cell + 1}, line {line}: " if type(cell) is int and type(line) is int else ""
        grade.notes.append(f"{where}{(text.splitlines() or [''])[0]}")
    # what the worker noticed while running the cells (time budgets, missing modules)
    for note in _list(loaded.get("notes"))[:50]:
        if isinstance(note, str):
            grade.notes.append(_text(note)[:300])
    return {name for name in _list(loaded.get("callable")) if isinstance(name, str)}


@dataclass
class _Run:
    """One op's ordinary cases and what the worker sent back for them."""

    cases: list
    reply: Any = None


def run_cases(sandbox: Sandbox, requests: list[tuple[Any, list]]) -> dict[str, _Run]:
    """Each (op, cases) as one request. The worker runs the next request while the last
    one is judged here; one request in flight at a time, so a worker killed over one op
    never takes another op's with it."""
    runs = {}
    pending: _Run | None = None
    for op, cases in requests:
        run = runs[op.name] = _Run(cases)
        args = [op.call_args(c.arrays, c.output_grad, c.params) for c in cases]
        if pending is not None:
            pending.reply, pending = _collect(sandbox), None
        try:
            sandbox.submit(op.name, op.adapter, args)
            pending = run
        except WorkerDied as died:
            run.reply = died
    if pending is not None:
        pending.reply = _collect(sandbox)
    return runs


def _collect(sandbox: Sandbox) -> Any:
    try:
        return sandbox.collect()
    except WorkerDied as died:
        return died


def judge_op(
    op: Any,
    runs: list[_Run],
    timed: timing.TimedRun | None,
    calibration: timing.Calibration,
    secret: str,
) -> OpGrade:
    """The op's grade from its runs (public, then hidden) and its efficiency case. Any
    reply, however malformed, costs at most this op."""
    if not runs:
        return OpGrade.failed(op, "missing", "not defined in the notebook")
    verdicts, outputs = [], []
    try:
        for run in runs:
            judged = _judge_reply(op, run.cases, run.reply, secret)
            if isinstance(judged, OpGrade):
                return judged
            verdicts += judged[0]
            outputs += [judged[1]] if judged[1] else []
        if timed is not None:
            verdicts.append(_judge_timed(op, timed, calibration, secret))
    except Exception as error:  # noqa: BLE001  (a forged reply must not stop the grader)
        message = f"the worker's reply could not be judged ({type(error).__name__})"
        return OpGrade.failed(op, "error", message)
    return score_op(op, verdicts, "\n".join(outputs))


def _judge_reply(op: Any, cases: list, received: Any, secret: str, seconds=None):
    """(verdicts, output) for ``cases``, or an OpGrade if the whole run failed."""
    if isinstance(received, WorkerDied):
        return OpGrade.failed(op, received.status, received.message)
    reply, buffers = received
    status = reply.get("status")
    output = _text(reply.get("output", ""))
    if status == "missing":
        return OpGrade.failed(op, "missing", "not implemented (raises NotImplementedError)", output)
    if status == "timeout":
        return OpGrade.failed(op, "timeout", "took too long and was stopped", output)
    if status == "memory":
        return OpGrade.failed(op, "memory", "ran out of memory", output)
    results = reply.get("results")
    if status != "ran" or not isinstance(results, list) or len(results) != len(cases):
        return OpGrade.failed(op, "error", _text(reply.get("message", "the worker failed")), output)
    verdicts = [_judge(op, c, item, buffers, secret, seconds) for c, item in zip(cases, results)]
    return verdicts, output


def _judge_timed(op: Any, timed: timing.TimedRun, calibration: timing.Calibration, secret: str):
    """The efficiency case's verdict: the first call judged in full, with the best
    backward time (on the grader's clock) against the bound of the forward's; every
    other call, on its own fresh inputs, must give a right gradient too."""
    case = timed.requests[0][0]
    seconds = None
    if timed.backward is not None:
        seconds = (timed.backward, timing.forward_time(op, case, calibration))
    verdict = None
    for cases, received in zip(timed.requests, timed.replies):
        judged = _judge_reply(op, cases[:1], _first(received), secret, None if verdict else seconds)
        if isinstance(judged, OpGrade):  # the timed run alone failed: that case fails
            message = _SLOW if judged.status == "timeout" else judged.message
            failed = op.judge(case, None, error=message)
            failed.hint = "not-vectorized" if judged.status == "timeout" else failed.hint
            return failed
        verdict = verdict or judged[0][0]
        if not verdict.passed:
            return verdict
        reply, buffers = received
        for fresh, item in zip(cases[1:], reply["results"][1:]):
            if not _right_on_fresh_inputs(op, fresh, item, buffers, secret):
                return op.judge(case, None, error=_WRONG_AGAIN)
    return verdict


def _first(received: Any) -> Any:
    """A reply to a request of several calls, as if it had had only the first."""
    if isinstance(received, WorkerDied):
        return received
    reply, buffers = received
    results = reply.get("results")
    if reply.get("status") == "ran" and isinstance(results, list) and len(results) > 1:
        reply = dict(reply, results=results[:1])
    return reply, buffers


def _right_on_fresh_inputs(op: Any, case: Any, item: Any, buffers: list, secret: str) -> bool:
    """A cheaper check of one more call: right structure, shape and finite values, and
    agreement along one random direction drawn from the secret."""
    if not isinstance(item, dict) or "error" in item or item.get("mutated"):
        return False
    try:
        value = channel.decode(item.get("value"), buffers)
    except channel.ChannelError:
        return False
    if _find_unsupported(value) is not None:
        return False
    leaves = leaves_of(op.grad_names, case.arrays)
    try:
        grads = normalize(op, case, value, leaves)
    except Malformed:
        return False
    if not all(np.all(np.isfinite(g)) for g in grads.values()):
        return False
    rng = verdict_rng(secret, op.name, f"{case.name}\0again")
    return projection_error(op, case, grads, leaves, rng, directions=1) <= 1.0


_WRONG_AGAIN = (
    "right on the first input, but wrong when called again on fresh inputs of the same "
    "shape: a backward must compute its gradient from the arguments of each call"
)
_SLOW = (
    "took longer than the time limit on this large input: use whole-array NumPy "
    "operations instead of Python loops over elements"
)


def _judge(op: Any, case: Any, item: Any, buffers: list[bytes], secret: str, seconds=None) -> Any:
    if not isinstance(item, dict):
        return op.judge(case, None, error="the worker sent no result")
    if "error" in item:
        return op.judge(case, None, error=_text(item["error"])[:2000])
    try:
        value = channel.decode(item.get("value"), buffers)
    except channel.ChannelError as error:
        return op.judge(case, None, error=f"returned a value the grader cannot read ({error})")
    bad = _find_unsupported(value)
    if bad is not None:
        return op.judge(case, None, error=f"returned {_text(bad.what)}; return NumPy float arrays")
    details: dict[str, Any] = {"timing": seconds} if seconds is not None else {}
    if isinstance(op, OpSpec):
        details["rng"] = verdict_rng(secret, op.name, case.name)
    return op.judge(case, value, mutated=bool(item.get("mutated")), **details)


def _text(value: Any) -> str:
    """Text from the worker, made writable as UTF-8: student code can put lone
    surrogates (``"\\ud800"``) in an exception message, which JSON carries but no
    report file or terminal can encode."""
    return str(value).encode("utf-8", "replace").decode("utf-8")


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _find_unsupported(value: Any) -> channel.Unsupported | None:
    if isinstance(value, channel.Unsupported):
        return value
    if isinstance(value, (list, tuple)):
        items = value
    elif isinstance(value, dict):
        items = list(value.values())
    else:
        return None
    for item in items:
        found = _find_unsupported(item)
        if found is not None:
            return found
    return None
