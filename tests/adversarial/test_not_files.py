"""Directory entries that are not plain notebook files, graded through the real CLI.

Submissions arrive from unzip and git checkouts, so an entry named ``*.ipynb`` can be a
symlink to a classmate's notebook or to a solution, a FIFO, a socket, a device, or a
file larger than the grader will read. Each must end as a row with a clear note and a
zero, without hanging the batch or costing the grader memory, while every regular
submission next to it keeps its real score. Symlinks are never followed, in a directory
or named on the command line.
"""

from __future__ import annotations

import csv
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autograder.notebook import MAX_BYTES
from tests import notebooks as fixtures

REPO = Path(__file__).resolve().parents[2]
SOLUTION = REPO / "assignments" / "solutions" / "01_elementwise.ipynb"
ASSIGNMENT = "01_elementwise"
FAST = ["--jobs", "2", "--timeout", "2", "--public-only", "--efficiency-weight", "0"]
#: a batch of three real notebooks and one odd entry takes a few seconds
LIMIT = 90
#: the grader's address space in these tests: a regression that reads /dev/zero must
#: fail the test with a MemoryError, not exhaust the memory of the machine running it
GRADER_AS = 6 * 1024**3
SYMLINK = "symlink, not followed"


def _bounded() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (GRADER_AS, GRADER_AS))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real CLI in a session of its own: if it hangs, its whole process group (the
    batch's pool processes too) is killed and the test fails, leaving nothing behind."""
    env = dict(os.environ)
    env.pop("GRADCHECK_SECRET", None)
    command = [sys.executable, "-m", "autograder.cli", *args]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(cwd),
        env={**env, "PYTHONPATH": str(REPO)},
        preexec_fn=_bounded,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=LIMIT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            pytest.fail(f"the grader did not finish within {LIMIT} s")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _regular(batch: Path) -> dict[str, str]:
    """Three real submissions: full marks, one op wrong, and one in a subdirectory."""
    wrong = "def relu_backward(input, output_grad):\n    return output_grad * 0.5\n"
    (batch / "team").mkdir(parents=True)
    fixtures.build_notebook(batch / "alice.ipynb", fixtures.solution_cells(ASSIGNMENT))
    fixtures.build_notebook(
        batch / "bob.ipynb",
        fixtures.solution_cells(ASSIGNMENT, replace={"relu_backward": wrong}),
    )
    fixtures.build_notebook(batch / "team" / "carol.ipynb", fixtures.solution_cells(ASSIGNMENT))
    return {"alice.ipynb": "full", "bob.ipynb": "relu wrong", "team/carol.ipynb": "full"}


def _symlink_classmate(batch: Path, name: str) -> str:
    os.symlink("alice.ipynb", batch / name)
    return SYMLINK


def _symlink_solution(batch: Path, name: str) -> str:
    os.symlink(SOLUTION, batch / name)
    return SYMLINK


def _fifo(batch: Path, name: str) -> str:
    os.mkfifo(batch / name)
    return "not a regular file (a FIFO)"


def _dev_zero(batch: Path, name: str) -> str:
    os.symlink("/dev/zero", batch / name)
    return SYMLINK


def _dangling(batch: Path, name: str) -> str:
    os.symlink("nowhere/at-all.ipynb", batch / name)
    return SYMLINK


def _socket(batch: Path, name: str) -> str:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(batch / name))  # the file stays after the socket is closed
    server.close()
    return "not a regular file (a socket)"


def _oversized(batch: Path, name: str) -> str:
    # sparse: no disk space, but its size is over the cap, so it must never be read
    with open(batch / name, "wb") as handle:
        handle.truncate(MAX_BYTES + 1)
    return "file too large"


def _symlinked_directory(batch: Path, name: str) -> str:
    # a directory outside the batch with a full-marks notebook, reached through a link
    outside = batch.parent / "outside"
    outside.mkdir()
    fixtures.build_notebook(outside / "stolen.ipynb", fixtures.solution_cells(ASSIGNMENT))
    os.symlink(outside, batch / name.removesuffix(".ipynb"))
    return SYMLINK


ODD = {
    "symlink-to-classmate": _symlink_classmate,
    "symlink-to-solution": _symlink_solution,
    "fifo": _fifo,
    "symlink-to-dev-zero": _dev_zero,
    "dangling-symlink": _dangling,
    "unix-socket": _socket,
    "over-the-size-cap": _oversized,
    "symlinked-directory": _symlinked_directory,
}


def _rows(csv_path: Path) -> dict[str, dict[str, str]]:
    with open(csv_path, newline="", encoding="utf-8") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


def _run_batch(tmp_path: Path, odd: dict[str, str]) -> tuple[dict[str, dict[str, str]], float]:
    out = tmp_path / "out" / "grades.csv"
    start = time.monotonic()
    result = _cli("batch", "--csv", str(out), *FAST, cwd=tmp_path)
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return _rows(out), elapsed


def _check_regular(rows: dict[str, dict[str, str]], regular: dict[str, str]) -> None:
    for name, kind in regular.items():
        row = rows[os.path.join("batch", name)]
        assert row["error"] == "", row
        assert row["assignment"] == ASSIGNMENT
        assert float(row["max_score"]) > 0
        if kind == "full":
            assert float(row["total"]) == float(row["max_score"]), row
        else:  # its own real score: everything but relu_backward
            assert float(row["relu_backward"]) == 0, row
            assert 0 < float(row["total"]) < float(row["max_score"]), row


def _check_odd(rows: dict[str, dict[str, str]], name: str, note: str) -> None:
    row = rows.get(os.path.join("batch", name))
    assert row is not None, f"no row for {name}: {sorted(rows)}"
    assert float(row["total"]) == 0 and row["max_score"] == "", row
    assert note in row["error"], row
    assert "\n" not in row["error"] and "Traceback" not in row["error"]


@pytest.mark.parametrize("kind", sorted(ODD))
def test_odd_entry_gets_a_zero_row_and_the_batch_finishes(kind: str, tmp_path: Path):
    batch = tmp_path / "batch"
    regular = _regular(batch)
    name = "mallory.ipynb"
    note = ODD[kind](batch, name)
    rows, _ = _run_batch(tmp_path, {name: note})

    _check_regular(rows, regular)
    entry = name.removesuffix(".ipynb") if kind == "symlinked-directory" else name
    _check_odd(rows, entry, note)
    # nothing reached through a link is graded under any name
    assert not any("stolen" in file for file in rows), sorted(rows)
    assert len(rows) == len(regular) + 1, sorted(rows)
    assert len(list((tmp_path / "out" / "feedback").glob("*.md"))) == len(rows)


def test_every_odd_entry_in_one_batch(tmp_path: Path):
    batch = tmp_path / "batch"
    regular = _regular(batch)
    expected = {}
    for kind, make in sorted(ODD.items()):
        name = f"{kind}.ipynb"
        note = make(batch, name)
        expected[name.removesuffix(".ipynb") if kind == "symlinked-directory" else name] = note
    rows, elapsed = _run_batch(tmp_path, expected)

    _check_regular(rows, regular)
    for name, note in expected.items():
        _check_odd(rows, name, note)
    assert len(rows) == len(regular) + len(expected), sorted(rows)
    assert elapsed < LIMIT


def test_a_symlinked_batch_directory_is_not_descended(tmp_path: Path):
    batch = tmp_path / "real"
    _regular(batch)
    os.symlink("real", tmp_path / "batch")
    out = tmp_path / "out" / "grades.csv"
    result = _cli("batch", "--csv", str(out), *FAST, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = _rows(out)
    assert list(rows) == ["batch"], rows
    assert SYMLINK in rows["batch"]["error"] and float(rows["batch"]["total"]) == 0


def _assert_one_line_exit_2(result: subprocess.CompletedProcess, note: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("gradcheck-grade: ")
    assert note in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "kind", ["symlink-to-classmate", "symlink-to-solution", "fifo", "symlink-to-dev-zero"]
)
def test_a_named_odd_file_is_refused_in_one_line(kind: str, tmp_path: Path):
    """An explicitly named symlink is refused too: an instructor who means to grade the
    file it points to names that file; following links on request would let a
    submission's link decide what is read."""
    batch = tmp_path / "batch"
    _regular(batch)
    note = ODD[kind](batch, "mallory.ipynb")
    result = _cli(str(batch / "mallory.ipynb"), "--format", "json", *FAST, cwd=tmp_path)
    _assert_one_line_exit_2(result, note)
