"""The grader's own handling of a notebook's text grows linearly with its size.

Everything the grader does before the sandboxed worker sees the notebook (reading,
JSON, nbformat upgrade and validation, picking the assignment) must cost time and
memory in proportion to the file, whatever its shape: a quadratic step makes a few
megabytes take minutes. Each kind of pathological notebook of
``benchmarks/pathological_notebooks.py`` is measured at two sizes in a fresh
subprocess, and the ratios, not absolute seconds, are checked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autograder.notebook import MAX_BRACKETS, MAX_BYTES

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "_pathological", REPO / "benchmarks" / "pathological_notebooks.py"
)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

MB = 1_000_000
#: 4 times the size must cost less than this many times the time and memory (a
#: quadratic step would cost 16 times); small sizes carry fixed costs and noise
TIME_RATIO, MEMORY_RATIO = 9.0, 7.0
#: below these a measurement is noise, not growth
TIME_FLOOR, MEMORY_FLOOR = 0.05, 4 * MB


def _ratios(tmp_path: Path, kind: str, small: int, large: int) -> tuple[float, float, dict]:
    measured = {}
    for size in (small, large):
        path = tmp_path / f"{kind}-{size}.ipynb"
        real = bench.build(path, kind, size)
        # the faster of two runs: the machine is shared, a slow run is not growth
        runs = [bench.measure_read(path) for _ in range(2)]
        seconds = min(run["seconds"] for run in runs)
        memory = min(run["added_rss"] for run in runs)
        measured[real] = (max(seconds, TIME_FLOOR), max(memory, MEMORY_FLOOR), runs[0])
        path.unlink()
    (s_small, m_small, _), (s_large, m_large, outcome) = (measured[k] for k in sorted(measured))
    scale = max(measured) / min(measured)
    return s_large / s_small / scale * 4, m_large / m_small / scale * 4, outcome


@pytest.mark.parametrize("kind", sorted(bench.KINDS))
def test_reading_grows_linearly(kind: str, tmp_path: Path):
    time_ratio, memory_ratio, outcome = _ratios(tmp_path, kind, 2 * MB, 8 * MB)
    assert "Traceback" not in str(outcome["outcome"]), outcome
    assert time_ratio < TIME_RATIO, (kind, time_ratio, outcome)
    assert memory_ratio < MEMORY_RATIO, (kind, memory_ratio, outcome)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(bench.KINDS))
def test_reading_grows_linearly_up_to_the_cap(kind: str, tmp_path: Path):
    time_ratio, memory_ratio, outcome = _ratios(tmp_path, kind, 16 * MB, 64 * MB)
    assert time_ratio < TIME_RATIO, (kind, time_ratio, outcome)
    assert memory_ratio < MEMORY_RATIO, (kind, memory_ratio, outcome)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("GRADCHECK_SECRET", None)
    return subprocess.run(
        [sys.executable, "-m", "autograder.cli", *args, "--public-only", "--timeout", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=REPO,
    )


def _assert_refused(result: subprocess.CompletedProcess, note: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("gradcheck-grade: ")
    assert note in result.stderr and "Traceback" not in result.stderr


def test_a_notebook_over_the_cap_is_refused_before_it_is_read(tmp_path: Path):
    path = tmp_path / "huge.ipynb"
    with open(path, "wb") as handle:  # sparse: its size says it all, reading it would not
        handle.truncate(MAX_BYTES + 1)
    start = time.monotonic()
    result = _cli(str(path))
    _assert_refused(result, "file too large")
    # about a worker's start-up: nothing of 64 MB was read, parsed or sent anywhere
    assert time.monotonic() - start < 30


def test_json_containers_beyond_the_bound_are_refused_before_parsing(tmp_path: Path):
    """Each "[]" costs the JSON parser about 70 bytes: the bound keeps a notebook of them
    from costing the grader 35 times its size."""
    count = MAX_BRACKETS + 1
    path = tmp_path / "brackets.ipynb"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('{"cells": [], "metadata": {"x": [' + "[]," * count + '[]]}, "nbformat": 4,')
        handle.write(' "nbformat_minor": 5}')
    _assert_refused(_cli(str(path)), "the limit is")
    # half as many is still a notebook
    with open(path, "w", encoding="utf-8") as handle:
        cells = json.dumps([json.loads(bench._cell("def relu_backward(a, b):\n    pass", 0))])
        handle.write('{"cells": ' + cells + ', "metadata": {"x": [' + "[]," * (count // 2))
        handle.write('[]]}, "nbformat": 4, "nbformat_minor": 5}')
    result = _cli(str(path), "--format", "json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["assignment"] == "01_elementwise"
