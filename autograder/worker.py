"""The worker: runs a student's code, one op's cases per request.

Started as ``python -I worker.py`` by :mod:`autograder.sandbox`, in a scratch
directory with a scrubbed environment. It trusts nothing it runs and is trusted by
nobody: it only calls student functions and sends back what they returned. Judging
happens in the grader. Only the standard library and NumPy may be imported here; the
wire format comes from ``channel.py`` next to this file, loaded by path.

Protocol (see channel.py for framing): requests ``calibrate`` (time the reference
forwards of the efficiency cases, before any student code exists here), ``load`` (the
extracted source, as top-level chunks) and ``run`` (one op: function name, adapter,
cases, and for an efficiency case the timing of the backward against the forward);
every request gets exactly one reply.

The reference forwards are the one thing taken from the grader's package: it is
imported before student code runs and then made unimportable, like the grader itself.
"""

import io
import os
import resource
import runpy
import signal
import sys
import traceback

# Keep the protocol on private descriptors before student code can print or read.
_PROTO_IN = os.fdopen(os.dup(0), "rb", buffering=0)
_PROTO_OUT = os.fdopen(os.dup(1), "wb")
_devnull = os.open(os.devnull, os.O_RDONLY)
os.dup2(_devnull, 0)
os.close(_devnull)
# Until the file system is locked down (worker isolation, below) output goes nowhere:
# a file open for writing would keep its mount from becoming read-only.
_quiet = os.open(os.devnull, os.O_WRONLY)
os.dup2(_quiet, 1)
os.dup2(_quiet, 2)
os.close(_quiet)
_LOG_FD = -1
sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), write_through=True)
sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", buffering=0), write_through=True)

import numpy as np  # noqa: E402  (after the descriptors are safe)

_channel = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "channel.py"))
encode, decode = _channel["encode"], _channel["decode"]
read_message, write_message = _channel["read_message"], _channel["write_message"]
Unsupported = _channel["Unsupported"]

BLOCKED = frozenset(
    {"torch", "jax", "jaxlib", "tensorflow", "autograd", "gradcheck_kit", "autograder"}
)
OUTPUT_CAP = 4000


class _Blocker:
    """A meta path finder that refuses the frameworks and the grader itself."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"importing {name!r} is not allowed in graded code")
        return None


class _SoftTimeout(BaseException):
    """Raised in student code when an op runs past its time; BaseException so that a
    bare ``except Exception`` in the student's code does not swallow it."""


def _on_alarm(signum, frame):
    raise _SoftTimeout()


def _limit(kind, value):
    try:
        soft, hard = resource.getrlimit(kind)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        pass  # a limit the platform does not support is not worth failing over


def _apply_limits():
    memory = int(os.environ.get("GRADCHECK_WORKER_MEMORY", 3 * 1024**3))
    _limit(resource.RLIMIT_AS, memory)
    _limit(resource.RLIMIT_CPU, int(os.environ.get("GRADCHECK_WORKER_CPU", 600)))
    _limit(resource.RLIMIT_NOFILE, 64)
    _limit(resource.RLIMIT_FSIZE, 16 * 1024 * 1024)
    _limit(resource.RLIMIT_NPROC, 0)
    _limit(resource.RLIMIT_CORE, 0)


# --- isolation: run as root inside fresh namespaces (see sandbox.py and SECURITY.md) ---

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


def _drop_privileges(libc):
    """Become the worker user if one was given (root only), else, as root, drop every
    capability: without CAP_SYS_RESOURCE the process limit holds for root too, and
    without CAP_SYS_ADMIN the mounts above cannot be undone. No new privileges either
    way (no set-uid programs, no file capabilities)."""
    ctypes, c = libc
    uid = os.environ.get("GRADCHECK_WORKER_UID")
    if os.environ.get("GRADCHECK_WORKER_UID_AUTO") == "1" and not all(
        _reachable(p) for p in _keep_paths()
    ):
        uid = None  # the interpreter lives where that user cannot read it
    if uid is not None and os.geteuid() == 0:
        gid = int(os.environ.get("GRADCHECK_WORKER_GID", uid))
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(int(uid), int(uid), int(uid))
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


def _isolate():
    """Set up what the grader asked for; returns what is in force (for the grader's
    diagnostics). Failing to isolate a worker that was told to is fatal: the grader
    then falls back to an unisolated worker only if it was told to allow that."""
    active = []
    if os.environ.get("GRADCHECK_WORKER_NAMESPACES") == "1":
        active += ["pid", "net", "mount"]
        hide = [p for p in os.environ.get("GRADCHECK_WORKER_HIDE", "").split(os.pathsep) if p]
        for module in ("gradcheck_kit", "autograder"):
            loaded = sys.modules.get(module)
            if loaded is not None and getattr(loaded, "__file__", None):
                hide.append(os.path.dirname(os.path.realpath(loaded.__file__)))
        hide.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        hide = sorted({os.path.realpath(p) for p in hide} - {"/"})
        _lock_filesystem(_libc(), hide)
        active.append("filesystem")
    if sys.platform.startswith("linux"):
        try:
            _drop_privileges(_libc())
            active.append("user" if os.getuid() != 0 else "no-capabilities")
        except OSError:
            if os.environ.get("GRADCHECK_WORKER_NAMESPACES") == "1":
                raise
    return active


def _open_log():
    """Student output goes to a file in the worker's directory, read back per request."""
    global _LOG_FD
    _LOG_FD = os.open("output.log", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(_LOG_FD, 1)
    os.dup2(_LOG_FD, 2)


def _take_output():
    """What the student printed since the last call, truncated."""
    try:
        size = os.lseek(_LOG_FD, 0, os.SEEK_END)
        os.lseek(_LOG_FD, 0, os.SEEK_SET)
        data = os.read(_LOG_FD, OUTPUT_CAP + 1)
        os.ftruncate(_LOG_FD, 0)
        os.lseek(_LOG_FD, 0, os.SEEK_SET)
    except OSError:
        return ""
    text = data[:OUTPUT_CAP].decode("utf-8", "replace")
    if size > OUTPUT_CAP:
        text += f"\n... ({size - OUTPUT_CAP} more bytes of output)"
    return text


def _short_traceback(error, filename_prefix="<cell"):
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith("<")]
    lines = [f"{type(error).__name__}: {error}"[:500]]
    for frame in frames[-3:]:
        code = f": {frame.line.strip()}" if frame.line else ""
        lines.append(f"  at line {frame.lineno} in {frame.name}{code}")
    return "\n".join(lines)


def _with_alarm(seconds, fn, *args):  # used for load-time statements
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


class Worker:
    def __init__(self, reference=None):
        # student code gets a __main__ module of its own: ``import __main__`` must not
        # reach this script's globals (the wire format, the checks around each call)
        module = type(sys)("__main__")
        module.__builtins__ = __builtins__
        sys.modules["__main__"] = module
        self.namespace = module.__dict__
        self.timeout = 10.0
        self.reference = reference

    def load(self, request):
        """Execute each top-level chunk on its own, so one failure loses only itself;
        chunks that failed on a missing name are retried once the rest has run
        (a factory may be defined in a later cell than its use)."""
        self.timeout = float(request.get("timeout", self.timeout))
        chunks = request.get("chunks", [])
        failed, errors = [], {}
        bound_by = {}
        for index, chunk in enumerate(chunks):
            error = self._exec(chunk)
            if error is None:
                for name in chunk.get("binds", []):
                    bound_by[name] = index
            else:
                failed.append((index, error))
        for _ in range(3):
            retry = []
            for index, error in failed:
                chunk = chunks[index]
                later = any(bound_by.get(n, -1) > index for n in chunk.get("binds", []))
                if later or not isinstance(error, NameError):
                    errors[index] = error
                    continue
                again = self._exec(chunk)
                if again is None:
                    for name in chunk.get("binds", []):
                        bound_by.setdefault(name, index)
                else:
                    retry.append((index, again))
            if len(retry) == len(failed):
                failed = retry
                break
            failed = retry
        for index, error in failed:
            errors[index] = error
        callables = sorted(
            name for name in request.get("wanted", []) if callable(self.namespace.get(name))
        )
        report = [
            {"chunk": i, "error": _short_traceback(e)[:600]} for i, e in sorted(errors.items())
        ]
        return {"ok": True, "callable": callables, "errors": report, "output": _take_output()}

    def _exec(self, chunk):
        try:
            code = compile(chunk["source"], chunk.get("filename", "<cell>"), "exec")
            _with_alarm(self.timeout, exec, code, self.namespace)
        except _SoftTimeout:
            return TimeoutError("this statement took too long and was skipped")
        except BaseException as error:  # noqa: BLE001  (SystemExit too: student code)
            return error
        return None

    def run(self, request, buffers):
        name = request["fn"]
        fn = self.namespace.get(name)
        if not callable(fn):
            return {"status": "missing", "output": _take_output()}, []
        call = fn
        if request.get("adapter"):
            scope = dict(self.namespace)
            try:
                exec(compile(request["adapter"], f"<adapter of {name}>", "exec"), scope)
                adapt = scope["adapt"]
            except Exception as error:
                return {"status": "error", "message": f"adapter failed: {error}"}, []

            def call(*args, _adapt=adapt, _fn=fn):
                return _adapt(_fn, *args)

        cases = decode(request["cases"], buffers)
        timing = request.get("timing")
        results, out_buffers = [], []
        # one soft deadline for the whole op: a hung op costs that op only
        signal.setitimer(signal.ITIMER_REAL, self.timeout)
        try:
            for args in cases:
                outcome = self._one(call, args, len(out_buffers))
                if "status" in outcome:
                    return dict(outcome, output=_take_output()), []
                out_buffers += outcome.pop("buffers", [])
                if timing and "error" not in outcome:
                    outcome["seconds"] = self._time(call, args, timing, buffers)
                results.append(outcome)
        except _SoftTimeout:
            return {"status": "timeout", "output": _take_output()}, []
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        return {"status": "ran", "results": results, "output": _take_output()}, out_buffers

    def _time(self, call, args, timing, buffers):
        """(backward, forward) best seconds, run alternately on fresh copies; the forward
        is the reference one (student code may have slowed it: the grader keeps the
        smaller of this and the time calibrated before loading)."""
        if self.reference is None:
            return None
        repeats = int(timing.get("repeats", 5))
        spec = dict(timing, case=decode(timing["case"], buffers))
        op, case, efficiency = _timing_case(self.reference, spec)
        copies = iter(
            [
                [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args]
                for _ in range(repeats)
            ]
        )
        backward, forward = efficiency.interleaved_times(
            lambda: call(*next(copies)), efficiency.reference_forward(op, case), repeats
        )
        return [backward, max(forward, efficiency.copy_floor(case, repeats))]

    def _one(self, call, args, offset):
        before = _snapshot(args)
        try:
            value = call(*args)
        except NotImplementedError:
            return {"status": "missing"}
        except MemoryError:
            return {"status": "memory"}
        except _SoftTimeout:
            raise
        except BaseException as error:  # noqa: BLE001  (SystemExit, KeyboardInterrupt too)
            return {"error": _short_traceback(error)}
        mutated = not _same(before, args)
        try:
            tree, bufs = encode(value)
        except _SoftTimeout:
            raise
        except BaseException as error:  # noqa: BLE001
            tree, bufs = {"t": "unsupported", "what": f"unencodable: {error}"[:200]}, []
        return {"value": _shift(tree, offset), "mutated": mutated, "buffers": bufs}


def _shift(tree, offset):
    """Renumber buffer indices when several encoded values share one message."""
    if not offset:
        return tree
    if isinstance(tree, dict):
        if tree.get("t") == "nd":
            return dict(tree, i=tree["i"] + offset)
        return {k: _shift(v, offset) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_shift(v, offset) for v in tree]
    return tree


def _snapshot(value):
    if isinstance(value, np.ndarray):
        return (value.dtype, value.shape, value.copy())
    if isinstance(value, (list, tuple)):
        return (type(value), len(value), [_snapshot(v) for v in value])
    return None


def _same(snapshot, value):
    if snapshot is None:
        return True
    if isinstance(snapshot[0], np.dtype):
        dtype, shape, data = snapshot
        return (
            isinstance(value, np.ndarray)
            and value.dtype == dtype
            and value.shape == shape
            and np.array_equal(data, value, equal_nan=dtype.kind == "f")
        )
    kind, length, items = snapshot
    return (
        type(value) is kind
        and len(value) == length
        and all(_same(s, v) for s, v in zip(items, value))
    )


def _load_reference():
    """The registry's ops and timing helpers, or None if the package is not importable
    here (the grader then times the forward itself)."""
    try:
        import gradcheck_kit
        from gradcheck_kit import efficiency
    except Exception:  # noqa: BLE001
        return None
    return {op.name: op for op in gradcheck_kit.all_ops()}, efficiency


def _timing_case(reference, request):
    ops, efficiency = reference
    op = ops[request["op"]]
    data = request["case"]
    case_type = efficiency.Case
    case = case_type(op.name, "", "efficiency", data["arrays"], data["params"], data["output_grad"])
    return op, case, efficiency


def calibrate(reference, request, buffers):
    """Forward times of the efficiency cases, measured before student code is loaded."""
    if reference is None:
        return {"seconds": None}
    seconds = []
    for item in decode(request["cases"], buffers):
        op, case, efficiency = _timing_case(reference, {"op": item["op"], "case": item})
        seconds.append(efficiency.forward_seconds(op, case, repeats=3))
    return {"seconds": seconds}


def main():
    np.seterr(all="ignore")
    reference = _load_reference()
    isolation = _isolate()
    _open_log()
    _apply_limits()
    signal.signal(signal.SIGALRM, _on_alarm)
    sys.meta_path.insert(0, _Blocker())
    for name in list(sys.modules):
        if name.partition(".")[0] in BLOCKED:
            del sys.modules[name]
    worker = Worker(reference)
    write_message(_PROTO_OUT, {"ready": True, "pid": os.getpid(), "isolation": isolation})
    while True:
        try:
            request, buffers = read_message(_PROTO_IN)
        except EOFError:
            return
        command = request.get("cmd")
        if command == "calibrate":
            write_message(_PROTO_OUT, calibrate(reference, request, buffers))
        elif command == "load":
            write_message(_PROTO_OUT, worker.load(request))
        elif command == "run":
            reply, out = worker.run(request, buffers)
            try:
                write_message(_PROTO_OUT, reply, out)
            except ValueError:  # e.g. a non-finite number in an error text
                write_message(_PROTO_OUT, {"status": "error", "message": "unencodable reply"})
        elif command == "quit":
            return
        else:
            write_message(_PROTO_OUT, {"error": f"unknown command {command!r}"})


if __name__ == "__main__":
    main()
