"""What one submission leaves behind or reaches outside its worker: IPC objects and files
read by the next submission, a Unix socket of the host, classmates' notebooks in a
one-directory-per-student layout, and, without namespaces, the processes of a
submission graded at the same time.

Each test grades real notebooks with the real command line. The attacking op is
``relu_backward``: it answers wrongly when the attack succeeds, so a leak shows as a
lost op, and the test also checks the host for what the attack left.
"""

from __future__ import annotations

import csv
import ctypes
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

from autograder.sandbox import SandboxOptions, use_namespaces
from tests import notebooks as fixtures

ASSIGNMENT = "01_elementwise"
ATTACKED = "relu_backward"
SECRET = "leak-secret-5e2a"
REPO = Path(__file__).resolve().parents[2]
FAST = ["--seed", SECRET, "--timeout", "2", "--public-only", "--efficiency-weight", "0"]
namespaces_only = pytest.mark.skipif(
    not use_namespaces(SandboxOptions()), reason="needs namespaces (see SECURITY.md)"
)
REAL = "def _real_relu(input, output_grad):\n    return output_grad * (input > 0)\n"


def fn(body: str) -> str:
    lines = "".join(f"    {line}\n" for line in body.strip("\n").splitlines())
    return f"def relu_backward(input, output_grad):\n{lines}"


def notebook(path: Path, op_code: str | None = None, cells: tuple[str, ...] = ()) -> Path:
    """A correct 01_elementwise notebook; ``op_code`` replaces relu_backward and
    ``cells`` go just before it."""
    replace = {ATTACKED: op_code} if op_code else {}
    sources = fixtures.solution_cells(ASSIGNMENT, replace=replace)
    at = next(i for i, cell in enumerate(sources) if f"def {ATTACKED}(" in cell)
    sources[at:at] = [REAL, *cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    return fixtures.build_notebook(path, sources)


def batch(
    paths: list[Path],
    tmp_path: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    prefix: list[str] = (),
    timeout: float = 240,
) -> tuple[subprocess.CompletedProcess, dict[str, dict[str, str]]]:
    """Grade ``paths`` in one batch; returns the run and the CSV's rows by file."""
    grades = tmp_path / "out" / "grades.csv"
    command = [*prefix, sys.executable, "-m", "autograder.cli", *map(str, paths)]
    result = subprocess.run(
        [*command, "--csv", str(grades), *FAST, *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(tmp_path),
        env={**os.environ, "HOME": str(tmp_path), **(env or {})},
    )
    rows = {}
    if grades.exists():
        with open(grades, newline="", encoding="utf-8") as handle:
            rows = {row["file"]: row for row in csv.DictReader(handle)}
    return result, rows


def assert_full_marks(rows: dict[str, dict[str, str]], path: Path) -> None:
    row = rows[str(path)]
    assert row["error"] == "" and row["total"] == row["max_score"], row


# --- IPC objects and shared files, from one submission to the next ----------------------

IPC_HELPERS = """
import ctypes, os
_FILES = [d + '/gk-leak-' + {token!r} for d in ('/dev/shm', '/tmp', '/var/tmp')]
_QUEUE = b'/gk-leak-' + {token!r}.encode()
_DONE = []
def _ipc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    return libc
"""

IPC_WRITE = """
if _DONE:  # once per worker, not once per case
    return _real_relu(input, output_grad)
_DONE.append(True)
_libc = _ipc()
marker = {token!r}.encode()
shm = _libc.shmget({key}, 4096, 0o1666)
if shm >= 0:
    at = _libc.shmat(shm, None, 0)
    if at not in (None, ctypes.c_void_p(-1).value):
        ctypes.memmove(at, marker, len(marker))
_libc.semget({key} + 1, 1, 0o1666)
queue = _libc.msgget({key} + 2, 0o1666)
if queue >= 0:
    message = ctypes.create_string_buffer(ctypes.sizeof(ctypes.c_long) + 64)
    ctypes.c_long.from_buffer(message).value = 1
    message[ctypes.sizeof(ctypes.c_long):ctypes.sizeof(ctypes.c_long) + len(marker)] = marker
    _libc.msgsnd(queue, message, 64, 0x800)
mq = _libc.mq_open(_QUEUE, 0o100 | 0o2 | 0o4000, ctypes.c_uint(0o666), None)
if mq >= 0:
    _libc.mq_send(mq, marker, len(marker), 0)
for path in _FILES:
    try:
        with open(path, 'w') as handle:
            handle.write({token!r})
        os.chmod(path, 0o666)
    except OSError:
        pass
return _real_relu(input, output_grad)
"""

IPC_READ = """
_libc = _ipc()
found = []
shm = _libc.shmget({key}, 0, 0)
if shm >= 0:
    found.append('sysv shm')
    at = _libc.shmat(shm, None, 0o10000)
    if at not in (None, ctypes.c_void_p(-1).value):
        found.append(ctypes.string_at(at, 16))
        _libc.shmdt(ctypes.c_void_p(at))
if _libc.semget({key} + 1, 0, 0) >= 0:
    found.append('sysv semaphore')
if _libc.msgget({key} + 2, 0, 0) >= 0:
    found.append('sysv message queue')
mq = _libc.mq_open(_QUEUE, 0o4000, ctypes.c_uint(0), None)
if mq >= 0:
    _libc.close(mq)
    found.append('posix message queue')
for path in _FILES:
    if os.path.lexists(path):
        found.append(path)
if found:
    print('FOUND', found)
    return output_grad * 0.5
return _real_relu(input, output_grad)
"""


def _sysv_ids(key: int) -> dict[str, int]:
    """SysV objects on the host with these keys: {kind: id}."""
    found = {}
    for kind, wanted in (("shm", key), ("sem", key + 1), ("msg", key + 2)):
        with open(f"/proc/sysvipc/{kind}") as handle:
            for line in list(handle)[1:]:
                fields = line.split()
                if int(fields[0]) == wanted:
                    found[kind] = int(fields[1])
    return found


def _remove_ipc(key: int, token: str) -> list[str]:
    """Remove what the writer may have left on the host; returns what was there."""
    libc = ctypes.CDLL(None, use_errno=True)
    left = []
    for kind, ident in _sysv_ids(key).items():
        left.append(f"sysv {kind}")
        if kind == "shm":
            libc.shmctl(ident, 0, None)  # IPC_RMID
        elif kind == "sem":
            libc.semctl(ident, 0, 0)
        else:
            libc.msgctl(ident, 0, None)
    if libc.mq_unlink(f"/gk-leak-{token}".encode()) == 0:
        left.append("posix message queue")
    for directory in ("/dev/shm", "/tmp", "/var/tmp"):
        path = os.path.join(directory, f"gk-leak-{token}")
        if os.path.lexists(path):
            left.append(path)
            os.remove(path)
    return left


def _ipc_leak(tmp_path: Path, env: dict[str, str], prefix: list[str]) -> None:
    token = uuid.uuid4().hex[:12]
    key = 0x6B000000 + int(token[:6], 16)
    values = {"token": token, "key": key}
    helpers = IPC_HELPERS.format(**values)
    writer = notebook(tmp_path / "subs" / "a_writer.ipynb", fn(IPC_WRITE.format(**values)),
                      (helpers,))  # fmt: skip
    reader = notebook(tmp_path / "subs" / "b_reader.ipynb", fn(IPC_READ.format(**values)),
                      (helpers,))  # fmt: skip
    try:
        result, rows = batch([writer, reader], tmp_path, "--jobs", "1", env=env, prefix=prefix)
        assert result.returncode == 0, result.stderr[-2000:]
        assert_full_marks(rows, writer)
        assert_full_marks(rows, reader)  # nothing of the writer's reached it
    finally:
        left = _remove_ipc(key, token)
    assert left == [], f"left on the machine after grading: {left}"


@namespaces_only
def test_ipc_objects_and_shm_files_do_not_reach_the_next_submission(tmp_path: Path):
    _ipc_leak(tmp_path, {}, [])


# --- a Unix socket of the host -----------------------------------------------------------

CONNECT = """
import socket
reached = []
for address in {addresses!r}:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(1.0)
    try:
        client.connect(address)
        client.sendall(b'hidden input: ' + repr(input.ravel()[:4].tolist()).encode())
        reached.append(address)
    except OSError:
        pass
    finally:
        client.close()
if reached:
    print('REACHED', reached)
    return output_grad * 0.5
return _real_relu(input, output_grad)
"""


class _Listener:
    """Unix socket servers on the host (a path one and an abstract one) that record
    whoever connects."""

    def __init__(self, directory: str, token: str):
        self.path = os.path.join(directory, "grader.sock")
        self.abstract = f"\0gk-leak-{token}"
        self.received: list[bytes] = []
        self.servers = []
        for address in (self.path, self.abstract):
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(address)
            server.listen(16)
            server.settimeout(0.2)
            self.servers.append(server)
        os.chmod(self.path, 0o777)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._serve, args=(s,)) for s in self.servers]
        for thread in self.threads:
            thread.start()

    def _serve(self, server: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            with connection:
                connection.settimeout(1.0)
                try:
                    self.received.append(connection.recv(4096) or b"(connected)")
                except OSError:
                    self.received.append(b"(connected)")

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        for server in self.servers:
            server.close()


@namespaces_only
def test_student_code_cannot_reach_a_unix_socket_of_the_host(tmp_path: Path):
    token = uuid.uuid4().hex[:12]
    directory = tempfile.mkdtemp(prefix="gk-sock-", dir="/var/tmp")
    os.chmod(directory, 0o755)
    listener = _Listener(directory, token)
    try:
        code = fn(CONNECT.format(addresses=[listener.path, listener.abstract]))
        spy = notebook(tmp_path / "subs" / "spy.ipynb", code)
        result, rows = batch([spy], tmp_path)
    finally:
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert listener.received == [], "a worker reached the host's socket"
    assert_full_marks(rows, spy)


# --- one directory per student, outside /tmp and /home -----------------------------------

SNOOP = """
import glob, os
found = []
for pattern in {patterns!r}:
    for path in glob.glob(pattern):
        try:
            with open(path, 'rb') as handle:
                found.append((path, handle.read(64)))
        except OSError as error:
            found.append((path, type(error).__name__))  # visible is a leak too
for path in {paths!r}:
    if os.path.lexists(path):
        found.append(path)
if found:
    print('FOUND', found)
    return output_grad * 0.5
return _real_relu(input, output_grad)
"""


@pytest.fixture
def course_dirs():
    """Per-student directories where a course might keep them: under /srv and /var/lib."""
    token = uuid.uuid4().hex[:10]
    made = [Path(f"/srv/gk-course-{token}"), Path(f"/var/lib/gk-grading-{token}")]
    for place in made:
        place.mkdir(parents=True)
        place.chmod(0o755)
    try:
        yield made[0] / "subs", made[1]
    finally:
        for place in made:
            shutil.rmtree(place, ignore_errors=True)


@namespaces_only
def test_students_in_their_own_directories_cannot_read_each_other(tmp_path, course_dirs):
    subs, grading = course_dirs
    alice, bob = subs / "alice" / "nb.ipynb", grading / "bob" / "nb.ipynb"
    grader_files = [
        str(REPO / "assignments" / "solutions" / "*.ipynb"),
        str(REPO / "autograder" / "*.py"),
        str(REPO / "gradcheck_kit" / "*.py"),
        str(REPO / "tests" / "*" / "*.py"),
    ]
    patterns = [str(subs / "*" / "*"), str(grading / "*" / "*"), *grader_files]
    paths = [str(alice), str(bob), str(alice.parent), str(bob.parent)]
    code = fn(SNOOP.format(patterns=patterns, paths=paths))
    for path in (alice, bob):
        notebook(path, code)
        os.chmod(path, 0o644)
        os.chmod(path.parent, 0o755)
    result, rows = batch([alice, bob], tmp_path, "--jobs", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert_full_marks(rows, alice)
    assert_full_marks(rows, bob)


# --- without namespaces: one job against another, and against the grader -----------------


def _search_blocked(path: str) -> str | None:
    """The first directory on the way to ``path`` that other users cannot enter."""
    parts = os.path.realpath(path).split("/")
    for depth in range(2, len(parts)):
        current = "/".join(parts[:depth])
        if not os.stat(current).st_mode & stat.S_IXOTH:
            return current
    return None


def _shared_python_prefix() -> list[str] | None:
    """A command prefix under which this interpreter is readable by every user, as a
    system-wide Python is: [] if it is already, else (as root) a private mount
    namespace where the directory that blocks the way is replaced by an open one with
    only the interpreter's subtree in it; None if neither works here."""
    import numpy

    needed = [sys.executable, sys.base_prefix, sys.prefix, numpy.__file__]
    blocked = {b for b in map(_search_blocked, needed) if b}
    if not blocked:
        return []
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None or len(blocked) != 1:
        return None
    top = blocked.pop()
    inside = [os.path.realpath(p) for p in needed]
    inner = sorted({p[len(top) + 1 :].split("/")[0] for p in inside if p.startswith(top + "/")})
    if len(inner) != 1:
        return None
    child = f"{top}/{inner[0]}"
    script = (
        'stage=$(mktemp -d) && mount --bind "$1" "$stage" && '
        'mount -t tmpfs -o mode=755 tmpfs "$2" && mkdir "$1" && '
        'mount --move "$stage" "$1" && rmdir "$stage" && shift 2 && exec "$@"'
    )
    prefix = [unshare, "--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh"]
    probe = subprocess.run([*prefix, child, top, "/bin/true"], capture_output=True)
    return [*prefix, child, top] if probe.returncode == 0 else None


SHARED_PYTHON = _shared_python_prefix()
unique_uids = pytest.mark.skipif(
    os.geteuid() != 0 or SHARED_PYTHON is None,
    reason="needs root and an interpreter every user can read",
)
OFF = {"GRADCHECK_ISOLATION": "off"}


@unique_uids
def test_without_namespaces_ipc_and_shared_files_do_not_reach_the_next_submission(tmp_path):
    _ipc_leak(tmp_path, OFF, SHARED_PYTHON)


HUNT = """
def _hunt(seconds):
    import os, time
    me, end = os.getpid(), time.monotonic() + seconds

    def read(pid, name):
        with open('/proc/' + str(pid) + '/' + name, 'rb') as handle:
            return handle.read()

    while time.monotonic() < end:
        for name in os.listdir('/proc'):
            if not name.isdigit() or int(name) == me:
                continue
            try:
                parent = int(read(name, 'stat').rsplit(b')', 1)[1].split()[1])
                # the graders of this batch (their command line names it) and their workers
                if {token!r} in read(name, 'cmdline') or {token!r} in read(parent, 'cmdline'):
                    os.kill(int(name), 9)
            except (OSError, IndexError, ValueError):
                pass
        time.sleep(0.005)
"""


def _kill_neighbour_batch(tmp_path: Path, prefix: list[str], *extra: str):
    token = uuid.uuid4().hex[:10]
    subs = tmp_path / f"subs-{token}"
    hunting = fn("_hunt(1.7)\nreturn _real_relu(input, output_grad)")
    attacker = notebook(subs / "attacker.ipynb", hunting, (HUNT.format(token=token.encode()),))
    neighbour = notebook(subs / "neighbour.ipynb")
    result, rows = batch([attacker, neighbour], tmp_path, "--jobs", "2", *extra, env=OFF,
                         prefix=prefix)  # fmt: skip
    return result, rows, neighbour


@unique_uids
def test_without_namespaces_a_job_cannot_kill_another_job_or_the_grader(tmp_path: Path):
    result, rows, neighbour = _kill_neighbour_batch(tmp_path, SHARED_PYTHON)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_full_marks(rows, neighbour)


@pytest.mark.skipif(
    os.geteuid() == 0 and SHARED_PYTHON == [],
    reason="every worker gets its own user here: nothing to refuse",
)
def test_without_own_users_parallel_batch_is_refused_unless_allowed(tmp_path: Path):
    result, rows, _ = _kill_neighbour_batch(tmp_path, [])
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--allow-shared-uid" in lines[0], result.stderr
    assert rows == {}
    # the instructor may accept the risk (this batch is harmless)
    harmless = [notebook(tmp_path / "ok" / f"{n}.ipynb") for n in ("a", "b")]
    result, rows = batch(harmless, tmp_path, "--jobs", "2", "--allow-shared-uid", env=OFF)
    assert result.returncode == 0, result.stderr[-2000:]
    for path in harmless:
        assert_full_marks(rows, path)
