"""Reports of a :class:`~autograder.grade.Grade`: terminal table, JSON, Gradescope's
results.json, JUnit XML and per-student Markdown feedback.

Every machine-readable format is deterministic: the same submission and secret give
byte-identical output (no timestamps, no durations, ops in curriculum order).
"""

from __future__ import annotations

import json
import os
from typing import Any
from xml.etree import ElementTree as ET

from .grade import Grade
from .scoring import OpGrade

FORMATS = ("text", "json", "gradescope", "junit", "markdown")


def printable(text: str) -> str:
    """``text`` as valid UTF-8 for a report: a file name's undecodable bytes (held as
    surrogate escapes) become U+FFFD instead of breaking the file or terminal."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def _num(value: float) -> float | int:
    value = round(float(value), 4)
    return int(value) if value == int(value) else value


def _first_hint(op: OpGrade) -> str:
    failure = op.first_failure
    if failure is None:
        return op.message if op.status != "passed" else ""
    text = failure.message.splitlines()[0] if failure.message else ""
    return f"[{failure.hint}] {failure.name}: {text}"


def _case_dict(case: Any) -> dict:
    return {
        "name": case.name,
        "passed": bool(case.passed),
        "message": case.message,
        "hint": None if case.passed else case.hint,
        "hidden": bool(case.hidden),
        "family": case.family,
    }


def to_dict(grade: Grade) -> dict:
    return {
        "submission": printable(os.path.basename(grade.submission)),
        "assignment": grade.assignment,
        "score": _num(grade.score),
        "max_score": _num(grade.max_score),
        "secret": grade.secret_source,
        "notes": list(grade.notes),
        "ops": [
            {
                "name": op.name,
                "score": _num(op.score),
                "max_score": _num(op.max_score),
                "status": op.status,
                "message": op.message,
                "cases": [_case_dict(c) for c in op.cases],
            }
            for op in grade.ops
        ],
    }


def to_json(grade: Grade) -> str:
    return json.dumps(to_dict(grade), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def to_text(grade: Grade, width: int = 100) -> str:
    name_width = max([len(op.name) for op in grade.ops] + [9])
    lines = [
        f"{printable(os.path.basename(grade.submission))}: assignment {grade.assignment}",
        f"{'function':<{name_width}}  {'score':>11}  {'status':<8}  first failing hint",
    ]
    for op in grade.ops:
        score = (
            f"{op.score:.4g}/{_num(op.max_score)}"
            if 0 < op.score < op.max_score
            else (f"{_num(op.score)}/{_num(op.max_score)}")
        )
        hint = _first_hint(op)
        room = max(20, width - name_width - 26)
        if len(hint) > room:
            hint = hint[: room - 3] + "..."
        lines.append(f"{op.name:<{name_width}}  {score:>11}  {op.status:<8}  {hint}")
    lines.append(f"{'total':<{name_width}}  {grade.score:.4g}/{_num(grade.max_score)}")
    for note in grade.notes:
        lines.append(f"note: {note}")
    if grade.secret_source == "default":
        lines.append("note: hidden cases used the default secret (set --seed or GRADCHECK_SECRET)")
    return "\n".join(lines) + "\n"


def _case_lines(cases: list[Any]) -> list[str]:
    lines = []
    for case in cases:
        mark = "PASS" if case.passed else "FAIL"
        detail = "" if case.passed else f"  [{case.hint}] {case.message}"
        lines.append(f"  {mark}  {case.name}{detail}")
    return lines


def to_gradescope(grade: Grade) -> str:
    """Gradescope's results.json: one test per op with the public cases' details, and a
    test per op for the hidden cases that students see only once grades are published."""
    tests = []
    for number, op in enumerate(grade.ops, start=1):
        public = [c for c in op.cases if not c.hidden]
        hidden = [c for c in op.cases if c.hidden]
        passed = sum(c.passed for c in public)
        head = f"status: {op.status}" + (f" ({op.message})" if op.message else "")
        summary = f"{passed}/{len(public)} public cases pass" if public else ""
        output = "\n".join([head, summary, *_case_lines(public)]).strip()
        if op.output:
            output += "\n\nyour function printed:\n" + op.output
        tests.append(
            {
                "name": op.name,
                "number": str(number),
                "score": _num(op.score),
                "max_score": _num(op.max_score),
                "output": output,
                "visibility": "visible",
            }
        )
        if hidden:
            tests.append(
                {
                    "name": f"{op.name} (hidden cases)",
                    "number": f"{number}.1",
                    "score": 0,
                    "max_score": 0,
                    "output": "\n".join(
                        [f"{sum(c.passed for c in hidden)}/{len(hidden)} hidden cases pass"]
                        + _case_lines(hidden)
                    ),
                    "visibility": "after_published",
                }
            )
    notes = list(grade.notes)
    results = {
        "score": _num(grade.score),
        "output": "\n".join([f"assignment {grade.assignment}", *notes]),
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }
    return json.dumps(results, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def to_junit(grade: Grade) -> str:
    suite = ET.Element(
        "testsuite",
        name=f"gradcheck {grade.assignment}",
        tests=str(sum(max(1, len(op.cases)) for op in grade.ops)),
        failures=str(sum(not c.passed for op in grade.ops for c in op.cases)),
        errors=str(sum(1 for op in grade.ops if not op.cases and op.status != "passed")),
    )
    for op in grade.ops:
        if not op.cases:  # missing, timeout, memory, crash: one testcase for the op
            case_el = ET.SubElement(suite, "testcase", classname=op.name, name=op.status)
            ET.SubElement(case_el, "error", message=f"{op.status}: {op.message}")
            continue
        for case in op.cases:
            case_el = ET.SubElement(suite, "testcase", classname=op.name, name=case.name)
            if not case.passed:
                failure = ET.SubElement(
                    case_el,
                    "failure",
                    message=f"[{case.hint}] {case.message.splitlines()[0]}"
                    if case.message
                    else f"[{case.hint}]",
                )
                failure.text = case.message
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, "unicode") + "\n"


def to_markdown(grade: Grade) -> str:
    lines = [
        f"# Feedback: {printable(os.path.basename(grade.submission))}",
        "",
        f"Assignment **{grade.assignment}**: {_num(grade.score)} / {_num(grade.max_score)} points.",
        "",
        "| function | score | status | first failing hint |",
        "|---|---|---|---|",
    ]
    for op in grade.ops:
        hint = _first_hint(op).replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| `{op.name}` | {_num(op.score)}/{_num(op.max_score)} | {op.status} | {hint} |"
        )
    if grade.notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in grade.notes]
    return "\n".join(lines) + "\n"


def render(grade: Grade, fmt: str) -> str:
    return {
        "text": to_text,
        "json": to_json,
        "gradescope": to_gradescope,
        "junit": to_junit,
        "markdown": to_markdown,
    }[fmt](grade)
