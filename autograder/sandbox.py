"""Spawning and talking to the worker process that runs student code.

The worker is ``python -I worker.py`` in its own scratch directory, with an
environment rebuilt from scratch (so the grading secret and anything else in the
grader's environment never reach it). Its first message from the grader is its
:class:`~autograder.isolation.WorkerConfig`: limits, account and namespaces, which it
applies to itself before any student code runs (see isolation.py).

Every read and write on a worker has a deadline and never blocks past it: the pipes
are non-blocking on this side, so a worker that stops reading (or writing) costs its
own request, never the grader. A worker that misses a deadline, crashes or sends
garbage is killed with everything it started, and a fresh one is started on the next
request with the same source. Workers die with the grader (``PR_SET_PDEATHSIG``).
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

from . import channel, isolation, reaping, zygote

WORKER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
#: extra wall time the worker gets beyond its own soft deadline before it is killed
GRACE = 2.0
#: time a fresh worker has to import NumPy, lock itself down and say it is ready
START_BUDGET = 30.0
PR_SET_PDEATHSIG = 1


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
    #: directories student code must not read (the submission's, for one), on top of
    #: the grader's own; honoured where the worker gets a mount namespace
    hide: tuple[str, ...] = ()
    #: namespaces for the worker: None detects them, False never uses them
    namespaces: bool | None = None
    #: seconds of a notebook's top-level code: per cell, and for all cells together
    cell_timeout: float = 10.0
    notebook_timeout: float = 60.0


# what the rest of the grader imports from here
namespace_command = isolation.namespace_command
use_namespaces = isolation.use_namespaces
scrub_argv = isolation.scrub_argv


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
    }
    env.update(options.extra_env)
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    import ctypes

    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


_preexec = _die_with_parent if sys.platform.startswith("linux") else None


def _zygote_command(options: SandboxOptions) -> list[str]:
    return [options.python, "-I", WORKER_PATH]


def _zygote_env(options: SandboxOptions) -> dict[str, str]:
    """The zygote's environment: a worker's, without a directory (each forked worker
    gets its own environment, with its own directory, from the grader)."""
    return worker_env(options, "/")


def prepare_warm_workers(options: SandboxOptions | None = None) -> None:
    """Fork this process's workers from a zygote from now on, and start it now so that
    its imports overlap with other work. For a process that grades many submissions
    (each process of a batch); a no-op where warm workers are not possible."""
    options = options or SandboxOptions()
    zygote.enable()
    try:
        if os.geteuid() == 0 and isolation.use_namespaces(options):
            template = zygote.get(_zygote_command(options), _zygote_env(options), _preexec)
            if template is not None:  # our child, never one a worker detached
                reaping.live_workers.add(template.pid)
    except Exception:  # noqa: BLE001  (a pool whose initializer raised would grade nothing)
        pass  # workers start cold


class _Deadline:
    """A file-like ``read`` over a non-blocking pipe that gives up at a fixed time."""

    def __init__(self, fd: int, deadline: float):
        self.fd, self.deadline = fd, deadline

    def read(self, size: int) -> bytes:
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                raise TimeoutError
            try:
                return os.read(self.fd, min(size, 1 << 20))
            except BlockingIOError:
                continue


class Sandbox:
    """One worker at a time, restarted on demand with the same loaded source."""

    def __init__(self, options: SandboxOptions | None = None):
        self.options = options or SandboxOptions()
        self.process: subprocess.Popen | None = None
        self.directory: str | None = None
        self.load_request: dict | None = None
        self.load_reply: dict | None = None
        self.restarts = 0
        self.namespaces = False
        self.subreaper = False
        self.isolation: list[str] = []
        self._ready = False
        self._deadline = 0.0
        self._worker_pid: int | None = None
        self._own: isolation.OwnAccount | None = None
        #: whether the current worker was forked from a zygote
        self.warm = False

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- the worker's life -----------------------------------------------------------

    def start(self) -> None:
        """Spawn the worker now (it imports NumPy while the grader does other work)."""
        if self.process is not None:
            return
        self.directory = tempfile.mkdtemp(prefix="gradcheck-worker-")
        config = self._config()
        if config.uid is not None:
            os.chown(self.directory, config.uid, config.gid)
        own, self._own = self._own, None
        command = [self.options.python, "-I", WORKER_PATH]
        env = worker_env(self.options, self.directory)
        self.warm = False
        if self.namespaces:
            self.process = self._spawn_warm(env) if own is None else None
            self.warm = self.process is not None
            command = [*isolation.namespace_command(), "--", *command]
        else:
            isolation.hide_grader_environment()
            self.subreaper = reaping.become_subreaper()
        with reaping.workers_lock:
            try:
                if self.process is None:
                    self.process = subprocess.Popen(
                        command,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        cwd=self.directory,
                        env=env,
                        close_fds=True,
                        start_new_session=True,  # so a kill reaches anything it spawns
                        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                    )
            except BaseException:
                if own is not None:
                    own.release()
                raise
            reaping.live_workers.add(self.process.pid)
            if own is not None:  # cleared and released when the worker is reaped
                reaping.accounts[self.process.pid] = own
        for stream in (self.process.stdin, self.process.stdout):
            os.set_blocking(stream.fileno(), False)
        self._ready = False
        self.isolation = []
        self._send({"cmd": "config", "config": config.to_json()}, deadline=self._start_deadline())

    def _spawn_warm(self, env: dict[str, str]) -> zygote.WarmProcess | None:
        """A worker forked from this process's zygote, in a PID namespace of its own,
        with pipes made here for it alone; None where there is no zygote (one
        notebook, GRADCHECK_WARM=off, not root) or it failed: the worker starts cold."""
        if os.geteuid() != 0 or not sys.platform.startswith("linux"):
            return None  # a user namespace would have to be set up around the worker
        template = zygote.get(_zygote_command(self.options), _zygote_env(self.options), _preexec)
        if template is None:
            return None
        requests_r, requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        status_r, status_w = os.pipe()
        request = {"cmd": "spawn", "cwd": self.directory, "env": env, "pid_namespace": True}
        try:
            with reaping.workers_lock:
                pid = template.spawn([requests_r, replies_w, status_w], request, START_BUDGET)
        except OSError:
            for fd in (requests_w, replies_r, status_r):
                os.close(fd)
            zygote.discard(template)
            return None
        finally:
            for fd in (requests_r, replies_w, status_w):
                os.close(fd)
        # the zygote is our child: never mistaken for a process a worker detached
        reaping.live_workers.add(template.pid)
        stdin, stdout = os.fdopen(requests_w, "wb"), os.fdopen(replies_r, "rb")
        return zygote.WarmProcess(pid, stdin, stdout, status_r, template)

    def _config(self) -> isolation.WorkerConfig:
        """What this worker is to apply to itself (see isolation.py)."""
        self.namespaces = isolation.use_namespaces(self.options)
        # the worker starts as us and drops to this account itself, once the namespaces
        # are set up and before any student code runs
        account = isolation.worker_account(self.options)
        self._own = None
        if not self.namespaces and account is not None and not self.options.user:
            # without namespaces a shared account could signal and trace the workers
            # of other jobs: this worker gets an id of its own, swept before and after
            self._own = isolation.own_account()
            if self._own is not None:
                reaping.clear_account(self._own.uid)
                account = (self._own.uid, self._own.gid)
        return isolation.WorkerConfig(
            memory_bytes=self.options.memory_bytes,
            cpu_seconds=self.options.cpu_seconds,
            uid=account[0] if account else None,
            gid=account[1] if account else None,
            uid_auto=account is not None and not self.options.user and self._own is None,
            namespaces=self.namespaces,
            hide=tuple(isolation.hidden_directories(self.options)) if self.namespaces else (),
        )

    def _start_deadline(self) -> float:
        return time.monotonic() + START_BUDGET

    def _ensure_ready(self, deadline: float) -> None:
        self.start()
        if self._ready:
            return
        try:
            header, _ = self._first_reply(deadline)
        except WorkerDied:
            if not self.namespaces:
                raise
            # namespaces exist but the worker could not set itself up in them (an
            # unusual mount table): workers run without them from now on
            isolation.mark_namespaces_broken()
            self.start()
            header, _ = self._read(deadline)
        if header.get("ready") is not True:
            raise self._die("error", "worker failed to start")
        self._ready = True
        found = header.get("isolation")
        self.isolation = [str(i) for i in found] if isinstance(found, list) else []
        if self.load_request is not None:  # a restarted worker gets the same source
            self._send(self.load_request)
            self.load_reply = self._read(deadline + self.load_budget())[0]

    def _first_reply(self, deadline: float) -> tuple[dict, list[bytes]]:
        """The worker's first message; a warm worker that could not set itself up (a
        kernel that refuses what the launcher asks) is retried cold, and every later
        worker starts cold."""
        try:
            return self._read(deadline)
        except WorkerDied:
            if not self.warm:
                raise
            zygote.give_up()
            self.start()
            return self._read(deadline)

    def close(self) -> None:
        if self.process is not None:
            try:
                self._send({"cmd": "quit"}, deadline=time.monotonic() + 1.0)
            except WorkerDied:
                pass
        self._reap()

    # --- requests ----------------------------------------------------------------

    def load_budget(self) -> float:
        # the worker stops top-level code at the notebook's budget; reading and parsing
        # the cells gets one op's time on top
        return self.options.notebook_timeout + self.options.timeout + GRACE

    def load(self, cells: list[str], wanted: list[str]) -> dict:
        """Run the student's code cells (the worker extracts what to run from them);
        the reply says which wanted names are callable."""
        self.load_request = {
            "cmd": "load",
            "cells": cells,
            "wanted": wanted,
            "timeout": self.options.timeout,
            "cell_timeout": self.options.cell_timeout,
            "notebook_timeout": self.options.notebook_timeout,
        }
        try:
            if self.process is not None and self._ready:  # calibrated already: load now
                self._send(self.load_request)
                self.load_reply = self._read(self._start_deadline() + self.load_budget())[0]
            else:
                self._ensure_ready(self._start_deadline())
        except WorkerDied as died:
            # the source kills every worker that loads it; later runs start empty
            self.load_request = None
            return {"callable": [], "fatal": died.message, "errors": []}
        return self.load_reply or {}

    def calibrate(self, items: list[dict]) -> list[Any] | None:
        """Reference forward times of the efficiency cases (``{"op", "arrays", "params",
        "output_grad"}`` each), measured in a worker that has loaded no student code yet,
        so the figures can be trusted. None if the worker cannot time them."""
        if self.load_request is not None:
            raise RuntimeError("calibrate before loading student code")
        deadline = self._start_deadline()
        try:
            self._ensure_ready(deadline)
            tree, buffers = channel.encode(items)
            self._send({"cmd": "calibrate", "cases": tree}, buffers)
            seconds = self._read(deadline + 30.0)[0].get("seconds")
        except WorkerDied:
            return None
        return seconds if isinstance(seconds, list) and len(seconds) == len(items) else None

    def round_trip(self, request: dict, buffers: list[bytes]) -> tuple[dict, list[bytes], float]:
        """Send one request and wait for its reply: (reply, buffers, seconds). The
        seconds are the CPU time the worker's processes spent on it as the kernel
        counts it, read here while the worker waits for us, so neither student code nor
        the load of the machine moves them; where the kernel does not say, the time on
        the grader's clock. Student code can touch neither."""
        self._ensure_ready(self._start_deadline())
        frame = channel.frame(request, buffers)
        pid = self.worker_pid()
        cpu_before = reaping.cpu_seconds(pid) if pid else None
        started = time.perf_counter()
        self._write(frame, time.monotonic() + self.options.timeout + GRACE)
        reply, out = self._read(time.monotonic() + self.options.timeout + GRACE)
        wall = time.perf_counter() - started
        cpu_after = reaping.cpu_seconds(pid) if cpu_before is not None else None
        if cpu_before is None or cpu_after is None:
            return reply, out, wall
        return reply, out, max(cpu_after - cpu_before, 0.0)

    def worker_pid(self) -> int | None:
        """The worker's process id as this process sees it: the child of ``unshare``
        when it runs in namespaces."""
        if self.process is None:
            return None
        if not self.namespaces:
            return self.process.pid
        if self._worker_pid is None:
            below = reaping.descendants(self.process.pid)
            self._worker_pid = below[0] if below else None
        return self._worker_pid

    def submit(self, fn: str, adapter: str | None, cases: list[tuple]) -> None:
        """Ask the worker to call ``fn`` on each argument tuple; see :meth:`collect`."""
        self._ensure_ready(self._start_deadline())
        self._send(*run_request(fn, adapter, cases))
        self._deadline = time.monotonic() + self.options.timeout + GRACE

    def collect(self) -> tuple[dict, list[bytes]]:
        """The reply to the last :meth:`submit`: encoded results, or WorkerDied."""
        if self.process is None:
            raise WorkerDied("error", "the worker is gone")
        return self._read(self._deadline)

    def run(self, fn: str, adapter: str | None, cases: list[tuple]) -> tuple[dict, list[bytes]]:
        self.submit(fn, adapter, cases)
        return self.collect()

    # --- the pipes -----------------------------------------------------------------

    def _send(self, header: dict, buffers: list[bytes] = (), deadline: float | None = None) -> None:
        if deadline is None:
            deadline = time.monotonic() + self.options.timeout + GRACE
        self._write(channel.frame(header, buffers), deadline)

    def _write(self, data: bytes, deadline: float) -> None:
        """Write one request, giving up at ``deadline``: student code can hold the
        interpreter (a thread in a regex that never ends) so that the worker never
        drains its pipe, and the pipe is non-blocking so no write can wait past it."""
        fd = self.process.stdin.fileno()
        view = memoryview(data)
        try:
            while view:
                remaining = deadline - time.monotonic()
                _, writable, _ = select.select([], [fd], [], max(remaining, 0))
                if not writable:
                    raise self._die("timeout", "the worker stopped reading its requests")
                try:
                    view = view[os.write(fd, view[: 1 << 16]) :]
                except BlockingIOError:
                    continue
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
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # closed its pipe but lives on
            code = None
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
        """Kill the worker and everything it started, and forget it."""
        process, self.process = self.process, None
        self._ready = False
        self._worker_pid = None
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        if process is None:
            return
        self.restarts += 1
        reaping.kill_worker(process, orphans=not self.namespaces and self.subreaper)


def run_request(fn: str, adapter: str | None, cases: list[tuple]) -> tuple[dict, list[bytes]]:
    """The ``run`` request for ``fn`` on each argument tuple: (header, buffers)."""
    tree, buffers = channel.encode(list(cases))
    return {"cmd": "run", "fn": fn, "adapter": adapter, "cases": tree}, buffers
