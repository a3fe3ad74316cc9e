"""``gradcheck-grade assign SOLUTION.ipynb -o STUDENT.ipynb``: make the student notebook.

An assignment is written once, as a solution notebook with working code. This command
derives the notebook students receive from it:

* in code cells, every region between a ``### BEGIN SOLUTION`` line and a
  ``### END SOLUTION`` line (markers included) becomes one line
  ``raise NotImplementedError("...")`` at the indentation of the ``BEGIN`` marker;
* in markdown cells, every region between ``<!-- BEGIN SOLUTION -->`` and
  ``<!-- END SOLUTION -->`` becomes the line ``*Write your answer here.*``;
* cells tagged ``hidden`` (cell metadata ``tags``) are removed entirely;
* outputs, execution counts and execution timings are cleared;
* everything else (other cells, their ids and metadata, notebook metadata) is kept.

The output is deterministic, and generating from a generated notebook changes nothing.
A notebook with nothing to take out (no marker, no hidden cell, no stub) is refused: its
copy would hold the answers. Bad input (unreadable file, unbalanced markers, output
path equal to input path) is reported as one line on stderr with exit code 2; the
input is never written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

import nbformat

STUB = 'raise NotImplementedError("write your solution here")'
MARKDOWN_STUB = "*Write your answer here.*"
HIDDEN_TAG = "hidden"

_CODE_BEGIN = re.compile(r"^(\s*)###\s*BEGIN SOLUTION\s*$")
_CODE_END = re.compile(r"^\s*###\s*END SOLUTION\s*$")
_MD_BEGIN = re.compile(r"^\s*<!--\s*BEGIN SOLUTION\s*-->\s*$")
_MD_END = re.compile(r"^\s*<!--\s*END SOLUTION\s*-->\s*$")


class AssignError(Exception):
    """The solution notebook cannot be turned into a student notebook."""


def strip_regions(source: str, begin: re.Pattern, end: re.Pattern, stub, where: str) -> str:
    """Replace each ``begin``..``end`` region of ``source`` by ``stub(indent)``."""
    lines = source.split("\n")
    out: list[str] = []
    opened: int | None = None
    for number, line in enumerate(lines, start=1):
        start = begin.match(line)
        if start:
            if opened is not None:
                raise AssignError(f"{where}, line {number}: BEGIN SOLUTION inside another one")
            opened = number
            indent = start.group(1) if start.groups() else ""
            out.append(stub(indent))
        elif end.match(line):
            if opened is None:
                raise AssignError(f"{where}, line {number}: END SOLUTION without BEGIN SOLUTION")
            opened = None
        elif opened is None:
            out.append(line)
    if opened is not None:
        raise AssignError(f"{where}, line {opened}: BEGIN SOLUTION is never closed")
    return "\n".join(out)


def _is_hidden(cell: Any) -> bool:
    return HIDDEN_TAG in (cell.get("metadata", {}).get("tags") or [])


def student_notebook(nb: Any) -> Any:
    """The student version of solution notebook ``nb`` (a new notebook; ``nb`` is untouched)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    cells = []
    for index, cell in enumerate(nb.cells, start=1):
        if _is_hidden(cell):
            continue
        where = f"cell {index}"
        if cell.cell_type == "code":
            cell.source = strip_regions(
                cell.source, _CODE_BEGIN, _CODE_END, lambda indent: indent + STUB, where
            )
            cell.outputs = []
            cell.execution_count = None
        elif cell.cell_type == "markdown":
            cell.source = strip_regions(
                cell.source, _MD_BEGIN, _MD_END, lambda indent: MARKDOWN_STUB, where
            )
        cell.metadata.pop("execution", None)
        cells.append(cell)
    nb.cells = cells
    return nb


def _has_regions(nb: Any) -> bool:
    """Whether the notebook marks anything to take out: a solution region, a hidden
    cell, or a stub a former generation left (a student notebook regenerates as it is)."""
    for cell in nb.cells:
        if _is_hidden(cell):
            return True
        lines = cell.get("source", "").split("\n")
        if cell.cell_type == "code":
            if any(_CODE_BEGIN.match(x) or x.strip() == STUB for x in lines):
                return True
        elif cell.cell_type == "markdown":
            if any(_MD_BEGIN.match(x) or x.strip() == MARKDOWN_STUB for x in lines):
                return True
    return False


def _read(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            nb = nbformat.read(handle, as_version=4)
        nbformat.validate(nb)
    except FileNotFoundError:
        raise AssignError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AssignError(f"{path}: cannot read: {error}") from None
    except Exception as error:  # JSON or schema errors
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise AssignError(f"{path}: not a valid notebook: {first}") from None
    return nb


def render(nb: Any) -> str:
    """The notebook as the exact text written to disk."""
    return nbformat.writes(nb) + "\n"


def assign(solution: str, output: str) -> None:
    """Write the student notebook generated from ``solution`` to ``output``."""
    if os.path.exists(output) and os.path.samefile(solution, output):
        raise AssignError(f"{output}: output is the input notebook; refusing to overwrite it")
    if os.path.abspath(solution) == os.path.abspath(output):
        raise AssignError(f"{output}: output is the input notebook; refusing to overwrite it")
    nb = _read(solution)
    student = student_notebook(nb)  # unbalanced markers are reported first
    if not _has_regions(nb):
        # copying it would hand students the answers
        raise AssignError(
            f"{solution}: no solution markers: put each answer between '### BEGIN SOLUTION' "
            "and '### END SOLUTION' lines (or tag cells 'hidden'); nothing was written"
        )
    text = render(student)
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise AssignError(f"{output}: folder {folder} does not exist")
    with open(output, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        print(f"gradcheck-grade assign: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="gradcheck-grade assign",
        description="Generate the student notebook from a solution notebook.",
    )
    parser.add_argument("solution", help="the solution notebook (.ipynb)")
    parser.add_argument("-o", "--output", required=True, help="where to write the student notebook")
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        return int(stop.code or 0)
    try:
        assign(args.solution, args.output)
    except AssignError as error:
        print(f"gradcheck-grade assign: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
