"""Each test grades a real notebook: the full correct 01_elementwise solution, with one
op (``relu_backward``) replaced by an attack or one extra attacking cell.

Every test checks that the grader finishes in time with a valid JSON report, that the
attacked op gets no credit when the attack is harmful (full credit when it is
harmless), that every other op gets full credit, that nothing changed outside the
worker's temporary directory, that no process outlived the run, and that the secret
never appears in the report or in anything the attack could write.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autograder.sandbox import SandboxOptions, use_namespaces
from tests import notebooks as fixtures

ASSIGNMENT = "01_elementwise"
ATTACKED = "relu_backward"
SECRET = "s3cr3t-d0-not-leak-7f1c"
MARK = "gkadv"  # process name of anything an attack leaves running
REPO = Path(__file__).resolve().parents[2]
FAST = ["--timeout", "2", "--public-only", "--efficiency-weight", "0"]
namespaces_only = pytest.mark.skipif(
    not use_namespaces(SandboxOptions()), reason="needs PID/mount namespaces (see SECURITY.md)"
)

# the correct relu under another name, for attacks that do harm and then answer right
REAL = "def _real_relu(input, output_grad):\n    return output_grad * (input > 0)\n"
WRONG = "def _wrong_relu(input, output_grad):\n    return output_grad * 0.5\n"
NAME_SELF = (
    f"def _name_self():\n    import ctypes\n    ctypes.CDLL(None).prctl(15, b'{MARK}', 0, 0, 0)\n"
)


class Attack:
    def __init__(self, name, code, harmful=True, cells=(), args=FAST, limit=60, marks=()):
        self.name, self.code, self.harmful = name, code, harmful
        self.cells, self.args, self.limit, self.marks = list(cells), list(args), limit, marks

    def param(self):
        return pytest.param(self, id=self.name, marks=self.marks)


def fn(body: str) -> str:
    """``relu_backward`` with this body (indented four spaces)."""
    lines = "".join(f"    {line}\n" for line in body.strip("\n").splitlines())
    return f"def relu_backward(input, output_grad):\n{lines}"


WRITE_EVERYWHERE = """
import os
targets = ['.', '..', os.path.expanduser('~'), os.environ.get('HOME', '.'), '/tmp',
           '/dev/shm', '/autograder/results', '/autograder', {notebook_dir!r},
           {canary!r}, {repo!r}]
for place in targets:
    for name in ('results.json', 'grades.csv', 'feedback.md', 'pwned.txt'):
        try:
            os.makedirs(place, exist_ok=True)
            with open(os.path.join(place, name), 'w') as handle:
                handle.write('{{"score": 100, "tests": []}}')
        except OSError:
            pass
return _real_relu(input, output_grad)
"""

DELETE_EVERYTHING = """
import os, shutil
for place in ['.', '..', os.path.expanduser('~'), '/tmp', {notebook_dir!r}, {canary!r}]:
    try:
        for name in os.listdir(place):
            path = os.path.join(place, name)
            shutil.rmtree(path, ignore_errors=True)
            try:
                os.remove(path)
            except OSError:
                pass
    except OSError:
        pass
return _real_relu(input, output_grad)
"""

READ_SOLUTIONS = """
import glob, os
found = []
patterns = [{repo!r} + '/assignments/solutions/*.ipynb', {repo!r} + '/tests/core/solutions.py',
            {repo!r} + '/gradcheck_kit/*.py', {notebook_dir!r} + '/*', {canary!r} + '/*',
            '/root/*', '/home/*/*', '../*', '/autograder/source/*']
for pattern in patterns:
    for path in glob.glob(pattern):
        try:
            with open(path, 'rb') as handle:
                found.append((path, handle.read(100)))
        except OSError:
            pass
if found:
    print('FOUND', found)
    return output_grad * 0.5  # a leak shows as a lost op
return _real_relu(input, output_grad)
"""

SNOOP_SECRET = """
import glob, os
seen = [repr(dict(os.environ))]
for path in glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline'):
    try:
        with open(path, 'rb') as handle:
            seen.append(handle.read().decode('latin-1'))
    except OSError:
        pass
text = '\\n'.join(seen)
if {secret!r} in text:
    print('LEAKED', text)
    return output_grad * 0.5
return _real_relu(input, output_grad)
"""

DETACH = """
import os, time
_name_self()
for _ in range(2):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                _name_self()
                time.sleep(30)
        finally:
            os._exit(0)
return _real_relu(input, output_grad)
"""

FORK_BOMB = """
import os, time
children = 0
for _ in range(40):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        _name_self()
        time.sleep(30)
        os._exit(0)
    children += 1
return _real_relu(input, output_grad)
"""

PATCH_NUMPY = """
def _patch():
    import numpy
    numpy.allclose = lambda *a, **k: True
    numpy.isclose = lambda a, b, *r, **k: numpy.ones(numpy.shape(a), bool)
    numpy.array_equal = lambda *a, **k: True
    numpy.testing.assert_allclose = lambda *a, **k: None
    numpy.testing.assert_array_equal = lambda *a, **k: None
    for method in ('__eq__', 'all', 'any', '__array__'):
        try:
            setattr(numpy.ndarray, method, lambda *a, **k: True)
        except TypeError:
            pass
"""

FORGED_SUBCLASS = """
import numpy as np
class Liar(np.ndarray):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    @property
    def shape(self):
        return input.shape
    def all(self, *a, **k):
        return True
return np.zeros(1).view(Liar)
"""

REDUCE = """
class Evil:
    def __reduce__(self):
        return (os.system, ('touch ' + {canary!r} + '/reduced',))
import os
return Evil()
"""

ATTACKS = [
    Attack("infinite-loop", fn("while True:\n    pass")),
    Attack("sleep", fn("import time\ntime.sleep(1000)")),
    Attack(
        "memory-bomb-list",
        fn("hog = []\nwhile True:\n    hog.append(bytearray(64 * 2**20))"),
        args=[*FAST, "--memory-mb", "1024"],
    ),
    Attack("memory-bomb-numpy", fn("return np.ones((10**6, 10**6))")),
    Attack("fork-bomb", fn(FORK_BOMB), harmful=False, cells=[NAME_SELF, REAL]),
    Attack("os-exit", fn("import os\nos._exit(0)")),
    Attack(
        "sys-exit-top-level",
        REAL.replace("_real_relu", "relu_backward"),
        harmful=False,
        cells=["import sys\nsys.exit(3)"],
    ),
    Attack("raise-keyboard-interrupt", fn("raise KeyboardInterrupt")),
    Attack("raise-system-exit", fn("raise SystemExit(0)")),
    Attack("segfault-ctypes", fn("import ctypes\nreturn ctypes.string_at(0, 10)")),
    Attack(
        "ignore-sigterm-and-sigalrm",
        fn("while True:\n    pass"),
        cells=[
            "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        ],
    ),
    Attack(
        "block-sigalrm-in-function",
        fn(
            "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])\n"
            "while True:\n    pass"
        ),
    ),
    Attack(
        "background-thread-spinning",
        fn(
            "import threading\n"
            "def spin():\n    while True:\n        pass\n"
            "try:\n    threading.Thread(target=spin, daemon=True).start()\n"
            "except RuntimeError:\n    pass\n"
            "return _real_relu(input, output_grad)"
        ),
        harmful=False,
        cells=[REAL],
    ),
    # a thread stuck in a regex holds the interpreter while the next request arrives:
    # if threads can start at all, this op may or may not lose its answer, the rest not
    Attack(
        "gil-holding-regex-thread",
        fn(
            "import re, threading\n"
            "def hold():\n    re.match(r'(a+)+$', 'a' * 64 + 'b')\n"
            "try:\n    threading.Thread(target=hold, daemon=True).start()\n"
            "except RuntimeError:\n    pass\n"
            "return _real_relu(input, output_grad)"
        ),
        harmful=None,
        cells=[REAL],
    ),
    Attack("catastrophic-regex", fn("import re\nre.match(r'(a+)+$', 'a' * 64 + 'b')")),
    Attack("recursion-bomb", fn("def down(n):\n    return down(n + 1)\nreturn down(0)")),
    Attack(
        "c-stack-overflow",
        fn(
            "import sys\nsys.setrecursionlimit(10**7)\n"
            "def down(n):\n    return down(n + 1)\nreturn down(0)"
        ),
    ),
    Attack(
        "print-120mb",
        fn(
            "import os\nchunk = b'x' * 2**20\nfor _ in range(120):\n"
            "    try:\n        os.write(1, chunk)\n    except OSError:\n        pass\n"
            "return _real_relu(input, output_grad)"
        ),
        harmful=False,
        cells=[REAL],
    ),
    Attack(
        "patch-numpy-top-level-wrong",
        "relu_backward = _patch() or _wrong_relu\n",
        cells=[PATCH_NUMPY, WRONG],
    ),
    Attack(
        "patch-numpy-top-level-right",
        "relu_backward = _patch() or _real_relu\n",
        harmful=False,
        cells=[PATCH_NUMPY, REAL],
    ),
    Attack(
        "patch-numpy-in-function-wrong",
        fn("_patch()\nreturn output_grad * 0.5"),
        cells=[PATCH_NUMPY],
    ),
    Attack(
        "patch-grader-packages",
        fn(
            "import sys, importlib\n"
            "for name in ('gradcheck_kit', 'autograder', 'autograder.grade'):\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except ImportError:\n        pass\n"
            "sys.path.insert(0, {repo!r})\n"
            "for name in ('gradcheck_kit', 'autograder'):\n"
            "    try:\n        importlib.import_module(name).judge = lambda *a, **k: True\n"
            "    except ImportError:\n        pass\n"
            "import __main__\n"
            "for attr in ('encode', '_same', '_snapshot'):\n"
            "    setattr(__main__, attr, lambda *a, **k: True)\n"
            "return output_grad * 0.5"
        ),
    ),
    Attack("forged-ndarray-subclass", fn(FORGED_SUBCLASS)),
    Attack(
        "forged-array-interface",
        fn(
            "class Fake:\n    def __array__(self, dtype=None, copy=None):\n"
            "        return output_grad * (input > 0)\n"
            "    shape = property(lambda self: input.shape)\nreturn Fake()"
        ),
    ),
    Attack("forged-dict", fn("return dict(shape=input.shape, value=output_grad)")),
    Attack("forged-string", fn("return 'full marks'")),
    Attack("forged-none", fn("return None")),
    Attack(
        "object-dtype-array",
        fn("out = np.empty(input.shape, dtype=object)\nout[...] = 1.0\nreturn out"),
    ),
    Attack(
        "structured-array",
        fn("out = np.zeros(input.shape, dtype=[('a', 'f8'), ('b', 'f8')])\nreturn out"),
    ),
    Attack("enormous-array", fn("return np.zeros(10**9)")),
    Attack(
        "huge-broadcast-view", fn("return np.broadcast_to(np.float64(1.0), (10**6, 10**6, 10**6))")
    ),
    Attack("reduce-payload", fn(REDUCE)),
    Attack(
        "fake-result-files",
        fn(WRITE_EVERYWHERE),
        harmful=False,
        cells=[REAL],
        marks=namespaces_only,
    ),
    Attack(
        "delete-files",
        fn(DELETE_EVERYTHING),
        harmful=False,
        cells=[REAL],
        marks=namespaces_only,
    ),
    Attack(
        "read-solutions", fn(READ_SOLUTIONS), harmful=False, cells=[REAL], marks=namespaces_only
    ),
    Attack("snoop-secret", fn(SNOOP_SECRET), harmful=False, cells=[REAL]),
    Attack("detach-setsid-double-fork", fn(DETACH), harmful=False, cells=[NAME_SELF, REAL]),
    Attack(
        "load-time-infinite-loop",
        REAL.replace("_real_relu", "relu_backward"),
        harmful=False,
        cells=["while True:\n    pass"],
    ),
]


def _files(root: Path) -> dict[str, object]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:  # a directory's time changes with the worker directories
            found[os.path.join(dirpath, name)] = "directory"
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                found[path] = os.lstat(path).st_mtime
            except OSError:
                pass
    return found


#: what the attacks write; other processes on the machine may create other names in
#: the shared places at any time, so those are checked for these names only
PLANTED = ("results.json", "grades.csv", "feedback.md", "pwned.txt", "reduced")


def _planted() -> list[str]:
    """Planted files in the shared writable places and the repository."""
    places = ["/tmp", "/dev/shm", str(REPO), os.path.expanduser("~"), "/autograder/results"]
    return [
        os.path.join(place, name)
        for place in places
        for name in PLANTED
        if os.path.lexists(os.path.join(place, name))
    ]


def _marked_processes() -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                comm, _, rest = handle.read().partition(b" ")[2].rpartition(b")")
            if comm == b"(" + MARK.encode() and rest.split()[0] != b"Z":  # zombies are dead
                found.append(int(name))
        except (OSError, ValueError, IndexError):
            pass
    return found


@pytest.mark.parametrize("attack", [a.param() for a in ATTACKS])
def test_attack(attack: Attack, tmp_path: Path):
    _run_attack(attack, tmp_path, {})


#: the attacks the fallback (no namespaces) has its own defences against
FALLBACK = ("snoop-secret", "detach-setsid-double-fork", "fork-bomb", "os-exit", "sleep")


@pytest.mark.parametrize("attack", [a.param() for a in ATTACKS if a.name in FALLBACK])
def test_attack_without_namespaces(attack: Attack, tmp_path: Path):
    _run_attack(attack, tmp_path, {"GRADCHECK_ISOLATION": "off"})


def _run_attack(attack: Attack, tmp_path: Path, extra_env: dict[str, str]) -> None:
    home, canary, notebook_dir = tmp_path / "home", tmp_path / "canary", tmp_path / "submission"
    workers = tmp_path / "workers"  # the grader's TMPDIR: where its worker directories go
    for place in (home, canary, notebook_dir, workers):
        place.mkdir()
    (canary / "keep.txt").write_text("canary")
    values = {
        "canary": str(canary),
        "notebook_dir": str(notebook_dir),
        "repo": str(REPO),
        "secret": SECRET,
    }
    code = attack.code.format(**values) if "{" in attack.code else attack.code
    cells = fixtures.solution_cells(ASSIGNMENT, replace={ATTACKED: code})
    at = cells.index(code)
    cells[at:at] = attack.cells  # helpers and attacking cells just before the op
    notebook = fixtures.build_notebook(notebook_dir / "submission.ipynb", cells)

    before = {p: _files(p) for p in (tmp_path, REPO / "assignments")}
    planted_before = _planted()
    start = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "autograder.cli",
            str(notebook),
            "--format",
            "json",
            "--seed",
            SECRET,
            *attack.args,
        ],
        capture_output=True,
        text=True,
        timeout=attack.limit,
        cwd=str(tmp_path),
        env={
            **os.environ,
            "HOME": str(home),
            "GRADCHECK_SECRET": SECRET,
            "TMPDIR": str(workers),
            **extra_env,
        },
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    ops = fixtures.ops_by_name(report)

    for name, op in ops.items():
        if name == ATTACKED:
            continue
        assert op["score"] == op["max_score"], (name, op)
    attacked = ops[ATTACKED]
    if attack.harmful is True:
        assert attacked["score"] < attacked["max_score"], attacked
    elif attack.harmful is False:
        assert attacked["score"] == attacked["max_score"], attacked

    # the secret is nowhere: report, output, anything written
    assert SECRET not in result.stdout and SECRET not in result.stderr
    # nothing changed outside the worker's directory
    time.sleep(0.2)
    assert (canary / "keep.txt").read_text() == "canary"
    assert sorted(p.name for p in canary.iterdir()) == ["keep.txt"]
    assert _files(tmp_path) == before[tmp_path]
    assert _files(REPO / "assignments") == before[REPO / "assignments"]
    assert _planted() == planted_before
    leftover = _marked_processes()
    for pid in leftover:  # do not leave them to the next test
        os.kill(pid, 9)
    assert not leftover, "processes outlived the worker"
    # the worker directories of this run are gone too
    assert list(workers.iterdir()) == []
    assert elapsed < attack.limit
