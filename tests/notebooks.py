"""Real notebooks for the tests: the test-only correct solutions as notebook cells, built
with nbformat, and the real command line that grades them. Shared by the suites that
build real notebooks (autograder, fuzz, adversarial) and by the benchmarks."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import nbformat

import gradcheck_kit

SOLUTIONS = Path(__file__).resolve().parent / "core" / "solutions.py"


@cache
def solution_sources() -> dict[str, str]:
    """Each top-level function of tests/core/solutions.py, by name, as source text."""
    text = SOLUTIONS.read_text()
    lines = text.splitlines(keepends=True)
    return {
        node.name: "".join(lines[node.lineno - 1 : node.end_lineno])
        for node in ast.parse(text).body
        if isinstance(node, ast.FunctionDef)
    }


def helpers_for(assignment: str) -> list[str]:
    """Private helpers (``_axes``...) and, after notebook 01, ``unbroadcast`` (students
    reuse it) go into every notebook."""
    names = [name for name in solution_sources() if name.startswith("_")]
    return names if assignment == "01_elementwise" else ["unbroadcast", *names]


def build_notebook(path: Path, cells: list[str]) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# Assignment")] + [
        nbformat.v4.new_code_cell(source) for source in cells
    ]
    nbformat.write(notebook, str(path))
    return path


def solution_cells(assignment: str, replace: dict[str, str] | None = None) -> list[str]:
    """Cells of a correct notebook for ``assignment``; ``replace`` swaps in other sources."""
    sources = solution_sources()
    replace = replace or {}
    cells = ["import numpy as np"]
    cells += [sources[name] for name in helpers_for(assignment)]
    for op in gradcheck_kit.all_ops(assignment):
        cells.append(replace.get(op.name, sources[op.name]))
    return cells


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """The real command line, in a subprocess."""
    full_env = dict(os.environ)
    full_env.pop("GRADCHECK_SECRET", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "autograder.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def grade_json(*args: str, env: dict | None = None) -> dict:
    result = run_cli(*args, "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def ops_by_name(report: dict) -> dict[str, dict]:
    return {op["name"]: op for op in report["ops"]}
