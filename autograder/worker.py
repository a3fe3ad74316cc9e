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
_LOG_FD = os.open("output.log", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
os.dup2(_LOG_FD, 1)
os.dup2(_LOG_FD, 2)
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
        self.namespace = {"__name__": "__main__", "__builtins__": __builtins__}
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
    _apply_limits()
    signal.signal(signal.SIGALRM, _on_alarm)
    sys.meta_path.insert(0, _Blocker())
    for name in list(sys.modules):
        if name.partition(".")[0] in BLOCKED:
            del sys.modules[name]
    worker = Worker(reference)
    write_message(_PROTO_OUT, {"ready": True, "pid": os.getpid()})
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
