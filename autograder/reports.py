"""Reports of a :class:`~autograder.grade.Grade`: terminal table, JSON, Gradescope's
results.json, JUnit XML and per-student Markdown feedback.

Every machine-readable format is deterministic: the same submission and secret give
byte-identical output (no durations, ops in curriculum order; JUnit's timestamp is the
submission's modification time). Every format is rendered from :func:`to_dict`, where
each string that student code or a file name can influence is made inert once
(:func:`autograder.sanitize.text`); each format then escapes for itself in one helper.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any
from xml.etree import ElementTree as ET

from . import sanitize
from .grade import Grade

FORMATS = ("text", "json", "gradescope", "junit", "markdown")


def printable(text: str) -> str:
    """``text`` on one line, safe to print: control characters as visible escapes, a
    file name's undecodable bytes (held as surrogate escapes) as U+FFFD."""
    return sanitize.line(text)


def _num(value: float) -> float | int:
    value = round(float(value), 4)
    return int(value) if value == int(value) else value


def _case_dict(case: Any) -> dict:
    return {
        "name": sanitize.text(case.name),
        "passed": bool(case.passed),
        "message": sanitize.text(case.message),
        "hint": None if case.passed else case.hint,
        "hidden": bool(case.hidden),
        "family": case.family,
    }


def to_dict(grade: Grade) -> dict:
    """The grade as plain data, every free text made inert: what every format renders."""
    return {
        "submission": sanitize.line(os.path.basename(grade.submission)),
        "assignment": grade.assignment,
        "score": _num(grade.score),
        "max_score": _num(grade.max_score),
        "secret": grade.secret_source,
        "notes": [sanitize.line(note) for note in grade.notes],
        "ops": [
            {
                "name": op.name,
                "score": _num(op.score),
                "max_score": _num(op.max_score),
                "status": op.status,
                "message": sanitize.text(op.message),
                "output": sanitize.text(op.output),
                "cases": [_case_dict(c) for c in op.cases],
            }
            for op in grade.ops
        ],
    }


def to_json(grade: Grade) -> str:
    return json.dumps(to_dict(grade), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _first_line(text: str) -> str:
    return text.split("\n", 1)[0]


def _first_failure(op: dict) -> dict | None:
    return next((c for c in op["cases"] if not c["passed"]), None)


def _first_hint(op: dict) -> str:
    failure = _first_failure(op)
    if failure is None:
        return _first_line(op["message"]) if op["status"] != "passed" else ""
    return f"[{failure['hint']}] {failure['name']}: {_first_line(failure['message'])}"


def _score(op: dict) -> str:
    if 0 < op["score"] < op["max_score"]:
        return f"{op['score']:.4g}/{op['max_score']}"
    return f"{op['score']}/{op['max_score']}"


def to_text(grade: Grade, width: int = 100) -> str:
    view = to_dict(grade)
    name_width = max([len(op["name"]) for op in view["ops"]] + [9])
    lines = [
        f"{view['submission']}: assignment {view['assignment']}",
        f"{'function':<{name_width}}  {'score':>11}  {'status':<8}  first failing hint",
    ]
    for op in view["ops"]:
        hint = sanitize.line(_first_hint(op))
        room = max(20, width - name_width - 26)
        if len(hint) > room:
            hint = hint[: room - 3] + "..."
        lines.append(f"{op['name']:<{name_width}}  {_score(op):>11}  {op['status']:<8}  {hint}")
    lines.append(f"{'total':<{name_width}}  {grade.score:.4g}/{view['max_score']}")
    lines += [f"note: {note}" for note in view["notes"]]
    if grade.secret_source == "default":
        lines.append("note: hidden cases used the default secret (set --seed or GRADCHECK_SECRET)")
    return "\n".join(lines) + "\n"


def _case_lines(cases: list[dict]) -> list[str]:
    lines = []
    for case in cases:
        mark = "PASS" if case["passed"] else "FAIL"
        detail = "" if case["passed"] else f"  [{case['hint']}] {case['message']}"
        lines.append(f"  {mark}  {case['name']}{detail}")
    return lines


def _gradescope_test(name: str, number: str, score: Any, max_score: Any, **fields: Any) -> dict:
    # "text": Gradescope shows the output as it is; its default and the "html" and "md"
    # formats would render student markup
    return {
        "name": name,
        "name_format": "text",
        "number": number,
        "score": score,
        "max_score": max_score,
        "output_format": "text",
        **fields,
    }


def to_gradescope(grade: Grade, preface: Sequence[str] = ()) -> str:
    """Gradescope's results.json: one test per op with the public cases' details, and a
    test per op, visible once grades are published, for the hidden cases and for what
    the function printed (the worker runs public and hidden cases in one go, so its
    output may show hidden inputs). ``preface``: lines to start the top-level output
    with (which file was graded and why)."""
    view = to_dict(grade)
    tests = []
    for number, op in enumerate(view["ops"], start=1):
        public = [c for c in op["cases"] if not c["hidden"]]
        hidden = [c for c in op["cases"] if c["hidden"]]
        # printed output is shown at once only when it is known to come from public
        # cases alone; an op that failed as a whole may have failed in a hidden case
        output_now = bool(op["cases"]) and not hidden
        head = f"status: {op['status']}" + (f" ({op['message']})" if op["message"] else "")
        lines = [head]
        if public:
            lines.append(f"{sum(c['passed'] for c in public)}/{len(public)} public cases pass")
            lines += _case_lines(public)
        if op["output"]:
            lines += (
                ["", "your function printed:", op["output"]]
                if output_now
                else ["", "what your function printed is shown once grades are published"]
            )
        tests.append(
            _gradescope_test(
                op["name"],
                str(number),
                op["score"],
                op["max_score"],
                status="passed" if op["status"] == "passed" else "failed",
                output="\n".join(lines).strip(),
                visibility="visible",
            )
        )
        later = hidden or (op["output"] and not output_now)
        if not later:
            continue
        lines = []
        if hidden:
            lines.append(f"{sum(c['passed'] for c in hidden)}/{len(hidden)} hidden cases pass")
            lines += _case_lines(hidden)
        if op["output"] and not output_now:
            lines += ["", "your function printed:", op["output"]]
        passed = all(c["passed"] for c in hidden) if hidden else op["status"] == "passed"
        tests.append(
            _gradescope_test(
                f"{op['name']} (hidden cases)" if hidden else f"{op['name']} (printed output)",
                f"{number}.1",
                0,
                0,
                status="passed" if passed else "failed",
                output="\n".join(lines).strip(),
                visibility="after_published",
            )
        )
    notes = list(view["notes"])
    if grade.secret_source == "default":
        notes.append("hidden cases used the public default secret")
    results = {
        "score": view["score"],
        "output": "\n".join(
            [*(sanitize.text(line) for line in preface), f"assignment {view['assignment']}", *notes]
        ),
        "output_format": "text",
        "test_output_format": "text",
        "test_name_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }
    return json.dumps(results, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _xml(parent: ET.Element | None, tag: str, text: str | None = None, **attrs: Any) -> ET.Element:
    """An element whose text and attributes are all XML-safe: the one place JUnit's
    values pass through."""
    values = {key: sanitize.xml(value) for key, value in attrs.items()}
    element = ET.Element(tag, values) if parent is None else ET.SubElement(parent, tag, values)
    if text is not None:
        element.text = sanitize.xml(text)
    return element


def _timestamp(path: str) -> str:
    """When the submission was last modified (UTC): a time that is the same each time
    the same file is graded."""
    try:
        seconds = os.stat(path).st_mtime
    except (OSError, ValueError):
        seconds = 0
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _hostname() -> str:
    try:
        name = sanitize.line(socket.gethostname()).strip()
    except OSError:
        name = ""
    return name or "localhost"


def to_junit(grade: Grade) -> str:
    """JUnit XML: one suite per op (its cases as testcases; an op that could not run is
    one testcase with an error), in the layout of the common junit.xsd."""
    view = to_dict(grade)
    stamp, host = _timestamp(grade.submission), _hostname()
    root = _xml(None, "testsuites")
    for index, op in enumerate(view["ops"]):
        cases = op["cases"]
        broken = not cases and op["status"] != "passed"
        suite = _xml(
            root,
            "testsuite",
            name=op["name"],
            package=f"gradcheck.{view['assignment']}",
            id=index,
            timestamp=stamp,
            hostname=host,
            tests=max(1, len(cases)),
            failures=sum(not c["passed"] for c in cases),
            errors=int(broken),
            time=0,
        )
        properties = _xml(suite, "properties")
        for name in ("score", "max_score", "status"):
            _xml(properties, "property", name=name, value=op[name])
        if not cases:  # missing, timeout, memory, crash: one testcase for the op
            case_el = _xml(suite, "testcase", classname=op["name"], name=op["status"], time=0)
            if broken:
                message = f"{op['status']}: {_first_line(op['message'])}"
                _xml(case_el, "error", op["message"], message=message, type=op["status"])
        for case in cases:
            case_el = _xml(suite, "testcase", classname=op["name"], name=case["name"], time=0)
            if not case["passed"]:
                kind = case["hint"] or "wrong-value"
                summary = f"[{kind}] {_first_line(case['message'])}".rstrip()
                _xml(case_el, "failure", case["message"], message=summary, type=kind)
        _xml(suite, "system-out", op["output"])
        _xml(suite, "system-err", "")
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def to_markdown(grade: Grade, label: str | None = None) -> str:
    """Markdown feedback for the student; ``label`` names the submission (default: its
    file name)."""
    return markdown_from_dict(to_dict(grade), label)


def markdown_from_dict(view: dict, label: str | None = None) -> str:
    """Markdown feedback from :func:`to_dict`'s data. Text from the submission is either
    escaped to plain inline text or shown in a fenced code block."""
    md = sanitize.markdown
    lines = [
        f"# Feedback for {md(label if label is not None else view['submission'])}",
        "",
        f"Assignment **{view['assignment']}**: {view['score']} / {view['max_score']} points.",
        "",
        "| function | score | status | first failing hint |",
        "|---|---|---|---|",
    ]
    for op in view["ops"]:
        lines.append(
            f"| `{op['name']}` | {op['score']}/{op['max_score']} | {op['status']} "
            f"| {md(_first_hint(op))} |"
        )
    details = [op for op in view["ops"] if op["status"] != "passed"]
    if details:
        lines += ["", "## Details"]
    for op in details:
        lines += ["", f"### `{op['name']}`: {op['status']}", ""]
        public = [c for c in op["cases"] if not c["hidden"]]
        failure = _first_failure({"cases": public}) or _first_failure(op)
        if failure is not None:
            lines += [f"First failing case: {md(failure['name'])} ({md(failure['hint'])})", ""]
            lines.append(sanitize.fenced(failure["message"]))
        elif op["message"]:
            lines.append(sanitize.fenced(op["message"]))
        # the worker runs hidden cases with the public ones: what it printed then may
        # show hidden inputs, so it is shown only when no hidden case ran
        if op["output"] and op["cases"] and len(public) == len(op["cases"]):
            lines += ["", "What the function printed:", "", sanitize.fenced(op["output"])]
    if view["notes"]:
        lines += ["", "Notes:", ""] + [f"- {md(note)}" for note in view["notes"]]
    return "\n".join(lines) + "\n"


def render(grade: Grade, fmt: str) -> str:
    return {
        "text": to_text,
        "json": to_json,
        "gradescope": to_gradescope,
        "junit": to_junit,
        "markdown": to_markdown,
    }[fmt](grade)
