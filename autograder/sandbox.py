"""Spawning and talking to the worker process that runs student code.

The worker is ``python -I worker.py`` in its own scratch directory, with an
environment rebuilt from scratch (so the grading secret and anything else in the
grader's environment never reach it). It sets its own resource limits before any
student code runs. Each request has a wall-clock deadline; a worker that misses it,
crashes or sends garbage is killed and a fresh one is started on the next request.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from . import channel

WORKER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
#: extra wall time the worker gets beyond its own soft deadline before it is killed
GRACE = 2.0


class WorkerDied(Exception):
    """The worker crashed, timed out or broke the protocol; ``status`` says which."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class SandboxOptions:
    timeout: float = 10.0
    memory_bytes: int = 3 * 1024**3
    cpu_seconds: int = 600
    #: run the worker as this user (needs root); None keeps the current user
    user: str | None = None
    python: str = sys.executable
    extra_env: dict[str, str] = field(default_factory=dict)


def worker_env(options: SandboxOptions, home: str) -> dict[str, str]:
    """A minimal environment: nothing inherited except what Python and NumPy need."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # one BLAS thread: threads would count against the process limit, and the
        # grader already runs submissions in parallel
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
        "MPLBACKEND": "Agg",
        "GRADCHECK_WORKER_MEMORY": str(options.memory_bytes),
        "GRADCHECK_WORKER_CPU": str(options.cpu_seconds),
    }
    env.update(options.extra_env)
    return env


class _Deadline:
    """A file-like ``read`` over a pipe that gives up at a fixed time."""

    def __init__(self, fd: int, deadline: float):
        self.fd, self.deadline = fd, deadline

    def read(self, size: int) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        ready, _, _ = select.select([self.fd], [], [], remaining)
        if not ready:
            raise TimeoutError
        return os.read(self.fd, min(size, 1 << 20))


class Sandbox:
    """One worker at a time, restarted on demand with the same loaded source."""

    def __init__(self, options: SandboxOptions | None = None):
        self.options = options or SandboxOptions()
        self.process: subprocess.Popen | None = None
        self.directory: str | None = None
        self.load_request: dict | None = None
        self.load_reply: dict | None = None
        self.restarts = 0

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> None:
        """Spawn the worker now (it imports NumPy while the grader does other work)."""
        if self.process is not None:
            return
        self.directory = tempfile.mkdtemp(prefix="gradcheck-worker-")
        kwargs: dict[str, Any] = {}
        if self.options.user and os.geteuid() == 0:
            import pwd

            account = pwd.getpwnam(self.options.user)
            os.chown(self.directory, account.pw_uid, account.pw_gid)
            kwargs.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
        self.process = subprocess.Popen(
            [self.options.python, "-I", WORKER_PATH],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self.directory,
            env=worker_env(self.options, self.directory),
            close_fds=True,
            start_new_session=True,  # so a kill reaches anything it managed to spawn
            **kwargs,
        )
        self._ready = False

    def _ensure_ready(self, deadline: float) -> None:
        self.start()
        if not self._ready:
            header, _ = self._read(deadline)
            if not header.get("ready"):
                raise self._die("error", "worker failed to start")
            self._ready = True
            if self.load_request is not None:
                self._send(self.load_request)
                self.load_reply = self._read(deadline + self.load_budget())[0]

    def load_budget(self) -> float:
        chunks = len((self.load_request or {}).get("chunks", []))
        return self.options.timeout * max(1, min(chunks, 4)) + GRACE

    def load(self, chunks: list[dict], wanted: list[str]) -> dict:
        """Execute the student's extracted source; returns which wanted names are callable."""
        self.load_request = {
            "cmd": "load",
            "chunks": chunks,
            "wanted": wanted,
            "timeout": self.options.timeout,
        }
        try:
            if self.process is not None and self._ready:  # calibrated already: load now
                self._send(self.load_request)
                self.load_reply = self._read(time.monotonic() + 30.0 + self.load_budget())[0]
            else:
                self._ensure_ready(time.monotonic() + 30.0)
        except WorkerDied as died:
            # the source kills every worker that loads it; later runs start empty
            self.load_request = None
            return {"callable": [], "fatal": died.message, "errors": []}
        return self.load_reply or {}

    def calibrate(self, items: list[dict]) -> list[float] | None:
        """Reference forward times of the efficiency cases (``{"op", "arrays", "params",
        "output_grad"}`` each), measured in a worker that has loaded no student code yet.
        None if the worker cannot time them."""
        if self.load_request is not None:
            raise RuntimeError("calibrate before loading student code")
        deadline = time.monotonic() + 30.0
        try:
            self._ensure_ready(deadline)
            tree, buffers = channel.encode(items)
            self._send({"cmd": "calibrate", "cases": tree}, buffers)
            seconds = self._read(deadline + 30.0)[0].get("seconds")
        except WorkerDied:
            return None
        if not isinstance(seconds, list) or len(seconds) != len(items):
            return None
        return [float(s) if isinstance(s, (int, float)) else None for s in seconds]

    def submit(
        self, fn: str, adapter: str | None, cases: list[tuple], timing: dict | None = None
    ) -> None:
        """Ask the worker to call ``fn`` on each argument tuple; see :meth:`collect`.
        ``timing`` (``{"op", "case", "repeats"}``) also times the call against the
        reference forward (efficiency cases)."""
        self._ensure_ready(time.monotonic() + 30.0)
        tree, buffers = channel.encode({"cases": list(cases), "timing": (timing or {}).get("case")})
        request = {"cmd": "run", "fn": fn, "adapter": adapter, "cases": tree["v"]["cases"]}
        if timing:
            request["timing"] = dict(timing, case=tree["v"]["timing"])
        self._send(request, buffers)
        self._deadline = time.monotonic() + self.options.timeout + GRACE

    def collect(self) -> tuple[dict, list[bytes]]:
        """The reply to the last :meth:`submit`: encoded results, or WorkerDied."""
        if self.process is None:
            raise WorkerDied("error", "the worker is gone")
        return self._read(self._deadline)

    def run(
        self, fn: str, adapter: str | None, cases: list[tuple], timing: dict | None = None
    ) -> tuple[dict, list[bytes]]:
        self.submit(fn, adapter, cases, timing)
        return self.collect()

    def _send(self, header: dict, buffers: list[bytes] = ()) -> None:
        """Write one request, giving up when the worker stops reading: student code can
        hold the interpreter (a thread in a regex that never ends) so that the worker
        never drains its pipe, and a blocking write would hang the grader with it."""
        data = channel.frame(header, buffers)
        fd = self.process.stdin.fileno()
        deadline = time.monotonic() + self.options.timeout + GRACE
        view = memoryview(data)
        try:
            while view:
                remaining = deadline - time.monotonic()
                _, writable, _ = select.select([], [fd], [], max(remaining, 0))
                if not writable:
                    raise self._die("timeout", "the worker stopped reading its requests")
                view = view[os.write(fd, view[: 1 << 16]) :]
        except (BrokenPipeError, OSError):
            raise self._die("error", "the worker crashed") from None

    def _read(self, deadline: float) -> tuple[dict, list[bytes]]:
        try:
            return channel.read_message(_Deadline(self.process.stdout.fileno(), deadline))
        except TimeoutError:
            raise self._die("timeout", "timed out") from None
        except EOFError:
            raise self._crash() from None
        except channel.ChannelError as error:
            raise self._die("error", f"protocol error: {error}") from None

    def _crash(self) -> WorkerDied:
        code = self.process.wait(timeout=5)
        self._reap()
        if code in (-signal.SIGKILL, -signal.SIGSEGV, -signal.SIGBUS, -signal.SIGABRT):
            # an out-of-memory kill or a crash inside NumPy under the memory limit
            status = "memory" if code == -signal.SIGKILL else "error"
            return WorkerDied(status, f"the worker was killed (signal {-code})")
        if code == -signal.SIGXCPU:
            return WorkerDied("timeout", "CPU time limit exceeded")
        return WorkerDied("error", f"the worker exited with code {code}")

    def _die(self, status: str, message: str) -> WorkerDied:
        self._reap()
        return WorkerDied(status, message)

    def _reap(self) -> None:
        """Kill the worker (and its process group) and forget it."""
        process, self.process = self.process, None
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        if process is None:
            return
        self.restarts += 1
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        if self.process is not None:
            try:
                self._send({"cmd": "quit"})
            except WorkerDied:
                pass
        self._reap()
