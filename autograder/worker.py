"""The worker: runs a student's code, one op's cases per request.

Started by :mod:`autograder.sandbox`, in a scratch directory with a scrubbed
environment. It trusts nothing it runs and is trusted by nobody: it only calls student
functions and sends back what they returned. Judging and timing happen in the grader.
Only the standard library and NumPy may be imported here; the wire format, the
isolation, the extraction of a notebook's code and the calling of student functions
come from modules next to this file and in ``gradcheck_kit``, loaded by path.

Protocol (see channel.py for framing): the first request is ``config`` (the
WorkerConfig to apply before anything else); then ``calibrate`` (time the reference
forwards of the efficiency cases, before any student code exists here), ``echo``
(a round trip of a case's size, for the grader's clock), ``load`` (the notebook's code
cells) and ``run`` (one op: function name, adapter, cases). Every request gets exactly
one reply.

The reference forwards are the one thing taken from the grader's package: it is
imported before student code runs and then made unimportable, like the grader itself.
"""

import io
import os
import runpy
import signal
import sys
import time

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

_HERE = os.path.dirname(os.path.abspath(__file__))


def _sibling(*parts):
    """A module of the grader's, loaded by path (the packages are not importable)."""
    return runpy.run_path(os.path.join(_HERE, *parts))


_channel = _sibling("channel.py")
encode, decode = _channel["encode"], _channel["decode"]
read_message, write_message = _channel["read_message"], _channel["write_message"]
_isolation = _sibling("isolation.py")
_calling = _sibling("..", "gradcheck_kit", "calling.py")
_extract = _sibling("extract.py")
_kernel = _sibling("kernel.py")

BLOCKED = frozenset(
    {"torch", "jax", "jaxlib", "tensorflow", "autograd", "gradcheck_kit", "autograder"}
)
OUTPUT_CAP = 4000
#: top-level time of one cell and of the whole notebook, unless the load request says
CELL_TIMEOUT, NOTEBOOK_TIMEOUT = 10.0, 60.0


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


def _is_cell(filename):
    return filename.startswith("<")


def _short_traceback(error):
    return _calling["student_traceback"](error, _is_cell)


def _seconds(value, default):
    """A positive, finite number of seconds from the request, or ``default``."""
    if type(value) not in (int, float) or not 0 < value < 1e6:
        return default
    return float(value)


class Worker:
    def __init__(self):
        # student code gets a __main__ module of its own: ``import __main__`` must not
        # reach this script's globals (the wire format, the checks around each call)
        module = type(sys)("__main__")
        module.__builtins__ = __builtins__
        sys.modules["__main__"] = module
        self.namespace = module.__dict__
        self.timeout = 10.0

    def load(self, request):
        """Run the code cells as a kernel would (kernel.py), each cell within its time
        budget; which wanted names are callable afterwards, and what went wrong."""
        self.timeout = float(request.get("timeout", self.timeout))
        cell_timeout = _seconds(request.get("cell_timeout"), CELL_TIMEOUT)
        notebook_timeout = _seconds(request.get("notebook_timeout"), NOTEBOOK_TIMEOUT)
        kernel = _kernel["Kernel"](
            self.namespace,
            parse_cell=_extract["parse_cell"],
            bound_names=_extract["bound_names"],
            stop=_SoftTimeout,
            on_alarm=_on_alarm,
            take_output=_take_output,
            blocked=BLOCKED,
            output_cap=OUTPUT_CAP,
        )
        try:
            ran = kernel.run(list(request.get("cells", [])), cell_timeout, notebook_timeout)
        except BaseException as error:  # noqa: BLE001  (a student's signal, at worst)
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, _on_alarm)
            stopped = f"loading stopped early: {type(error).__name__}"
            ran = {"errors": [], "syntax_errors": [], "notes": [*kernel.notes, stopped]}
            ran["output"] = _take_output()
        callables = sorted(
            name for name in request.get("wanted", []) if callable(self.namespace.get(name))
        )
        errors = [
            {"cell": e["cell"], "line": e["line"], "error": _short_traceback(e["error"])[:600]}
            for e in ran["errors"]
        ]
        return {
            "ok": True,
            "callable": callables,
            "errors": errors,
            "syntax_errors": ran["syntax_errors"],
            "notes": ran["notes"],
            "output": ran["output"],
        }

    def run(self, request, buffers):
        name = request["fn"]
        fn = self.namespace.get(name)
        if not callable(fn):
            return {"status": "missing", "output": _take_output()}, []
        try:
            call = _calling["adapted"](fn, request.get("adapter"), name, self.namespace)
        except Exception as error:  # noqa: BLE001  (the student's globals broke it)
            return {"status": "error", "message": f"adapter failed: {error}"}, []
        cases = decode(request["cases"], buffers)
        results, out_buffers = [], []
        # one soft deadline for the whole op: a hung op costs that op only
        signal.setitimer(signal.ITIMER_REAL, self.timeout)
        try:
            for args in cases:
                outcome = self._one(call, args, len(out_buffers))
                if "status" in outcome:
                    return dict(outcome, output=_take_output()), []
                out_buffers += outcome.pop("buffers", [])
                results.append(outcome)
        except _SoftTimeout:
            return {"status": "timeout", "output": _take_output()}, []
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        return {"status": "ran", "results": results, "output": _take_output()}, out_buffers

    def _one(self, call, args, offset):
        try:
            called = _calling["call_student"](
                call, args, _is_cell, catch=BaseException, passthrough=(_SoftTimeout,)
            )
        except NotImplementedError:
            return {"status": "missing"}
        except MemoryError:
            return {"status": "memory"}
        if called.error is not None:
            return {"error": called.error}
        try:
            tree, bufs = encode(called.value)
        except _SoftTimeout:
            raise
        except BaseException as error:  # noqa: BLE001
            tree, bufs = {"t": "unsupported", "what": f"unencodable: {error}"[:200]}, []
        return {"value": _shift(tree, offset), "mutated": called.mutated, "buffers": bufs}


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


def _load_reference():
    """The registry's ops and timing helpers, or None if the package is not importable
    here (the grader then times the forward itself)."""
    try:
        import gradcheck_kit
        from gradcheck_kit import efficiency
    except Exception:  # noqa: BLE001
        return None
    return {op.name: op for op in gradcheck_kit.all_ops()}, efficiency


def calibrate(reference, request, buffers):
    """Forward times (floored by copies of the data) of the efficiency cases, measured
    before student code is loaded, so the grader can trust them."""
    if reference is None:
        return {"seconds": None}
    ops, efficiency = reference
    seconds = []
    for item in decode(request["cases"], buffers):
        op = ops.get(item.get("op"))
        if op is None:
            seconds.append(None)
            continue
        case = efficiency.Case(op.name, "", "efficiency", item["arrays"], item["params"],
                               item["output_grad"])  # fmt: skip
        # CPU time, like the grader's measurement of the backward
        seconds.append(efficiency.forward_seconds(op, case, repeats=3, clock=time.thread_time))
    return {"seconds": seconds}


def echo(request, buffers):
    """A reply the size of a real one (arrays of the requested shapes and dtypes), to
    the grader's clock: what a round trip costs without student code."""
    decode(request["cases"], buffers)
    arrays = [np.ones(shape, dtype=dtype) for shape, dtype in request.get("reply", [])]
    tree, out = encode([arrays])
    return {"status": "ran", "results": [{"value": tree["v"][0], "mutated": False}]}, out


def _serve(worker, reference):
    while True:
        try:
            request, buffers = read_message(_PROTO_IN)
        except EOFError:
            return
        command = request.get("cmd")
        if command == "calibrate":
            write_message(_PROTO_OUT, calibrate(reference, request, buffers))
        elif command == "echo":
            write_message(_PROTO_OUT, *echo(request, buffers))
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


def _forked_from_zygote():
    """As a zygote (``worker.py zygote FD``): import what every worker needs, then
    fork one worker per request of the grader. Returns in each forked worker only,
    with the reference package imported and no student code run anywhere before."""
    reference = _load_reference()
    zygote = _sibling("zygote.py")
    spawned = zygote["serve"](int(sys.argv[2]), (_PROTO_IN.fileno(), _PROTO_OUT.fileno()))
    zygote["fresh_worker_state"](spawned)
    return reference


def main():
    np.seterr(all="ignore")
    warm = sys.argv[1:2] == ["zygote"] and len(sys.argv) == 3
    reference = _forked_from_zygote() if warm else None
    first, _ = read_message(_PROTO_IN)
    config = _isolation["WorkerConfig"].from_json(first.get("config", {}))
    if not warm:
        reference = _load_reference()
    elif config.namespaces:
        # a cold worker gets these from ``unshare``; this one is PID 1 of a namespace
        # its launcher made, and makes the rest itself, before anything else
        _isolation["enter_namespaces"]()
    isolation = _isolation["isolate"](config, hide_modules=("gradcheck_kit", "autograder"))
    _open_log()
    _isolation["apply_limits"](config)
    signal.signal(signal.SIGALRM, _on_alarm)
    sys.meta_path.insert(0, _Blocker())
    for name in list(sys.modules):
        if name.partition(".")[0] in BLOCKED:
            del sys.modules[name]
    worker = Worker()
    write_message(_PROTO_OUT, {"ready": True, "pid": os.getpid(), "isolation": isolation})
    _serve(worker, reference)


if __name__ == "__main__":
    main()
