"""Spawning and talking to the worker process that runs student code.

The worker is ``python -I worker.py`` in its own scratch directory, with an
environment rebuilt from scratch (so the grading secret and anything else in the
grader's environment never reach it). It sets its own resource limits before any
student code runs. Each request has a wall-clock deadline; a worker that misses it,
crashes or sends garbage is killed and a fresh one is started on the next request.

Where the machine allows it (root, or unprivileged user namespaces) the worker starts
in fresh PID, mount and network namespaces (``unshare``): it sees no other process,
has no network, and locks the file system down itself before student code runs (see
worker.py); ending it ends everything it started. Otherwise the worker runs without
them, and the grader hides its own environment (``PR_SET_DUMPABLE``). Either way a
root worker runs as an unprivileged user or without capabilities. SECURITY.md has
the whole picture.
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
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
    #: directories student code must not read (the submission's, for one), on top of
    #: the grader's own; honoured where the worker gets a mount namespace
    hide: tuple[str, ...] = ()
    #: namespaces for the worker: None detects them, False never uses them
    namespaces: bool | None = None


#: set GRADCHECK_ISOLATION=off to run workers without namespaces (diagnostics, tests)
ISOLATION_ENV = "GRADCHECK_ISOLATION"
_UNSHARE = ["--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--net"]
_broken_namespaces = False


@functools.cache
def namespace_command() -> tuple[str, ...] | None:
    """The ``unshare`` prefix that works on this machine, or None: as root the
    namespaces themselves; otherwise inside a user namespace of our own."""
    if not sys.platform.startswith("linux"):
        return None
    unshare = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if unshare is None:
        return None
    command = [unshare, *_UNSHARE]
    if os.geteuid() != 0:
        command = [unshare, "--user", "--map-root-user", *_UNSHARE]
    try:
        probe = subprocess.run(
            [*command, "--", "/bin/sh", "-c", "mount -t tmpfs tmpfs /tmp"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return tuple(command) if probe.returncode == 0 else None


def use_namespaces(options: SandboxOptions) -> bool:
    if options.namespaces is False or _broken_namespaces:
        return False
    if os.environ.get(ISOLATION_ENV, "").lower() in ("off", "0", "none", "no"):
        return False
    return namespace_command() is not None


def _readable_by_others(path: str) -> bool:
    """Whether a user with no special rights can reach ``path`` (every directory on
    the way searchable by others, the end readable by others)."""
    import stat

    path = os.path.realpath(path)
    parts = path.split("/")
    for depth in range(1, len(parts) + 1):
        current = "/".join(parts[:depth]) or "/"
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return False
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return False
    return bool(os.stat(path).st_mode & stat.S_IROTH)


def worker_account(options: SandboxOptions) -> tuple[int, int] | None:
    """(uid, gid) to run student code as: the configured user, or as root ``nobody``
    when the interpreter and NumPy are readable by it; None keeps the current user
    (which, as root, runs without capabilities instead)."""
    import pwd

    if os.geteuid() != 0:
        return None
    if options.user:
        account = pwd.getpwnam(options.user)
        return account.pw_uid, account.pw_gid
    try:
        account = pwd.getpwnam("nobody")
    except KeyError:
        return None
    if use_namespaces(options):
        # the worker checks the interpreter is readable once it has its mounts (a
        # directory it cannot enter, like /root, is replaced on the way there)
        return account.pw_uid, account.pw_gid
    import numpy

    needed = [options.python, sys.base_prefix, sys.prefix, os.path.dirname(numpy.__file__)]
    if all(_readable_by_others(p) for p in needed):
        return account.pw_uid, account.pw_gid
    return None


def hidden_directories(options: SandboxOptions) -> list[str]:
    """What a worker with a mount namespace cannot see: the grader's repository and
    working directory, home directories, Gradescope's /autograder, the submissions'
    directories; each with the top-level directory holding it unless that is a
    system one (the worker maps the interpreter and NumPy back in)."""
    system = {"", "usr", "lib", "lib64", "lib32", "bin", "sbin", "etc", "proc", "sys", "dev"}
    system |= {"run", "var", "boot", "nix", "opt", "snap", "tmp"}
    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    places = [project, os.getcwd(), os.path.expanduser("~"), "/root", "/home", "/autograder"]
    places += list(options.hide)
    found = set()
    for place in places:
        place = os.path.realpath(place)
        top = place.split("/")[1] if place.count("/") >= 1 else ""
        found.add(place)
        if top not in system:
            found.add(f"/{top}")
    return sorted(p for p in found if p != "/" and os.path.isdir(p))


def hide_grader_environment() -> None:
    """Without a PID namespace the worker can see this process: make its
    /proc/<pid>/environ (the secret may be there) unreadable to other processes of
    the same user. The command line stays readable: see :func:`scrub_argv`."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
    except (OSError, AttributeError):
        pass


_live_workers: set[int] = set()
#: held while a worker is started and while orphans are looked for (batch mode runs
#: sandboxes in threads: a worker not yet registered must not pass for an orphan)
_workers_lock = threading.Lock()


def become_subreaper() -> bool:
    """Without a PID namespace, processes a worker detached (``setsid``, double fork)
    are re-parented to this process when the worker ends (PR_SET_CHILD_SUBREAPER),
    where :func:`end_orphans` finds them."""
    try:
        import ctypes

        return ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def end_orphans() -> None:
    """Kill every process re-parented to this one that is not a live worker, and its
    descendants."""
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                ppid = int(handle.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    with _workers_lock:
        orphans = [p for p in children.get(os.getpid(), []) if p not in _live_workers]
        orphans = [p for p in orphans if not _is_known_child(p)]
        stack = list(orphans)
        while stack:
            pid = stack.pop()
            stack += children.get(pid, [])
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
    deadline = time.monotonic() + 1.0
    for pid in orphans:  # ours now: reap them, and only them
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] != 0:
                    break
            except ChildProcessError:
                break
            time.sleep(0.002)


def _is_known_child(pid: int) -> bool:
    """A child this process started itself: in its process group (workers and
    whatever they spawn are in sessions of their own)."""
    try:
        return os.getpgid(pid) == os.getpgrp()
    except OSError:
        return True


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc/<pid>/task/<tid>/children)."""
    found, stack = [], [pid]
    while stack and len(found) < 4096:
        parent = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as handle:
                    children = [int(c) for c in handle.read().split()]
            except (OSError, ValueError):
                continue
            found += children
            stack += children
    return found


def _wait_gone(pids: list[int], deadline: float) -> None:
    """Until every one of ``pids`` is dead (gone, or a zombie waiting for its parent)."""
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{pid}/stat", "rb") as handle:
                    if handle.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                        break
            except OSError:
                break
            time.sleep(0.002)


def scrub_argv(secret: str) -> bool:
    """Overwrite ``secret`` in this process's command line as the kernel shows it
    (/proc/<pid>/cmdline is readable by every process of the machine); Python has
    parsed its arguments already. Returns whether the secret is gone from it."""
    if not secret or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        with open("/proc/self/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end
        with open("/proc/self/cmdline", "rb") as handle:
            shown = handle.read()
        data = shown[: end - start]
        if end <= start or ctypes.string_at(start, end - start) != data:
            return False
        needle = secret.encode()
        at = data.find(needle)
        while at >= 0:
            ctypes.memset(start + at, ord("*"), len(needle))
            at = data.find(needle, at + len(needle))
        with open("/proc/self/cmdline", "rb") as handle:
            return needle not in handle.read()
    except (OSError, ValueError, IndexError, AttributeError):
        return False


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
        self.namespaces = False
        self.subreaper = False

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> None:
        """Spawn the worker now (it imports NumPy while the grader does other work)."""
        if self.process is not None:
            return
        self.directory = tempfile.mkdtemp(prefix="gradcheck-worker-")
        env = worker_env(self.options, self.directory)
        # the worker starts as us and drops to this account itself, once the
        # namespaces are set up and before any student code runs
        account = worker_account(self.options)
        if account is not None:
            os.chown(self.directory, *account)
            env.update(GRADCHECK_WORKER_UID=str(account[0]), GRADCHECK_WORKER_GID=str(account[1]))
            if not self.options.user:
                env["GRADCHECK_WORKER_UID_AUTO"] = "1"
        command = [self.options.python, "-I", WORKER_PATH]
        self.namespaces = use_namespaces(self.options)
        if self.namespaces:
            command = [*namespace_command(), "--", *command]
            env.update(
                GRADCHECK_WORKER_NAMESPACES="1",
                GRADCHECK_WORKER_HIDE=os.pathsep.join(hidden_directories(self.options)),
            )
        else:
            hide_grader_environment()
            self.subreaper = become_subreaper()
        with _workers_lock:
            self._popen(command, env)
            _live_workers.add(self.process.pid)
        self._ready = False
        self.isolation: list[str] = []

    def _popen(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self.directory,
            env=env,
            close_fds=True,
            start_new_session=True,  # so a kill reaches anything it managed to spawn
        )

    def _ensure_ready(self, deadline: float) -> None:
        self.start()
        if not self._ready:
            try:
                header, _ = self._read(deadline)
            except WorkerDied:
                if not self.namespaces:
                    raise
                # namespaces exist but the worker could not set itself up in them (an
                # unusual mount table): workers run without them from now on
                global _broken_namespaces
                _broken_namespaces = True
                self.start()
                header, _ = self._read(deadline)
            if not header.get("ready"):
                raise self._die("error", "worker failed to start")
            self._ready = True
            isolation = header.get("isolation")
            self.isolation = [str(i) for i in isolation] if isinstance(isolation, list) else []
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
        inside = _descendants(process.pid)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in inside:  # those that left the process group, too
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
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
        _live_workers.discard(process.pid)
        _wait_gone(inside, time.monotonic() + 2.0)
        if not self.namespaces and getattr(self, "subreaper", False):
            end_orphans()  # a PID namespace would have ended them with the worker

    def close(self) -> None:
        if self.process is not None:
            try:
                self._send({"cmd": "quit"})
            except WorkerDied:
                pass
        self._reap()
