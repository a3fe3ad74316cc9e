"""The test-only correct solutions as notebook cells: shared by the suites that build real
notebooks (autograder, fuzz, adversarial) and by the benchmarks."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

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
