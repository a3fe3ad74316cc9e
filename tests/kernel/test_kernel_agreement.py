"""The grader sees what a Jupyter kernel sees after Run All.

Each notebook is the correct 01_elementwise solution with one construct worked in: a
table filled at top level, a constant changed in place, magics, a cell that raises
half-way, a helper deleted later, a module only the student's machine has, a cell over
its time budget... Each is run in a real ipykernel (nbclient, errors allowed, a cell
over the budget interrupted) and ``check()`` is called there on every function of the
assignment; the same file is graded by the real command line. Both must agree on every
function: what the kernel has and passes, the grader credits; what the kernel lacks or
has broken, the grader does not.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

import gradcheck_kit
from tests.notebooks import build_notebook, run_cli, solution_cells, solution_sources

ASSIGNMENT = "01_elementwise"
NAMES = [op.name for op in gradcheck_kit.all_ops(ASSIGNMENT)]
#: seconds of top-level work per cell, in the kernel (nbclient) and in the grader alike
BUDGET = 3
GRADER = ["--public-only", "--efficiency-weight", "0", "--timeout", "5"]
VERDICT = "# kernel verdicts"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def solution(name: str, new_name: str | None = None, body_first: str = "") -> str:
    """The correct source of ``name``, renamed, with ``body_first`` as its first line."""
    source = solution_sources()[name]
    if new_name:
        source = source.replace(f"def {name}(", f"def {new_name}(", 1)
    if body_first:
        head, _, rest = source.partition("\n")
        source = f"{head}\n    {body_first}\n{rest}"
    return source


def base(*without: str) -> list[str]:
    """The solution's cells without the listed functions, and a self-check as students
    write it (the grader must make it cost nothing)."""
    dropped = tuple(f"def {name}(" for name in without)
    cells = [c for c in solution_cells(ASSIGNMENT) if not c.startswith(dropped)]
    setup = (  # the shipped notebooks' first cell: install the course's package if missing
        "import importlib.util, subprocess, sys\n"
        "if importlib.util.find_spec('gradcheck_kit') is None:\n"
        "    subprocess.check_call([sys.executable, '-m', 'pip', 'install', 'gradcheck-kit'])\n"
    )
    cells[0] = setup + cells[0].rstrip("\n") + "\nfrom gradcheck_kit import check\n"
    return cells + ["check(unbroadcast);\n"]


@dataclass
class Construct:
    cells: list[str]
    #: what check() in the kernel says of the functions the construct is about
    kernel: dict[str, bool]
    files: dict[str, str] = field(default_factory=dict)


def constructs() -> dict[str, Construct]:
    c = {}
    c["loop-filled-table"] = Construct(
        base("neg_backward")
        + [
            "_TABLE = {}\nfor _name, _sign in [('neg', -1.0), ('id', 1.0)]:\n"
            "    _TABLE[_name] = _sign\n",
            "def neg_backward(input, output_grad):\n    return _TABLE['neg'] * output_grad\n",
        ],
        {"neg_backward": True},
    )
    c["item-assignment"] = Construct(
        base("sin_backward")
        + [
            "SIGNS = {}\nSIGNS['sin'] = 1.0\n",
            "def sin_backward(input, output_grad):\n"
            "    return SIGNS['sin'] * np.cos(input) * output_grad\n",
        ],
        {"sin_backward": True},
    )
    c["augmented-constant"] = Construct(
        base("exp_backward")
        + [
            "FACTOR = 0.5\nFACTOR *= 2\n",
            "def exp_backward(input, output_grad):\n"
            "    return FACTOR * np.exp(input) * output_grad\n",
        ],
        {"exp_backward": True},
    )
    c["call-sets-global"] = Construct(
        base("cos_backward")
        + [
            "def _setup():\n    global _COS_SIGN\n    _COS_SIGN = -1.0\n\n_setup()\n",
            "def cos_backward(input, output_grad):\n"
            "    return _COS_SIGN * np.sin(input) * output_grad\n",
        ],
        {"cos_backward": True},
    )
    c["globals-item"] = Construct(
        base("tanh_backward")
        + [solution("tanh_backward", "_tanh"), "globals()['tanh_backward'] = _tanh\n"],
        {"tanh_backward": True},
    )
    c["setattr-on-class"] = Construct(
        base("relu_backward")
        + [
            "class Ops:\n    pass\n\n"
            "setattr(Ops, 'relu', staticmethod(lambda x, g: g * (x > 0)))\n",
            "def relu_backward(input, output_grad):\n    return Ops.relu(input, output_grad)\n",
        ],
        {"relu_backward": True},
    )
    c["exec-made-function"] = Construct(
        base("abs_backward") + [f"exec({solution('abs_backward')!r})\n"],
        {"abs_backward": True},
    )
    c["time-cell-magic"] = Construct(
        base("sigmoid_backward") + ["%%time\n" + solution("sigmoid_backward")],
        {"sigmoid_backward": True},
    )
    c["capture-cell-magic"] = Construct(
        base("add_backward") + ["%%capture captured\nprint('noise')\n" + solution("add_backward")],
        {"add_backward": True},
    )
    c["display-in-function"] = Construct(
        base("sub_backward") + [solution("sub_backward", body_first="display(input1.shape)")],
        {"sub_backward": True},
    )
    c["definition-after-raise"] = Construct(
        base("mul_backward") + ["1 / 0\n" + solution("mul_backward")],
        {"mul_backward": False},
    )
    c["helper-deleted-later"] = Construct(
        base("div_backward")
        + [
            solution("div_backward", "_div"),
            "def div_backward(input1, input2, output_grad):\n"
            "    return _div(input1, input2, output_grad)\n",
            "del _div\n",
        ],
        {"div_backward": False},
    )
    c["helper-shadowed-by-loop"] = Construct(
        base("pow_backward")
        + [
            solution("pow_backward", "_pow"),
            "def pow_backward(input1, input2, output_grad):\n"
            "    return _pow(input1, input2, output_grad)\n",
            "for _pow in range(3):\n    pass\n",
        ],
        {"pow_backward": False},
    )
    c["missing-module"] = Construct(
        base("maximum_backward")
        + ["import course_utils\ncourse_utils.banner()\n" + solution("maximum_backward")],
        {"maximum_backward": True},
        files={"course_utils.py": "def banner():\n    print('welcome to the course')\n"},
    )
    c["input-call"] = Construct(
        base("log_backward") + ["answer = input('your name? ')\n" + solution("log_backward")],
        {"log_backward": False},
    )
    c["shell-pip-install"] = Construct(
        base("where_backward")
        + [
            "!pip install --no-index --quiet gradcheck-kit-no-such-package\n"
            + solution("where_backward")
        ],
        {"where_backward": True},
    )
    # where this machine lacks matplotlib, %matplotlib fails in the kernel too: the
    # magic then gets a cell of its own, and only the grader's side of it is exercised
    magic = "%matplotlib inline\n"
    neg = solution("neg_backward")
    inline = [magic + neg] if HAS_MATPLOTLIB else [magic, neg]
    c["matplotlib-inline"] = Construct(base("neg_backward") + inline, {"neg_backward": True})
    c["cell-over-budget"] = Construct(
        base("cos_backward", "tanh_backward")
        + [solution("cos_backward") + "while True:\n    pass\n" + solution("tanh_backward")],
        {"cos_backward": True, "tanh_backward": False},
    )
    return c


CONSTRUCTS = constructs()


def write(directory: Path, construct: Construct) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in construct.files.items():
        (directory / name).write_text(text)
    return build_notebook(directory / "submission.ipynb", construct.cells)


def kernel_verdicts(path: Path, kernel: str = "python3") -> dict[str, bool]:
    """Run All in a real kernel (errors allowed, a cell over BUDGET interrupted), then
    check() on each function of the assignment there: passed or not."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    probe = (
        f"{VERDICT}\nimport json as _json\nfrom gradcheck_kit import check as _check\n"
        "_verdicts = {}\n"
        f"for _n in {NAMES!r}:\n"
        "    _f = globals().get(_n)\n"
        "    try:\n"
        "        _verdicts[_n] = callable(_f) and _check(_f, name=_n, show=False,\n"
        "                                                 efficiency=False).passed\n"
        "    except Exception:\n"
        "        _verdicts[_n] = False\n"
        "print('VERDICTS', _json.dumps(_verdicts))\n"
    )
    nb.cells.append(nbformat.v4.new_code_cell(probe))
    client = NotebookClient(
        nb,
        kernel_name=kernel,
        allow_errors=True,
        interrupt_on_timeout=True,
        timeout_func=lambda cell: 120 if cell.source.startswith(VERDICT) else BUDGET,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    found = re.search(r"VERDICTS (\{.*\})", text)
    assert found, nb.cells[-1].outputs
    return json.loads(found.group(1))


def grader_report(path: Path, *extra: str, cwd: str | None = None) -> dict:
    if cwd is None:
        result = run_cli(str(path), "--format", "json", *GRADER, *extra)
    else:  # another checkout's grader (the measurement before this change)
        import subprocess

        result = subprocess.run(
            [sys.executable, "-m", "autograder.cli", str(path), "--format", "json", *GRADER],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=300,
            env={**os.environ, "PYTHONPATH": cwd},
        )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def grader_verdicts(report: dict) -> dict[str, bool]:
    return {op["name"]: op["status"] == "passed" for op in report["ops"]}


def disagreements(kernel: dict[str, bool], grader: dict[str, bool]) -> dict[str, tuple]:
    return {n: (kernel.get(n), grader.get(n)) for n in NAMES if kernel.get(n) != grader.get(n)}


@pytest.mark.parametrize("construct", list(CONSTRUCTS))
def test_grader_agrees_with_the_kernel(construct, python3_kernel, tmp_path):
    spec = CONSTRUCTS[construct]
    path = write(tmp_path, spec)
    kernel = kernel_verdicts(path, python3_kernel)
    # the construct does what it is meant to in a kernel (else the test proves nothing)
    assert {n: kernel[n] for n in spec.kernel} == spec.kernel
    assert all(kernel[n] for n in NAMES if n not in spec.kernel), kernel
    report = grader_report(path, "--cell-timeout", str(BUDGET))
    assert disagreements(kernel, grader_verdicts(report)) == {}, report["notes"]


def test_notes_say_what_the_grader_did_differently(tmp_path):
    cells = CONSTRUCTS["cell-over-budget"].cells + CONSTRUCTS["missing-module"].cells[-1:]
    cells += ["import time\ntime.sleep(30)\n", "def later():\n    pass\n"]
    path = build_notebook(tmp_path / "nb.ipynb", cells)
    report = grader_report(path, "--cell-timeout", "2", "--notebook-timeout", "3")
    notes = "\n".join(report["notes"])
    over = len(cells) - 3  # the infinite loop's cell, numbered from 1
    assert f"cell {over} stopped after 2 s, the time budget of one cell" in notes, notes
    assert re.search(rf"cell {over + 2} stopped after [\d.]+ s, .*--notebook-timeout", notes)
    assert "module course_utils is not installed on the grading machine" in notes, notes
    assert f"cell {len(cells)} not run" in notes, notes
    assert "check" not in notes, notes  # the self-check cost nothing and said nothing
    ops = grader_verdicts(report)
    assert ops["maximum_backward"] and ops["cos_backward"] and not ops["tanh_backward"]


def test_bad_budgets_are_refused_in_one_line(tmp_path):
    path = build_notebook(tmp_path / "nb.ipynb", solution_cells(ASSIGNMENT))
    for flag, value in (("--cell-timeout", "0"), ("--notebook-timeout", "nan")):
        result = run_cli(str(path), flag, value)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and flag in result.stderr, result.stderr
