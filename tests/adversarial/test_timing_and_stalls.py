"""Attacks on the grader's clock and on its pipes, written from the source.

- The efficiency case cannot be forged: a per-element Python loop that caches its
  results, or that freezes ``time.perf_counter``, still fails it (the backward is timed
  on the grader's clock, on fresh inputs for every repetition).
- A worker that forges a reply and then stops reading its pipe cannot stall a batch:
  every classmate still gets a row with the right score.
- Killing the grader leaves no worker alive.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import notebooks as fixtures
from tests.adversarial.test_attacks import MARK, REPO, _marked_processes

SECRET = "timing-and-stalls-secret-91c"
ASSIGNMENT = "01_elementwise"

# a per-element loop calling NumPy on each element: right values, a hundred times and
# more the forward's time
LOOP = """
    grad = np.zeros(input.shape)
    for i in np.ndindex(input.shape):
        grad[i] = output_grad[i] * np.heaviside(input[i], 0.0)
"""
ATTACKS = {
    # the loop as it is: the case it must fail, and that the attacks below dress up
    "plain-loop": f"def relu_backward(input, output_grad):\n{LOOP}    return grad\n",
    # the first, untimed call computes; the timed calls on the same inputs hit the cache
    "caches-results": (
        "_CACHE = {}\n"
        "def relu_backward(input, output_grad):\n"
        "    key = (input.shape, input.tobytes(), output_grad.tobytes())\n"
        "    if key in _CACHE:\n"
        "        return _CACHE[key].copy()\n"
        f"{LOOP}"
        "    _CACHE[key] = grad\n"
        "    return grad.copy()\n"
    ),
    # the worker's timer reads time.perf_counter when it runs: freeze it
    "freezes-the-clock": (
        "def relu_backward(input, output_grad, _time=__import__('time')):\n"
        "    _time.perf_counter = lambda: 0.0\n"
        "    _time.perf_counter_ns = lambda: 0\n"
        "    _time.monotonic = lambda: 0.0\n"
        f"{LOOP}"
        "    return grad\n"
    ),
}


def _cli(
    *args: str, timeout: float = 240, extra_env: dict | None = None
) -> subprocess.CompletedProcess:
    env = {"GRADCHECK_SECRET": SECRET, **(extra_env or {})}
    return fixtures.run_cli(*args, env=env, timeout=timeout)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_forged_efficiency_measurement_still_fails(attack: str, tmp_path: Path):
    cells = fixtures.solution_cells(ASSIGNMENT, replace={"relu_backward": ATTACKS[attack]})
    notebook = fixtures.build_notebook(tmp_path / "submission.ipynb", cells)
    result = _cli(str(notebook), "--format", "json", "--public-only", "--timeout", "10")
    assert result.returncode == 0, result.stderr[-2000:]
    ops = fixtures.ops_by_name(json.loads(result.stdout))
    relu = ops["relu_backward"]
    efficiency = [c for c in relu["cases"] if c["name"].startswith("efficiency")]
    assert efficiency and not efficiency[0]["passed"], efficiency
    assert efficiency[0]["hint"] == "not-vectorized"
    # its values are right everywhere else, and no other op is touched
    assert all(c["passed"] for c in relu["cases"] if not c["name"].startswith("efficiency"))
    assert all(
        op["score"] == op["max_score"] for name, op in ops.items() if name != "relu_backward"
    )


# writes a whole, well-formed reply on every descriptor that may be the protocol's,
# nearly fills its own request pipe (so that the grader's next write finds a little room,
# not enough), then blocks the soft-deadline signal and never reads a request again
FORGE_AND_STALL = """
import fcntl, json, os, signal, stat, struct, time
def relu_backward(input, output_grad):
    body = json.dumps({'status': 'ran', 'results': [], 'output': '', 'nbuf': 0}).encode()
    for fd in range(3, 32):
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                continue
            mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
            if mode == os.O_WRONLY:
                os.write(fd, struct.pack('>Q', len(body)) + body)
            elif mode == os.O_RDONLY:
                writer = os.open(f'/proc/self/fd/{fd}', os.O_WRONLY | os.O_NONBLOCK)
                try:
                    os.write(writer, b'\\0' * (65536 - 4096))
                finally:
                    os.close(writer)
        except OSError:
            pass
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    while True:
        time.sleep(1)
"""


# the request pipe can be reopened for writing where the worker is not in namespaces
@pytest.mark.parametrize(
    ("jobs", "isolation"), [("1", "off"), ("1", "namespaces"), ("2", "namespaces")]
)
def test_a_worker_that_stops_reading_cannot_stall_the_batch(
    jobs: str, isolation: str, tmp_path: Path
):
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    stalling = fixtures.solution_cells(ASSIGNMENT, replace={"relu_backward": FORGE_AND_STALL})
    fixtures.build_notebook(submissions / "a_staller.ipynb", stalling)
    for name in ("b_honest", "c_honest"):
        fixtures.build_notebook(submissions / f"{name}.ipynb", fixtures.solution_cells(ASSIGNMENT))
    grades = tmp_path / "grades.csv"
    env = {"GRADCHECK_ISOLATION": "off"} if isolation == "off" else {}
    result = _cli(
        str(submissions),
        "--csv",
        str(grades),
        "--jobs",
        jobs,
        "--timeout",
        "2",
        timeout=300,
        extra_env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {Path(row["file"]).stem: row for row in csv.DictReader(grades.open())}
    assert set(rows) == {"a_staller", "b_honest", "c_honest"}
    assert rows["b_honest"]["total"] == rows["c_honest"]["total"] == "26"
    assert float(rows["a_staller"]["relu_backward"]) == 0


HANG = f"""
import ctypes, signal, time
def relu_backward(input, output_grad):
    ctypes.CDLL(None).prctl(15, b'{MARK}', 0, 0, 0)
    signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGALRM}})
    while True:
        time.sleep(1)
"""


@pytest.mark.parametrize("isolation", ["namespaces", "off"])
def test_killing_the_grader_leaves_no_worker_alive(isolation: str, tmp_path: Path):
    cells = fixtures.solution_cells(ASSIGNMENT, replace={"relu_backward": HANG})
    notebook = fixtures.build_notebook(tmp_path / "submission.ipynb", cells)
    env = {**os.environ, "GRADCHECK_SECRET": SECRET}
    if isolation == "off":
        env["GRADCHECK_ISOLATION"] = "off"
    grader = subprocess.Popen(
        [sys.executable, "-m", "autograder.cli", str(notebook), "--timeout", "60"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=str(REPO),
    )
    try:
        deadline = time.monotonic() + 60
        while not _marked_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _marked_processes(), "the hanging function never ran"
    finally:
        grader.send_signal(signal.SIGKILL)
        grader.wait()
    deadline = time.monotonic() + 5
    while _marked_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    leftover = _marked_processes()
    for pid in leftover:  # do not leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert not leftover, "a worker outlived the grader"
