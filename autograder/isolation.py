"""Isolation of the worker that runs student code: what the grader asks for, and how
the worker sets it up on itself before any student code runs.

The grader side probes which namespaces this machine offers (``unshare``), picks the
account student code runs as, and lists what the worker must not see. It sends the
result to the worker as one :class:`WorkerConfig`. The worker side applies it: resource
limits, a read-only file system with private scratch space and hidden directories, and
an unprivileged user (or no capabilities). SECURITY.md has the whole picture.

This module imports only the standard library: the worker loads it by path (it may
not import the ``autograder`` package).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs to know to lock itself down, sent as its first message."""

    memory_bytes: int = 3 * 1024**3
    cpu_seconds: int = 600
    #: the account student code runs as (root only); None keeps the current one
    uid: int | None = None
    gid: int | None = None
    #: the account was chosen by the grader, not the instructor: give it up (and drop
    #: capabilities instead) if it cannot read the interpreter
    uid_auto: bool = False
    #: the worker was started inside fresh PID, mount and network namespaces
    namespaces: bool = False
    #: directories to hide (namespaces only)
    hide: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> WorkerConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["hide"] = tuple(values.get("hide", ()))
        return cls(**values)


# --- the grader side -------------------------------------------------------------

#: set GRADCHECK_ISOLATION=off to run workers without namespaces (diagnostics, tests)
ISOLATION_ENV = "GRADCHECK_ISOLATION"
_UNSHARE = ["--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--net"]
_broken_namespaces = False


def mark_namespaces_broken() -> None:
    """A worker could not set itself up in the namespaces (an unusual mount table):
    workers run without them from now on."""
    global _broken_namespaces
    _broken_namespaces = True


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


def use_namespaces(options) -> bool:
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


def worker_account(options) -> tuple[int, int] | None:
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


def hidden_directories(options) -> list[str]:
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


# --- the worker side ----------------------------------------------------------


def _limit(kind, value):
    try:
        soft, hard = resource.getrlimit(kind)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        pass  # a limit the platform does not support is not worth failing over


def apply_limits(config: WorkerConfig) -> None:
    """The resource limits of a worker, set before any student code runs."""
    _limit(resource.RLIMIT_AS, config.memory_bytes)
    _limit(resource.RLIMIT_CPU, config.cpu_seconds)
    _limit(resource.RLIMIT_NOFILE, 64)
    _limit(resource.RLIMIT_FSIZE, 16 * 1024 * 1024)
    _limit(resource.RLIMIT_NPROC, 0)
    _limit(resource.RLIMIT_CORE, 0)


# --- the worker side: run as root inside fresh namespaces, before student code ---

_MS = {
    "ro": 1,
    "nosuid": 2,
    "nodev": 4,
    "noexec": 8,
    "noatime": 1024,
    "nodiratime": 2048,
    "relatime": 1 << 21,
    "strictatime": 1 << 24,
}
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC = 1, 32, 4096, 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE = 1, 24, 38, 4
#: what a private tmpfs may hold: /tmp and /dev/shm, and the empty ones that hide
_TMPFS_SIZE = {"/tmp": "64m", "/dev/shm": "16m"}


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _mount(libc, source, target, fstype, flags, data=None):
    ctypes = libc[0]
    args = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    if libc[1].mount(args[0], args[1], args[2], ctypes.c_ulong(flags), args[3]) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def _unescape(text):
    """A mountinfo field: space, tab, newline and backslash are written as ``\\ooo``."""
    parts = text.split("\\")
    out = parts[0]
    for part in parts[1:]:
        out += chr(int(part[:3], 8)) + part[3:] if part[:3].isdigit() else "\\" + part
    return out


def _mounts():
    """(mount point, per-mount flags) of every mount in this namespace."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            fields = line.split()
            point = _unescape(fields[4])
            flags = sum(_MS.get(option, 0) for option in fields[5].split(","))
            found.append((point, flags))
    return found


def _inside(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


def _keep_paths():
    """Directories student code needs after the lockdown: the interpreter, the standard
    library and NumPy (imported lazily by submodule)."""
    import numpy as np

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    paths.add(os.path.dirname(os.path.dirname(os.path.realpath(np.__file__))))
    paths.add(os.path.dirname(os.path.realpath(os.__file__)))  # the standard library
    return {os.path.realpath(p) for p in paths if p and os.path.isdir(p)}


def _lock_filesystem(libc, hide):
    """Make every mount read-only; a private tmpfs on /tmp and /dev/shm; empty
    read-only directories over what student code must not read (the grader's
    repository, the submissions' directories, home directories), with the
    interpreter, the standard library and NumPy mapped back in; and the worker's own
    directory, writable, at its usual path."""
    home = os.getcwd()
    keep = sorted(_keep_paths())
    held = {}
    for path in [*keep, home]:
        held[path] = os.open(path, os.O_PATH | os.O_DIRECTORY)
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    for point, flags in _mounts():  # parents first (a parent after its child: EBUSY)
        if point.startswith("/proc/"):
            continue
        try:
            _mount(libc, None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except OSError:
            if point == "/":
                raise
    # shallow first, so a kept directory inside a hidden one is mapped back in, and a
    # hidden one inside a kept one (a package inside site-packages) is hidden again
    steps = [(p, "tmp") for p in _TMPFS_SIZE if os.path.isdir(p)]
    # (a hidden directory that is itself needed, say a grader run from inside the
    # virtual environment, stays visible)
    steps += [(p, "hide") for p in hide if os.path.isdir(p) and p not in (*_TMPFS_SIZE, *keep)]
    steps += [(p, "keep") for p in keep if any(_inside(p, h) for h, _ in steps)]
    steps.sort(key=lambda step: (step[0].count("/"), step[1] != "keep"))
    frozen = []
    for path, kind in steps:
        if kind == "keep":
            os.makedirs(path, exist_ok=True)
            _mount(libc, f"/proc/self/fd/{held[path]}", path, None, MS_BIND | MS_REC)
            _mount(libc, None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        elif os.path.isdir(path):  # gone: an earlier layer hides it already
            mode = "1777" if kind == "tmp" else "755"
            options = f"size={_TMPFS_SIZE.get(path, '1m')},mode={mode}"
            _mount(libc, "tmpfs", path, "tmpfs", 2 | 4, options)  # nosuid, nodev
            frozen += [path] if kind == "hide" else []
    os.makedirs(home, exist_ok=True)
    _mount(libc, f"/proc/self/fd/{held[home]}", home, None, MS_BIND)
    # a bind mount starts with the flags of its source, read-only by now
    _mount(libc, None, home, None, MS_REMOUNT | MS_BIND | 2 | 4)
    # the mount points inside the hiding layers exist now: make those read-only
    for path in frozen:
        _mount(libc, None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | 2 | 4)
    os.chdir(home)
    for fd in held.values():
        os.close(fd)


def _reachable(path):
    """Whether a user with no rights of its own can list ``path``."""
    parts = os.path.realpath(path).split("/")
    for depth in range(1, len(parts) + 1):
        try:
            mode = os.stat("/".join(parts[:depth]) or "/").st_mode
        except OSError:
            return False
        if not mode & 0o001:  # searchable by others
            return False
    return bool(mode & 0o004)


def _drop_privileges(libc, config):
    """Become the worker user if one was given (root only), else, as root, drop every
    capability: without CAP_SYS_RESOURCE the process limit holds for root too, and
    without CAP_SYS_ADMIN the mounts above cannot be undone. No new privileges either
    way (no set-uid programs, no file capabilities)."""
    ctypes, c = libc
    uid = config.uid
    if config.uid_auto and not all(_reachable(p) for p in _keep_paths()):
        uid = None  # the interpreter lives where that user cannot read it
    if uid is not None and os.geteuid() == 0:
        gid = config.gid if config.gid is not None else uid
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    elif os.geteuid() == 0:
        for cap in range(64):
            c.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
        data = (ctypes.c_uint32 * 6)()
        if c.capset(header, data) != 0:
            raise OSError(ctypes.get_errno(), "capset failed")
    c.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    c.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    # credentials changed: the kill on the launcher's death has to be asked for again
    c.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def isolate(config: WorkerConfig, hide_modules: tuple[str, ...] = ()) -> list[str]:
    """Set up what the grader asked for; returns what is in force (for the grader's
    diagnostics). Failing to isolate a worker that was told to is fatal: the grader
    then falls back to an unisolated worker only if it was told to allow that."""
    active = []
    if config.namespaces:
        active += ["pid", "net", "mount"]
        hide = list(config.hide)
        for module in hide_modules:
            loaded = sys.modules.get(module)
            if loaded is not None and getattr(loaded, "__file__", None):
                hide.append(os.path.dirname(os.path.realpath(loaded.__file__)))
        hide.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        hide = sorted({os.path.realpath(p) for p in hide} - {"/"})
        _lock_filesystem(_libc(), hide)
        active.append("filesystem")
    if sys.platform.startswith("linux"):
        try:
            _drop_privileges(_libc(), config)
            active.append("user" if os.getuid() != 0 else "no-capabilities")
        except OSError:
            if config.namespaces:
                raise
    return active
