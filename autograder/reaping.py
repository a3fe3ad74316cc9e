"""Reaping: making sure nothing a worker started outlives it.

Inside a PID namespace the kernel ends everything with the worker. Without one, the
grader kills the worker's process group and every descendant it can find, and, as a
child subreaper, whatever the worker detached (``setsid``, double fork).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import threading
import time

live_workers: set[int] = set()
#: the account of each worker that runs as a uid of its own (without namespaces)
accounts: dict[int, object] = {}
#: world-writable places where a worker user can leave files (and those below them)
SHARED_PLACES = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/dev/mqueue")
#: held while a worker is started and while orphans are looked for (batch mode runs
#: sandboxes in threads: a worker not yet registered must not pass for an orphan)
workers_lock = threading.Lock()


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
    with workers_lock:
        orphans = [p for p in children.get(os.getpid(), []) if p not in live_workers]
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


def descendants(pid: int) -> list[int]:
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


def cpu_seconds(pid: int) -> float | None:
    """CPU time spent so far by ``pid``, its threads and every process below it, as the
    kernel counts it (``/proc/<pid>/task/<tid>/schedstat``, in nanoseconds): code in
    those processes cannot change it. None where the kernel does not say."""
    total, seen = 0, 0
    for process in [pid, *descendants(pid)]:
        try:
            tasks = os.listdir(f"/proc/{process}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{process}/task/{task}/schedstat", "rb") as handle:
                    total += int(handle.read().split()[0])
                    seen += 1
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9 if seen else None


def wait_gone(pids: list[int], deadline: float) -> None:
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


def kill_worker(process: subprocess.Popen, orphans: bool) -> None:
    """Kill ``process`` (a worker), its process group and every descendant, wait for
    them, and with ``orphans`` also whatever it detached and was re-parented to us."""
    inside = descendants(process.pid)
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
            if stream is not None:
                stream.close()
        except OSError:
            pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    live_workers.discard(process.pid)
    wait_gone(inside, time.monotonic() + 2.0)
    if orphans:
        end_orphans()  # a PID namespace would have ended them with the worker
    account = accounts.pop(process.pid, None)
    if account is not None:
        clear_account(account.uid)
        account.release()


def clear_account(uid: int) -> None:
    """Remove everything ``uid`` (a worker's own account) has left: its processes,
    its SysV IPC objects and its files in the shared writable places, so that the
    next holder of the id, or the next submission, finds none of it."""
    _kill_user(uid)
    _remove_sysv_ipc(uid)
    for place in SHARED_PLACES:
        _remove_owned(place, uid)


def _user_processes(uid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as handle:
                text = handle.read()
        except OSError:
            continue
        state = ids = None
        for line in text.splitlines():
            if line.startswith(b"State:"):
                state = line.split()[1:2]
            elif line.startswith(b"Uid:"):
                ids = [int(v) for v in line.split()[1:]]
                break
        if ids and uid in ids and state != [b"Z"]:
            found.append(int(name))
    return found


def _kill_user(uid: int) -> None:
    """Kill every process of ``uid`` (real, effective, saved or file-system id): it
    cannot fork (its process limit is 0), so a few rounds end them all."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        pids = _user_processes(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.002)


def _remove_sysv_ipc(uid: int) -> None:
    """Shared memory, semaphore sets and message queues owned or created by ``uid``."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    remove = {
        "shm": lambda ident: libc.shmctl(ident, 0, None),  # IPC_RMID
        "sem": lambda ident: libc.semctl(ident, 0, 0),
        "msg": lambda ident: libc.msgctl(ident, 0, None),
    }
    for kind, rmid in remove.items():
        try:
            with open(f"/proc/sysvipc/{kind}") as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        header = lines[0].split() if lines else []
        if "uid" not in header or "cuid" not in header:
            continue
        columns = (header.index("uid"), header.index("cuid"), 1)
        for line in lines[1:]:
            fields = line.split()
            try:
                owner, creator, ident = (int(fields[c]) for c in columns)
            except (IndexError, ValueError):
                continue
            if uid in (owner, creator):  # the owner can be changed, the creator not
                rmid(ident)


def _remove_owned(directory: str, uid: int, depth: int = 0) -> None:
    """Delete what ``uid`` owns in ``directory``, and look into the world-writable
    directories below it (the only other places it could write)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if info.st_uid == uid:
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass
        elif stat.S_ISDIR(info.st_mode) and info.st_mode & 0o002 and depth < 8:
            _remove_owned(entry.path, uid, depth + 1)
