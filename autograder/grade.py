"""The grading pipeline for one submission: read, extract, run in the worker, judge.

Cases are generated and judged here, in the grader; the worker only ever sees the
arguments of each call and sends back what the student's function returned. While
the grader judges one op, the worker is already running the next.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from gradcheck_kit.cases import verdict_rng
from gradcheck_kit.registry import OpSpec

from . import channel
from .extract import extract
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
    sandbox.start()  # the worker imports NumPy while we read and extract
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
    import gradcheck_kit
    from gradcheck_kit.efficiency import efficiency_case, settings_for

    notebook = read_notebook(path)
    every_op = gradcheck_kit.all_ops()
    extracted = extract(code_cells(notebook), {op.name for op in every_op})
    if assignment is None:
        assignment = detect_assignment(extracted.defined, every_op)
        if assignment is None:
            raise BadSubmission(
                f"{path}: defines none of the curriculum's functions; pass --assignment"
            )
    elif assignment not in gradcheck_kit.assignments():
        known = ", ".join(gradcheck_kit.assignments())
        raise BadSubmission(f"unknown assignment {assignment!r} (known: {known})")
    secret, source = resolve_secret(seed)
    grade = Grade(path, assignment, secret_source=source)
    grade.notes += [f"cell {cell}: syntax error, {msg}" for cell, msg in extracted.syntax_errors]
    ops = gradcheck_kit.all_ops(assignment)

    settings = settings_for(assignment, **efficiency)
    large = {op.name: efficiency_case(op, settings) for op in ops}
    large = {name: case for name, case in large.items() if case is not None}
    forward_times = _calibrate(sandbox, large) if large else {}
    efficiency_repeats = settings.repeats

    loaded = sandbox.load([c.to_json() for c in extracted.chunks], [op.name for op in ops])
    if loaded.get("fatal"):
        fatal = _text(loaded["fatal"])
        grade.notes.append(f"loading your code crashed the grader's worker: {fatal}")
    # student code runs during the load and can write to the protocol's descriptor:
    # trust no field of the reply to have the type the worker would give it
    callable_names = {n for n in _list(loaded.get("callable")) if isinstance(n, str)}
    for error in _list(loaded.get("errors")):
        if not isinstance(error, dict):
            continue
        text = _text(error.get("error", ""))
        if _GRADER_IMPORT in text:
            continue  # notebooks import check() for self-checks; expected and harmless
        index = error.get("chunk")
        chunk = (
            extracted.chunks[index]
            if type(index) is int and 0 <= index < len(extracted.chunks)
            else None
        )
        where = f"cell {chunk.cell + 1}, line {chunk.line}: " if chunk else ""
        grade.notes.append(f"{where}{(text.splitlines() or [''])[0]}")

    # the worker runs the next request while the last one is judged here; one request in
    # flight at a time, so a worker killed over one op never takes another op's with it.
    # An op's efficiency case is a request of its own: a backward so slow that it runs
    # out of time loses that case only.
    order = [op.name for op in ops]
    jobs = []
    for op in ops:
        cases = op.cases() + (op.cases(hidden=True, secret=secret) if hidden else [])
        jobs.append(_Job(op, cases))
        if op.name in large:
            jobs.append(_Job(op, [large[op.name]], timed=True))
    received: dict[int, Any] = {}
    pending: int | None = None
    for index in [*range(len(jobs)), None]:
        if pending is not None:
            received[pending] = _receive(sandbox, jobs[pending].cases)
            pending = None
        if index is None:
            break
        job = jobs[index]
        if job.op.name not in callable_names:
            continue
        args = [job.op.call_args(c.arrays, c.output_grad, c.params) for c in job.cases]
        try:
            sandbox.submit(job.op.name, job.op.adapter, args, job.timing(efficiency_repeats))
            pending = index
        except WorkerDied as died:
            received[index] = died
    by_op: dict[str, list[tuple[_Job, Any]]] = {}
    for index, job in enumerate(jobs):
        by_op.setdefault(job.op.name, []).append((job, received.get(index)))
    for op in ops:
        grade.ops.append(_judge_op(op, by_op[op.name], forward_times, secret))
    grade.ops.sort(key=lambda g: order.index(g.name))
    return grade


def _calibrate(sandbox: Sandbox, large: dict[str, Any]) -> dict[str, float]:
    """Forward times of the efficiency cases, from the worker before it runs student code."""
    items = [
        {"op": name, "arrays": c.arrays, "params": c.params, "output_grad": c.output_grad}
        for name, c in large.items()
    ]
    seconds = sandbox.calibrate(items) or [None] * len(items)
    return {name: s for name, s in zip(large, seconds) if s is not None}


@dataclass
class _Job:
    """One request to the worker: an op's ordinary cases, or its efficiency case."""

    op: Any
    cases: list
    timed: bool = False

    def timing(self, repeats: int) -> dict | None:
        if not self.timed:
            return None
        case = self.cases[0]
        data = {"arrays": case.arrays, "params": case.params, "output_grad": case.output_grad}
        return {"op": self.op.name, "case": data, "repeats": repeats}


def _receive(sandbox: Sandbox, cases: list | None) -> Any:
    if cases is None:
        return None
    try:
        return sandbox.collect()
    except WorkerDied as died:
        return died


def _judge_op(op: Any, jobs: list[tuple[_Job, Any]], forward_times: dict, secret: str) -> OpGrade:
    (main, received), *extra = jobs
    if received is None:
        return OpGrade.failed(op, "missing", "not defined in the notebook")
    grade_or_verdicts = _judge_job(op, main, received, forward_times, secret)
    if isinstance(grade_or_verdicts, OpGrade):
        return grade_or_verdicts
    verdicts, output = grade_or_verdicts
    for job, got in extra:
        judged = _judge_job(op, job, got, forward_times, secret)
        if isinstance(judged, OpGrade):  # the efficiency run alone failed: that case fails
            hint = "not-vectorized" if judged.status == "timeout" else "exception"
            message = (
                "took longer than the time limit on this large input: use whole-array NumPy "
                "operations instead of Python loops over elements"
                if judged.status == "timeout"
                else judged.message
            )
            verdicts.append(op.judge(job.cases[0], None, error=message))
            verdicts[-1].hint = hint
        else:
            verdicts += judged[0]
    return score_op(op, verdicts, output)


def _judge_job(op: Any, job: _Job, received: Any, forward_times: dict, secret: str):
    """(verdicts, output) for the job's cases, or an OpGrade if the whole run failed."""
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
    if status != "ran" or not isinstance(results, list) or len(results) != len(job.cases):
        return OpGrade.failed(op, "error", _text(reply.get("message", "the worker failed")), output)
    verdicts = []
    for case, item in zip(job.cases, results):
        timing = _timing(op, case, item, forward_times) if job.timed else None
        verdict = _judge(op, case, item, buffers, secret, timing)
        if job.timed and timing is None and verdict.passed:
            # right values but no timing (the worker could not measure it): neither
            # credit nor penalty for efficiency, and the report says so
            verdict.weight = 0.0
            verdict.message = "efficiency not measured (the worker could not time it)"
        verdicts.append(verdict)
    return verdicts, output


def _timing(op: Any, case: Any, item: Any, forward_times: dict) -> tuple[float, float] | None:
    """(backward, forward) seconds; the forward is the smaller of the time calibrated
    before student code was loaded and the time measured beside the backward, since
    student code can only slow the reference forward down."""
    measured = item.get("seconds") if isinstance(item, dict) else None
    if not (isinstance(measured, list) and len(measured) == 2):
        return None
    try:  # a forged reply may carry anything here
        backward, forward = (float(v) for v in measured)
    except (TypeError, ValueError):
        return None
    calibrated = forward_times.get(op.name)
    if calibrated is None:
        from gradcheck_kit.efficiency import forward_seconds

        calibrated = forward_seconds(op, case)
    return backward, min(forward, calibrated)


def _judge(op: Any, case: Any, item: Any, buffers: list[bytes], secret: str, timing=None) -> Any:
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
    details: dict[str, Any] = {"timing": timing} if timing is not None else {}
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
