"""Warm workers (forked from a zygote that imported NumPy once per grader process) are
as isolated as cold ones: nothing one submission leaves reaches the next, each worker
is process 1 of a PID namespace of its own, the zygote is out of reach, and killing the
grader kills the zygote and every worker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from autograder import channel, zygote
from autograder.sandbox import Sandbox, SandboxOptions, prepare_warm_workers, use_namespaces
from tests.adversarial.test_attacks import MARK, _marked_processes
from tests.adversarial.test_sandbox_leaks import batch, fn, notebook
from tests.adversarial.test_timing_and_stalls import HANG

pytestmark = pytest.mark.skipif(
    not use_namespaces(SandboxOptions()) or os.geteuid() != 0,
    reason="warm workers need namespaces as root (elsewhere workers start cold)",
)

# Each submission, as its notebook is loaded, looks for what an earlier one may have
# left, reports what it found (and its PID namespace) in a note (a cell that raises),
# then leaves all of it behind. A submission that found anything gets wrong answers
# from relu_backward, so its score shows it too.
OBSERVE_AND_LEAVE = f"""
import atexit, json, os, sys, ctypes
_SEEN = []
if getattr(json, "_planted", None) is not None:
    _SEEN.append("module-global")
if getattr(np, "_planted", None) is not None or np.hypot.__class__ is not np.ufunc:
    _SEEN.append("patched-numpy")
if os.path.exists("/tmp/planted.txt"):
    _SEEN.append("tmp-file")
if os.path.exists("planted.txt"):
    _SEEN.append("directory-file")
if "PLANTED" in os.environ:
    _SEEN.append("env-var")
if sys.modules.get("__planted__") is not None:
    _SEEN.append("module")
_pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
if _pids != [1] or os.getpid() != 1:
    _SEEN.append("processes-" + "-".join(map(str, _pids)))
_observed = (os.stat("/proc/self/ns/pid").st_ino, atexit._ncallbacks(), ",".join(_SEEN) or "clean")
json._planted = 1
np._planted = 1
np.hypot = lambda *a, **k: 0  # a function no op of this notebook calls
open("/tmp/planted.txt", "w").write("x")
open("planted.txt", "w").write("x")
os.environ["PLANTED"] = "1"
sys.modules["__planted__"] = json
atexit.register(lambda: open("/tmp/atexit.txt", "w").write("x"))
try:
    if os.fork() == 0:
        ctypes.CDLL(None).prctl(15, b"{MARK}", 0, 0, 0)
        import time
        time.sleep(60)
        os._exit(0)
except OSError:
    pass
raise RuntimeError("OBSERVED %d %d %s" % _observed)
"""
JUDGED = fn(
    """
if _SEEN:
    return output_grad * 0 + 7.0
return _real_relu(input, output_grad)
"""
)

ZYGOTE_ARG = re.compile(rb"worker\.py\x00zygote\x00")


def _zygotes() -> set[int]:
    """Zygote processes: their launchers and workers are forks of them, with the same
    command line, so a zygote is such a process whose parent is not one."""
    forks, parents = set(), {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                if not ZYGOTE_ARG.search(handle.read()):
                    continue
            with open(f"/proc/{name}/stat", "rb") as handle:
                parents[int(name)] = int(handle.read().rsplit(b")", 1)[1].split()[1])
            forks.add(int(name))
        except (OSError, ValueError, IndexError):
            pass
    return {pid for pid in forks if parents[pid] not in forks and _is_grader(parents[pid])}


def _is_grader(pid: int) -> bool:
    """A grading process (the command line or a pool process forked from it): a
    launcher or worker left for an instant without its parent, while a batch ends, is
    re-parented elsewhere and is no zygote."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"autograder" in handle.read()
    except OSError:
        return False


class _Watch:
    """The zygotes that exist at any time while a batch runs."""

    def __init__(self):
        self.before = _zygotes()
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.seen |= _zygotes() - self.before
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _observations(feedback: Path) -> list[tuple[int, int, str]]:
    found = []
    for page in sorted(feedback.glob("*.md")):
        for match in re.finditer(r"OBSERVED (\d+) (\d+) (\S+)", page.read_text()):
            found.append((int(match[1]), int(match[2]), match[3]))
    return found


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_nothing_a_submission_leaves_reaches_the_next_warm_worker(jobs: str, tmp_path: Path):
    paths = [
        notebook(tmp_path / "subs" / f"s{i}.ipynb", JUDGED, (OBSERVE_AND_LEAVE,)) for i in range(6)
    ]
    with _Watch() as watch:
        result, rows = batch(paths, tmp_path, "--jobs", jobs)
    assert result.returncode == 0, result.stderr[-2000:]
    # start-up paid once per grading process: one zygote for each
    assert len(watch.seen) == int(jobs), watch.seen
    observed = _observations(tmp_path / "out" / "feedback")
    assert len(observed) == len(paths), observed
    assert [what for _, _, what in observed] == ["clean"] * len(paths)
    # each saw only itself, as process 1 ("clean" above), in a PID namespace that is
    # not the grader's (the kernel may give a later namespace a freed one's number)
    assert os.stat("/proc/self/ns/pid").st_ino not in {ns for ns, _, _ in observed}
    assert len({callbacks for _, callbacks, _ in observed}) == 1  # no atexit handler kept
    for path in paths:
        row = rows[str(path)]
        assert row["error"] == "" and row["total"] == row["max_score"], row
    assert not _marked_processes()
    assert not os.path.exists("/tmp/planted.txt") and not os.path.exists("/tmp/atexit.txt")


def _run(sandbox: Sandbox, source: str, name: str) -> object:
    loaded = sandbox.load([source], [name])
    assert loaded["callable"] == [name], loaded
    reply, buffers = sandbox.run(name, None, [(1,)])
    return channel.decode(reply["results"][0]["value"], buffers)


REACH = """
import os, signal
def reach(x):
    out = {"pid": os.getpid(), "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}
    for target in sorted({ZYGOTE, LAUNCHER, GRADER, 1}):
        try:
            os.kill(target, signal.SIGKILL if target != 1 else 0)
            out[f"kill-{target}"] = "sent"
        except OSError as error:
            out[f"kill-{target}"] = type(error).__name__
        for part in ("environ", "cmdline", "mem"):
            try:
                with open(f"/proc/{target}/{part}", "rb") as handle:
                    out[f"{part}-{target}"] = len(handle.read(64))
            except OSError as error:
                out[f"{part}-{target}"] = type(error).__name__
    return out
"""


KINDS = ("pid", "mnt", "net", "ipc")


def test_the_zygote_cannot_be_reached_from_a_worker():
    prepare_warm_workers(SandboxOptions(timeout=5))
    try:
        first = Sandbox(SandboxOptions(timeout=5))
        first.start()
        assert first.warm
        template, launcher = zygote._state["zygote"], first.process.pid
        source = REACH.replace("ZYGOTE", str(template.pid))
        source = source.replace("LAUNCHER", str(launcher))
        source = source.replace("GRADER", str(os.getpid()))
        seen = _run(first, source, "reach")
        worker_pid = first.worker_pid()
        first.close()
        assert seen["pid"] == 1 and seen["pids"] == [1], seen
        for target in {template.pid, launcher, os.getpid()} - {1}:
            assert seen[f"kill-{target}"] == "ProcessLookupError", seen
            assert all(seen[f"{p}-{target}"] == "FileNotFoundError" for p in ("environ", "mem"))
        assert template.alive() and zygote._state["zygote"] is template
        # the next workers are new processes in new namespaces, forked from the same zygote
        second, third = Sandbox(SandboxOptions(timeout=5)), Sandbox(SandboxOptions(timeout=5))
        again = _run(second, source, "reach")
        _run(third, source, "reach")
        assert second.warm and third.warm and zygote._state["zygote"] is template
        pids = [second.worker_pid(), third.worker_pid()]
        assert None not in pids and worker_pid not in pids and again["pids"] == [1]
        namespaces = {os.readlink(f"/proc/{pid}/ns/{kind}") for pid in pids for kind in KINDS}
        ours = {os.readlink(f"/proc/self/ns/{kind}") for kind in KINDS}
        assert len(namespaces) == 2 * len(KINDS) and not namespaces & ours
        second.close()
        third.close()
    finally:
        zygote.shutdown()


def test_killing_the_grader_kills_the_zygote_and_every_worker(tmp_path: Path):
    paths = [notebook(tmp_path / "subs" / f"s{i}.ipynb", HANG) for i in range(2)]
    env = {**os.environ, "HOME": str(tmp_path)}
    grader = subprocess.Popen(
        [sys.executable, "-m", "autograder.cli", *map(str, paths), "--timeout", "60"]
        + ["--csv", str(tmp_path / "grades.csv"), "--seed", "warm", "--public-only"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=str(tmp_path),
    )
    before = _zygotes()
    try:
        deadline = time.monotonic() + 60
        while not _marked_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _marked_processes(), "the hanging function never ran"
        started = _zygotes() - before
        assert len(started) == 1, "the batch's worker was not forked from a zygote"
    finally:
        grader.send_signal(signal.SIGKILL)
        grader.wait()
    deadline = time.monotonic() + 5
    while (_marked_processes() or _zygotes() & started) and time.monotonic() < deadline:
        time.sleep(0.1)
    leftover, zygotes = _marked_processes(), _zygotes() & started
    for pid in [*leftover, *zygotes]:
        os.kill(pid, signal.SIGKILL)  # do not leave them to the next test
    assert not leftover, "a worker outlived the grader"
    assert not zygotes, "the zygote outlived the grader"
