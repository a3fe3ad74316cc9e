"""The grading pipeline for one submission: read, extract, run in the worker, judge.

Cases are generated and judged here, in the grader; the worker only ever sees the
arguments of each call and sends back what the student's function returned. While
the grader judges one op, the worker is already running the next.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

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
) -> Grade:
    """Grade the notebook at ``path``; raises :class:`BadSubmission` if it is unreadable."""
    sandbox = Sandbox(options)
    sandbox.start()  # the worker imports NumPy while we read and extract
    try:
        return _grade(sandbox, os.fspath(path), assignment, seed, hidden)
    finally:
        sandbox.close()


def _grade(
    sandbox: Sandbox, path: str, assignment: str | None, seed: str | None, hidden: bool
) -> Grade:
    import gradcheck_kit

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

    loaded = sandbox.load([c.to_json() for c in extracted.chunks], [op.name for op in ops])
    if loaded.get("fatal"):
        grade.notes.append(f"loading your code crashed the grader's worker: {loaded['fatal']}")
    callable_names = set(loaded.get("callable", []))
    for error in loaded.get("errors", []):
        if _GRADER_IMPORT in error["error"]:
            continue  # notebooks import check() for self-checks; expected and harmless
        chunk = (
            extracted.chunks[error["chunk"]]
            if 0 <= error["chunk"] < len(extracted.chunks)
            else None
        )
        where = f"cell {chunk.cell + 1}, line {chunk.line}: " if chunk else ""
        grade.notes.append(f"{where}{_text(error['error']).splitlines()[0]}")

    # the worker runs op k+1 while op k is judged here; one request in flight at a time,
    # so a worker killed over one op never takes another op's request with it
    order = [op.name for op in ops]
    pending: tuple[Any, list | None] | None = None
    for op in [*ops, None]:
        received = None
        if pending is not None:
            received = (*pending, _receive(sandbox, pending[1]))
        pending = None
        if op is not None:
            if op.name not in callable_names:
                pending = (op, None)
            else:
                cases = op.cases() + (op.cases(hidden=True, secret=secret) if hidden else [])
                args = [op.call_args(c.arrays, c.output_grad, c.params) for c in cases]
                try:
                    sandbox.submit(op.name, op.adapter, args)
                    pending = (op, cases)
                except WorkerDied as died:
                    grade.ops.append(OpGrade.failed(op, died.status, died.message))
        if received is not None:
            grade.ops.append(_judge_op(*received))
    grade.ops.sort(key=lambda g: order.index(g.name))
    return grade


def _receive(sandbox: Sandbox, cases: list | None) -> Any:
    if cases is None:
        return None
    try:
        return sandbox.collect()
    except WorkerDied as died:
        return died


def _judge_op(op: Any, cases: list | None, received: Any) -> OpGrade:
    if cases is None:
        return OpGrade.failed(op, "missing", "not defined in the notebook")
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
    verdicts = [_judge(op, case, item, buffers) for case, item in zip(cases, results)]
    return score_op(op, verdicts, output)


def _judge(op: Any, case: Any, item: Any, buffers: list[bytes]) -> Any:
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
    return op.judge(case, value, mutated=bool(item.get("mutated")))


def _text(value: Any) -> str:
    """Text from the worker, made writable as UTF-8: student code can put lone
    surrogates (``"\\ud800"``) in an exception message, which JSON carries but no
    report file or terminal can encode."""
    return str(value).encode("utf-8", "replace").decode("utf-8")


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
