"""Notebooks for fuzzing: built with nbformat from the test-only correct solutions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat

from tests.notebooks import solution_sources

ROOT = Path(__file__).resolve().parents[2]


def notebook_dict(functions: list[str], extra_cells: list[str] = ()) -> dict:
    """A valid v4 notebook (as plain JSON data) defining the named solution functions."""
    sources = solution_sources()
    helpers = [name for name in sources if name.startswith("_")]
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Assignment"),
        nbformat.v4.new_code_cell("import numpy as np"),
        *[nbformat.v4.new_code_cell(sources[name]) for name in helpers],
        *[nbformat.v4.new_code_cell(sources[name]) for name in functions],
        *[nbformat.v4.new_code_cell(text) for text in extra_cells],
    ]
    return json.loads(nbformat.writes(notebook))


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real command line, in a subprocess, with bytes output (reports are checked
    to be valid UTF-8, not decoded leniently)."""
    env = dict(os.environ)
    env.pop("GRADCHECK_SECRET", None)
    return subprocess.run(
        [sys.executable, "-m", "autograder.cli", *args],
        capture_output=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )


def assert_clean_bad_input(result: subprocess.CompletedProcess) -> None:
    """Exit 2, nothing on stdout, exactly one line on stderr and no traceback."""
    stderr = result.stderr.decode("utf-8")
    assert result.returncode == 2, (result.returncode, stderr[-2000:])
    assert result.stdout == b""
    assert stderr.count("\n") == 1 and stderr.endswith("\n"), stderr[-2000:]
    assert stderr.startswith("gradcheck-grade: ")
    assert "Traceback" not in stderr


def assert_valid_report(result: subprocess.CompletedProcess) -> dict:
    """Exit 0, a JSON report in valid UTF-8 with a verdict for every case, no traceback."""
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, (result.returncode, stderr[-2000:])
    assert "Traceback" not in stderr
    report = json.loads(result.stdout.decode("utf-8"))
    assert 0 <= report["score"] <= report["max_score"]
    for op in report["ops"]:
        assert op["status"] in {
            "passed",
            "partial",
            "failed",
            "missing",
            "error",
            "timeout",
            "memory",
        }
        assert 0 <= op["score"] <= op["max_score"]
        for case in op["cases"]:
            assert isinstance(case["passed"], bool) and isinstance(case["message"], str)
    return report
