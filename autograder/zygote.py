"""Warm workers: a template process that has imported NumPy and the reference package,
and forks one fresh worker per request.

Starting a worker costs a new interpreter importing NumPy; in a batch that is most of
the time a submission takes. The zygote pays it once per grader process. It is
``python -I worker.py zygote FD`` (FD: its end of a Unix socketpair with the grader),
runs no student code, is not isolated itself and never reads a worker's pipes: the
grader creates each worker's request, reply and status pipes and hands the worker's
ends over with SCM_RIGHTS, so no worker holds anything of another.

For each ``spawn`` the zygote forks a *launcher*, which enters a new PID namespace and
forks the worker: the worker is process 1 of that namespace, sets up its mount,
network and IPC namespaces, new root, account and limits itself exactly as a cold
worker does (worker.py, isolation.py), and cannot name the launcher, the zygote or
the grader. The launcher only waits for the worker and writes its wait status on the
status pipe; the zygote keeps the launcher unreaped (so its pid, which the grader
signals, cannot be reused) until the grader says ``reap``. Death runs down the chain:
grader, zygote, launcher, worker each die with their parent (``PR_SET_PDEATHSIG``),
and with the worker its whole PID namespace.

Both sides live here and import only the standard library: the worker side is loaded
by path into the zygote (worker.py), the grader side is used by sandbox.py.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1
CLONE_NEWPID = 0x20000000
#: GRADCHECK_WARM=off starts every worker cold (a fresh interpreter each); =always
#: forks them from a zygote even for one notebook (diagnostics, tests)
WARM_ENV = "GRADCHECK_WARM"
#: zygotes that died or refused a spawn before warm workers are given up for good
MAX_FAILURES = 3


# --- the zygote side (inside ``python -I worker.py zygote FD``) -------------------


def _die_with_parent(libc: Any) -> None:
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def serve(control_fd: int, protocol_fds: tuple[int, int]) -> dict:
    """The zygote's loop. Returns only in a freshly forked worker, with the ``spawn``
    request it was made for and its request and reply pipes on ``protocol_fds``; the
    zygote itself exits when the grader closes its socket."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    control = socket.socket(fileno=control_fd)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1 << 20, 3)
        except OSError:
            os._exit(0)
        if not message:
            os._exit(0)  # the grader is gone or done
        try:
            request = json.loads(message)
        except ValueError:
            request = {}
        if request.get("cmd") == "reap":
            _close(fds)
            try:
                os.waitpid(int(request["pid"]), 0)
            except (ChildProcessError, KeyError, ValueError, TypeError):
                pass
            continue
        if request.get("cmd") != "spawn" or len(fds) != 3:
            _close(fds)
            control.send(b'{"error": "bad spawn request"}')
            continue
        zygote = os.getpid()
        try:
            pid = os.fork()
        except OSError as error:
            _close(fds)
            control.send(json.dumps({"error": f"fork failed: {error}"}).encode())
            continue
        if pid == 0:
            try:
                control.close()
                _launch(libc, zygote, request, fds, protocol_fds)
            except BaseException:  # noqa: BLE001  (a launcher must never return to the loop)
                os._exit(127)
            return request  # only the worker gets here
        _close(fds)
        control.send(json.dumps({"pid": pid}).encode())


def _close(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _launch(libc: Any, zygote: int, request: dict, fds: list[int], protocol: tuple) -> None:
    """The launcher, forked from the zygote: it makes the worker, waits for it and
    reports how it ended. Returns only in the worker."""
    requests, replies, status = fds
    os.setsid()  # a process group of its own: the grader kills the worker through it
    _die_with_parent(libc)
    if os.getppid() != zygote:  # the zygote died before the line above
        os._exit(1)
    os.dup2(requests, protocol[0])
    os.dup2(replies, protocol[1])
    _close([requests, replies])
    if request.get("pid_namespace"):
        if libc.unshare(CLONE_NEWPID) != 0:
            os._exit(126)
    # the worker reads EOF here as soon as the launcher is gone
    alive_r, alive_w = os.pipe()
    worker = os.fork()
    if worker == 0:
        _close([status, alive_w])
        _die_with_parent(libc)
        # the launcher may have died before the kill was asked for: then die now
        if select.select([alive_r], [], [], 0)[0]:
            os._exit(1)
        os.close(alive_r)
        return
    _close([alive_r, *protocol])
    while True:
        try:
            _, code = os.waitpid(worker, 0)
            break
        except ChildProcessError:
            code = signal.SIGKILL  # as if killed: the worker is gone, unseen
            break
    try:
        os.write(status, code.to_bytes(4, "little", signed=True))
    except OSError:
        pass
    os._exit(0)


def fresh_worker_state(request: dict) -> None:
    """What a forked worker must not share with the zygote or its siblings: the
    working directory, the environment, and the seeds of the random generators (a
    fresh interpreter draws its own)."""
    import sys

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in dict(request.get("env", {})).items()})
    sys.argv = sys.argv[:1]
    if "tempfile" in sys.modules:
        sys.modules["tempfile"].tempdir = None
    if "random" in sys.modules:
        sys.modules["random"].seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


# --- the grader side -----------------------------------------------------------


class WarmProcess:
    """What the sandbox needs of a ``Popen`` for a worker made by the zygote: ``pid``
    is its launcher's (a process-group leader whose only child is the worker), the
    grader's ends of its pipes, and its exit status as the launcher reports it."""

    def __init__(self, pid: int, stdin: Any, stdout: Any, status_fd: int, zygote: Zygote):
        self.pid, self.stdin, self.stdout = pid, stdin, stdout
        self.returncode: int | None = None
        self._status_fd, self._zygote = status_fd, zygote

    def poll(self) -> int | None:
        try:
            return self.wait(0)
        except subprocess.TimeoutExpired:
            return None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is not None:
            return self.returncode
        ready, _, _ = select.select([self._status_fd], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired(["warm worker", str(self.pid)], timeout or 0)
        try:
            data = os.read(self._status_fd, 4)
        except OSError:
            data = b""
        if len(data) == 4:
            self.returncode = os.waitstatus_to_exitcode(int.from_bytes(data, "little", signed=True))
        else:  # the launcher was killed before it could say: so was the worker
            self.returncode = -signal.SIGKILL
        os.close(self._status_fd)
        self._zygote.reap(self.pid)
        return self.returncode


class Zygote:
    """The grader's handle on one zygote process."""

    def __init__(self, command: list[str], env: dict[str, str], preexec_fn: Callable | None):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [*command, "zygote", str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                cwd="/",
                env=env,
                start_new_session=True,
                preexec_fn=preexec_fn,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.control = ours
        self.key = (tuple(command), tuple(sorted(env.items())))
        self.owner = os.getpid()
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.process.poll() is None

    def spawn(self, fds: list[int], request: dict, timeout: float) -> int:
        """Fork a worker holding ``fds`` (its request and reply pipes, and the status
        pipe of its launcher); the launcher's pid. The zygote's first answer may wait
        for its imports, hence the timeout. OSError if there is no worker."""
        with self._lock:
            self.control.settimeout(timeout)
            try:
                socket.send_fds(self.control, [json.dumps(request).encode()], fds)
                reply = self.control.recv(1 << 16)
            except (OSError, ValueError) as error:
                raise OSError(f"the zygote did not answer: {error}") from None
        try:
            pid = json.loads(reply or b"{}").get("pid")
        except ValueError:
            pid = None
        if type(pid) is not int or pid <= 1:
            raise OSError("the zygote could not fork a worker")
        return pid

    def reap(self, pid: int) -> None:
        with self._lock:
            try:
                self.control.settimeout(5.0)
                self.control.send(json.dumps({"cmd": "reap", "pid": pid}).encode())
            except OSError:
                pass

    def close(self) -> None:
        try:
            self.control.close()
        except OSError:
            pass
        if self.owner != os.getpid():
            return  # a forked copy of the handle: the zygote is its parent's
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_state: dict[str, Any] = {"zygote": None, "enabled": False, "failures": 0}


def warm_requested() -> bool:
    return os.environ.get(WARM_ENV, "").lower() not in ("off", "0", "no", "none")


def enable() -> None:
    """Let workers of this process be forked from a zygote (a batch does; one notebook
    gains nothing from it)."""
    _state["enabled"] = True


def enabled() -> bool:
    wanted = _state["enabled"] or os.environ.get(WARM_ENV, "").lower() == "always"
    return bool(wanted) and _state["failures"] < MAX_FAILURES and warm_requested()


def get(command: list[str], env: dict[str, str], preexec_fn: Callable | None) -> Zygote | None:
    """This process's zygote for ``command`` and ``env``, started if need be; None when
    warm workers are off or keep failing."""
    if not enabled():
        return None
    current = _state["zygote"]
    if current is not None and current.owner != os.getpid():
        current = _state["zygote"] = None  # inherited through fork: not ours to use
    key = (tuple(command), tuple(sorted(env.items())))
    if current is not None and (current.key != key or not current.alive()):
        discard(current, failed=current.key == key)
        current = None
    if current is None:
        try:
            current = _state["zygote"] = Zygote(command, env, preexec_fn)
        except OSError:
            _state["failures"] += 1
            return None
    return current


def discard(zygote: Zygote, failed: bool = True) -> None:
    """Stop using ``zygote`` (it died or misbehaved); the next worker gets a new one."""
    if failed:
        _state["failures"] += 1
    if _state["zygote"] is zygote:
        _state["zygote"] = None
    zygote.close()


def give_up() -> None:
    """A warm worker could not set itself up: workers start cold from now on."""
    _state["failures"] = MAX_FAILURES
    if _state["zygote"] is not None:
        discard(_state["zygote"], failed=False)


def shutdown() -> None:
    """Stop this process's zygote; workers start cold until :func:`enable` again."""
    _state["enabled"] = False
    if _state["zygote"] is not None:
        discard(_state["zygote"], failed=False)
