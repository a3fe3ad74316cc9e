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
_UNSHARE = ["--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--net", "--ipc"]
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
    if _interpreter_readable(options):
        return account.pw_uid, account.pw_gid
    return None


#: without namespaces, as root, every worker runs as a uid (and gid) of its own from
#: here: above what distributions and container tools hand out, below 2**31 (which
#: some tools take for negative)
OWN_IDS = range(1_900_000_000, 1_901_000_000)


class OwnAccount:
    """A uid (and the same gid) that no other worker of this machine holds: a lock
    file per id, held while the worker lives and released (by the kernel, should the
    grader die) afterwards."""

    def __init__(self, uid: int, fd: int, path: str):
        self.uid, self.gid, self._fd, self._path = uid, uid, fd, path

    def release(self) -> None:
        if self._fd < 0:
            return
        try:  # unlinked while locked: whoever opens the name next gets a new file
            os.unlink(self._path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = -1


def _lock_directory() -> str | None:
    """A directory only root can write, for the id locks (None: none to be had)."""
    import stat
    import tempfile

    for base in ("/run", tempfile.gettempdir()):
        path = os.path.join(base, "gradcheck-kit-ids")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            continue
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == 0 and not info.st_mode & 0o077:
            return path
    return None


def own_account() -> OwnAccount | None:
    """A fresh account for one worker (root only): a uid in :data:`OWN_IDS` that no
    other worker holds and no user or group of this machine has."""
    import fcntl
    import grp
    import pwd
    import secrets

    directory = _lock_directory() if os.geteuid() == 0 else None
    if directory is None:
        return None
    for _ in range(64):
        uid = OWN_IDS[secrets.randbelow(len(OWN_IDS))]
        path = os.path.join(directory, str(uid))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # its last holder unlinked it between our open and our lock: not ours
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise BlockingIOError
        except OSError:
            os.close(fd)
            continue
        account = OwnAccount(uid, fd, path)
        try:
            pwd.getpwuid(uid)
        except KeyError:
            try:
                grp.getgrgid(uid)
            except KeyError:
                return account
        account.release()
    return None


def _interpreter_readable(options) -> bool:
    import numpy

    needed = [options.python, sys.base_prefix, sys.prefix, os.path.dirname(numpy.__file__)]
    return all(_readable_by_others(p) for p in needed)


def shared_uid_reason(options) -> str | None:
    """Why workers graded at the same time would run as one user, able to signal and
    trace each other (and, as uid 0, the grader); None when they cannot: namespaces,
    or as root a uid of its own per worker."""
    if use_namespaces(options):
        return None
    if os.geteuid() != 0:
        return "not running as root, every worker runs as this user"
    if options.user:
        return f"every worker runs as --worker-user {options.user}"
    if not _interpreter_readable(options):
        return "the interpreter is not readable by other users, so workers stay uid 0"
    if _lock_directory() is None:
        return "no root-only directory to allocate worker ids in"
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
    # POSIX message queues live in the IPC namespace, not in any file system the
    # grader could clean: none may be created (each is charged to this limit)
    _limit(resource.RLIMIT_MSGQUEUE, 0)


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
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 1, 2, 4, 32
MS_BIND, MS_MOVE, MS_REC = 4096, 8192, 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE = 1, 24, 38, 4
#: what a private tmpfs may hold: /tmp and /dev/shm, and the empty ones that hide
_TMPFS_SIZE = {"/tmp": "64m", "/dev/shm": "16m"}
#: shared libraries the interpreter and extension modules load later (ctypes' libffi...)
_SYSTEM_TREES = ("/lib", "/lib64", "/lib32", "/libx32", "/usr/lib", "/usr/lib64", "/usr/lib32")
_SYSTEM_TREES += ("/usr/libx32", "/usr/share/zoneinfo")
#: what the dynamic loader and the C library read from /etc
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime")
_DEVICES = ("null", "zero", "full", "random", "urandom")
_DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1"}
_DEV_LINKS["stderr"] = "/proc/self/fd/2"
#: pivot_root has no C library wrapper: its system call number, per architecture
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "loongarch64": 41}
_SYS_PIVOT_ROOT |= {"i386": 217, "i686": 217, "s390x": 217, "ppc64le": 203, "ppc64": 203}
_SYS_PIVOT_ROOT |= {"armv7l": 218, "armv8l": 218}


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


def _interpreter_paths():
    """Directories student code needs after the lockdown: the interpreter, the standard
    library and NumPy (imported lazily by submodule)."""
    import numpy as np

    paths = {os.path.dirname(os.path.realpath(sys.executable))}
    paths.add(os.path.dirname(os.path.dirname(os.path.realpath(np.__file__))))
    paths.add(os.path.dirname(os.path.realpath(os.__file__)))  # the standard library
    return {os.path.realpath(p) for p in paths if p and os.path.isdir(p)}


def _visible_paths(hide):
    """Everything the worker's new root shows, read-only: the interpreter and NumPy,
    the site-packages on ``sys.path``, the directories of every shared library loaded
    so far, and the system library trees; each at its real path and at the path
    Python knows it by. Of ``sys.path``, nothing else inside ``hide`` (the script's
    own directory, a grader checkout put on the path)."""
    wanted = set(_interpreter_paths())
    wanted.add(os.path.dirname(os.path.abspath(os.__file__)))
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        library = os.path.basename(entry) in ("site-packages", "dist-packages", "lib-dynload")
        if library or not any(_inside(os.path.realpath(entry), h) for h in hide):
            wanted.add(entry)
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                parts = line.split(None, 5)
                name = parts[5].strip() if len(parts) == 6 else ""
                if name.startswith("/") and not name.endswith("(deleted)"):
                    wanted.add(os.path.dirname(name))
    except OSError:
        pass
    wanted |= {p for p in _SYSTEM_TREES if os.path.isdir(p) and not os.path.islink(p)}
    found = set()
    for path in wanted:
        for form in {os.path.abspath(path), os.path.realpath(path)}:
            if form != "/" and os.path.isdir(form):
                found.add(form)

    def covered(path):  # shown by a tree around it, with nothing hidden in between
        return any(
            outer != path
            and _inside(path, outer)
            and not any(_inside(h, outer) and _inside(path, h) for h in hide)
            for outer in found
        )

    return sorted(p for p in found if not covered(p))


def _flags_at(mounts, path):
    """The per-mount flags of the mount holding ``path``: a read-only remount inside a
    user namespace must keep them (nosuid, nodev... are locked there)."""
    best, flags = "", 0
    for point, mount_flags in mounts:
        if _inside(path, point) and len(point) >= len(best):
            best, flags = point, mount_flags
    return flags & ~MS_RDONLY


def _bind(libc, fd, target, flags, read_only=True):
    source = f"/proc/self/fd/{fd}"
    try:
        _mount(libc, source, target, None, MS_BIND)
    except OSError:  # mounts below it that a user namespace may not split off
        _mount(libc, source, target, None, MS_BIND | MS_REC)
    if read_only:
        _mount(libc, None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)


def _pivot(libc, root):
    """Make ``root`` the root of this mount namespace and detach the old one, so no
    path, however it is spelled, leads back to the machine's file system."""
    import platform

    ctypes, c = libc
    os.chdir(root)
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is not None and c.syscall(number, b".", b".") == 0:
        if c.umount2(b".", MNT_DETACH) != 0:
            raise OSError(ctypes.get_errno(), "umount of the old root failed")
    else:  # no pivot_root here (the root is an initramfs, say): move and chroot
        _mount(libc, ".", "/", None, MS_MOVE)
        os.chroot(".")
    os.chdir("/")


def _lock_filesystem(libc, hide):
    """Give the worker a new root holding only what Python and NumPy need (see
    :func:`_visible_paths`), read-only; a minimal /dev, its own /proc, private tmpfs
    on /tmp and /dev/shm, and the worker's own directory, writable, at its usual path.
    Submissions, solutions, the grader, the machine's sockets and the shared scratch
    places are simply not there. A directory in ``hide`` that lies inside a kept tree
    (a grader installed into site-packages) gets an empty read-only tmpfs on top."""
    home = os.getcwd()
    hide = sorted(set(hide) - {"/"})
    visible = _visible_paths(hide)
    mounts = _mounts()
    held = {}

    def hold(path, directory=True):
        flags = os.O_PATH | (os.O_DIRECTORY if directory else 0)
        held[path] = os.open(path, flags | os.O_CLOEXEC)
        return held[path]

    for path in [*visible, home, "/proc"]:
        hold(path)
    etc = [n for n in _ETC if os.path.lexists(f"/etc/{n}")]
    for name in etc:
        if not os.path.islink(f"/etc/{name}"):
            hold(f"/etc/{name}", os.path.isdir(f"/etc/{name}"))
    devices = [n for n in _DEVICES if os.path.exists(f"/dev/{n}")]
    for name in devices:
        hold(f"/dev/{name}", directory=False)
    links = {p: os.readlink(p) for p in (n.rstrip("/") for n in _SYSTEM_TREES) if os.path.islink(p)}
    links |= {p: os.readlink(p) for p in ("/bin", "/sbin") if os.path.islink(p)}

    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    root = "/tmp"  # any directory: what was under it is reached through ``held``
    _mount(libc, "tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for path, target in links.items():
        os.symlink(target, root + path)
    os.makedirs(root + "/etc")
    for name in etc:
        if os.path.islink(f"/etc/{name}"):
            os.symlink(os.readlink(f"/etc/{name}"), f"{root}/etc/{name}")
        elif os.path.isdir(f"/etc/{name}"):
            os.mkdir(f"{root}/etc/{name}")
        else:
            open(f"{root}/etc/{name}", "w").close()
    os.makedirs(root + "/dev")
    for name in devices:
        open(f"{root}/dev/{name}", "w").close()
    for name, target in _DEV_LINKS.items():
        os.symlink(target, f"{root}/dev/{name}")
    os.makedirs(root + "/proc")

    # shallow first, so a kept directory inside a hidden one is mapped back in, and a
    # hidden one inside a kept one (a package inside site-packages) is hidden again
    steps = [(p, "tmp") for p in _TMPFS_SIZE]
    steps += [(p, "keep") for p in visible]
    steps += [(p, "hide") for p in hide if p not in visible and p not in _TMPFS_SIZE]
    steps.sort(key=lambda step: (step[0].count("/"), step[1] != "tmp", step[1] != "keep"))
    layers, frozen = [], []
    for path, kind in steps:
        under = [(p, k) for p, k in layers if _inside(path, p)]
        enclosing = max(under, key=lambda layer: len(layer[0]))[1] if under else None
        if kind == "keep":
            if enclosing == "keep":
                continue  # visible through the tree around it already
            os.makedirs(root + path, exist_ok=True)
            _bind(libc, held[path], root + path, _flags_at(mounts, path))
        elif kind == "tmp":
            os.makedirs(root + path, exist_ok=True)
            options = f"size={_TMPFS_SIZE[path]},mode=1777"
            _mount(libc, "tmpfs", root + path, "tmpfs", MS_NOSUID | MS_NODEV, options)
        else:
            if enclosing != "keep" or not os.path.isdir(root + path):
                continue  # not in the new root at all
            _mount(libc, "tmpfs", root + path, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
            frozen.append(root + path)
        layers.append((path, kind))
    for name in etc:
        if f"/etc/{name}" in held:
            _bind(libc, held[f"/etc/{name}"], f"{root}/etc/{name}", _flags_at(mounts, "/etc"))
    for name in devices:
        _bind(libc, held[f"/dev/{name}"], f"{root}/dev/{name}", 0, read_only=False)
    _mount(libc, f"/proc/self/fd/{held['/proc']}", root + "/proc", None, MS_BIND | MS_REC)
    os.makedirs(root + home, exist_ok=True)
    _bind(libc, held[home], root + home, 0, read_only=False)
    # a bind mount starts with the flags of its source: scratch space runs nothing
    _mount(libc, None, root + home, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)
    for path in frozen:
        _mount(libc, None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    _mount(libc, None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for fd in held.values():
        os.close(fd)
    _pivot(libc, root)
    os.chdir(home)


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
    if config.uid_auto and not all(_reachable(p) for p in _interpreter_paths()):
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


CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET = 0x00020000, 0x08000000, 0x40000000


def enter_namespaces() -> None:
    """For a worker forked by the zygote, already process 1 of a PID namespace of its
    own: what ``unshare --mount --mount-proc --net --ipc`` does for a cold one. A
    mount namespace whose mounts no longer propagate to the machine's, a /proc of
    its PID namespace, and network and IPC namespaces of its own."""
    libc = _libc()
    ctypes, c = libc
    if c.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC) != 0:
        raise OSError(ctypes.get_errno(), "unshare failed")
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | 8)  # 8: MS_NOEXEC


def isolate(config: WorkerConfig, hide_modules: tuple[str, ...] = ()) -> list[str]:
    """Set up what the grader asked for; returns what is in force (for the grader's
    diagnostics). Failing to isolate a worker that was told to is fatal: the grader
    then falls back to an unisolated worker only if it was told to allow that."""
    active = []
    if config.namespaces:
        active += ["pid", "net", "mount", "ipc"]
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
