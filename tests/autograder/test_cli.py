"""End-to-end: the real ``gradcheck-grade`` command on real notebooks."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import grade_json, ops_by_name, run_cli, solution_cells, solution_sources

import gradcheck_kit

STUB = "def {name}(*args, **kwargs):\n    raise NotImplementedError\n"


ASSIGNMENTS_DIR = Path(__file__).resolve().parents[2] / "assignments"
COVERED = [
    a
    for a in gradcheck_kit.assignments()
    if {op.name for op in gradcheck_kit.all_ops(a)} <= set(solution_sources())
]


@pytest.mark.parametrize("assignment", gradcheck_kit.assignments())
def test_shipped_notebooks_solution_full_marks_student_copy_zero(assignment):
    solution = ASSIGNMENTS_DIR / "solutions" / f"{assignment}.ipynb"
    student = ASSIGNMENTS_DIR / f"{assignment}.ipynb"
    if not solution.exists() or not student.exists():
        pytest.skip(f"no shipped notebooks for {assignment}")
    report = grade_json(str(solution))
    assert report["assignment"] == assignment
    assert report["score"] == report["max_score"] > 0, [
        (op["name"], op["status"]) for op in report["ops"] if op["status"] != "passed"
    ]
    assert report["notes"] == []
    stub = grade_json(str(student))
    assert stub["assignment"] == assignment
    assert stub["score"] == 0
    assert {op["status"] for op in stub["ops"]} == {"missing"}


@pytest.mark.parametrize("assignment", COVERED)
def test_correct_notebook_gets_full_marks(make_notebook, assignment):
    path = make_notebook(solution_cells(assignment))
    report = grade_json(str(path))
    assert report["assignment"] == assignment
    assert report["score"] == report["max_score"] > 0
    assert all(op["status"] == "passed" for op in report["ops"]), [
        (op["name"], op["status"]) for op in report["ops"] if op["status"] != "passed"
    ]
    assert {op["name"] for op in report["ops"]} == {
        op.name for op in gradcheck_kit.all_ops(assignment)
    }


def test_json_is_deterministic_and_has_the_documented_shape(make_notebook):
    path = make_notebook(solution_cells("01_elementwise"))
    first = run_cli(str(path), "--format", "json", "--seed", "s1")
    second = run_cli(str(path), "--format", "json", "--seed", "s1")
    assert first.returncode == 0 and first.stdout == second.stdout
    report = json.loads(first.stdout)
    assert set(report) >= {"score", "max_score", "assignment", "ops"}
    op = report["ops"][0]
    assert set(op) >= {"name", "score", "max_score", "status", "cases"}
    assert set(op["cases"][0]) >= {"name", "passed", "message", "hint"}
    assert any(case["hidden"] for case in op["cases"])
    assert report["secret"] == "--seed"


def test_stub_notebook_scores_zero_with_missing(make_notebook):
    names = [op.name for op in gradcheck_kit.all_ops("01_elementwise")]
    path = make_notebook(["import numpy as np"] + [STUB.format(name=n) for n in names])
    report = grade_json(str(path))
    assert report["assignment"] == "01_elementwise"
    assert report["score"] == 0
    assert {op["status"] for op in report["ops"]} == {"missing"}


def test_one_bug_costs_only_that_op_with_the_right_hint(make_notebook):
    buggy = "def exp_backward(input, output_grad):\n    return np.exp(input)\n"
    path = make_notebook(solution_cells("01_elementwise", {"exp_backward": buggy}))
    ops = ops_by_name(grade_json(str(path)))
    assert ops["exp_backward"]["score"] < ops["exp_backward"]["max_score"]
    assert ops["exp_backward"]["status"] in ("partial", "failed")
    hints = {c["hint"] for c in ops["exp_backward"]["cases"] if not c["passed"]}
    assert hints == {"upstream"}
    others = [op for name, op in ops.items() if name != "exp_backward"]
    assert all(op["status"] == "passed" for op in others)


def test_syntax_error_in_one_cell_loses_only_that_cell(make_notebook):
    cells = solution_cells("01_elementwise")
    broken = [c for c in cells if c.startswith("def sin_backward")][0]
    cells[cells.index(broken)] = broken + "\nthis is not python (\n"
    path = make_notebook(cells)
    ops = ops_by_name(grade_json(str(path)))
    assert ops["sin_backward"]["status"] == "missing"
    assert all(op["status"] == "passed" for name, op in ops.items() if name != "sin_backward")


def test_infinite_loop_costs_that_op_only(make_notebook):
    hang = "def tanh_backward(input, output_grad):\n    while True:\n        pass\n"
    path = make_notebook(solution_cells("01_elementwise", {"tanh_backward": hang}))
    ops = ops_by_name(grade_json(str(path), "--timeout", "2"))
    assert ops["tanh_backward"]["status"] == "timeout"
    assert ops["tanh_backward"]["score"] == 0
    assert all(op["status"] == "passed" for name, op in ops.items() if name != "tanh_backward")


def test_uncatchable_hang_in_c_code_is_killed(make_notebook):
    # ignoring SIGALRM defeats the worker's soft deadline: the grader must kill it
    hang = (
        "import signal\n"
        "def tanh_backward(input, output_grad):\n"
        "    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "    while True:\n        pass\n"
    )
    path = make_notebook(solution_cells("01_elementwise", {"tanh_backward": hang}))
    ops = ops_by_name(grade_json(str(path), "--timeout", "1"))
    assert ops["tanh_backward"]["status"] == "timeout"
    assert ops["sigmoid_backward"]["status"] == "passed"


def test_memory_bomb_is_contained(make_notebook):
    bomb = (
        "def exp_backward(input, output_grad):\n"
        "    hoard = []\n"
        "    while True:\n"
        "        hoard.append(np.ones(10**7))\n"
    )
    path = make_notebook(solution_cells("01_elementwise", {"exp_backward": bomb}))
    ops = ops_by_name(grade_json(str(path), "--memory-mb", "1024", "--timeout", "20"))
    assert ops["exp_backward"]["status"] in ("memory", "error")
    assert ops["exp_backward"]["score"] == 0
    assert ops["log_backward"]["status"] == "passed"


def test_worker_crash_costs_that_op_only(make_notebook):
    crash = "import os\ndef sin_backward(input, output_grad):\n    os._exit(3)\n"
    path = make_notebook(solution_cells("01_elementwise", {"sin_backward": crash}))
    ops = ops_by_name(grade_json(str(path)))
    assert ops["sin_backward"]["status"] == "error"
    assert all(op["status"] == "passed" for name, op in ops.items() if name != "sin_backward")


def test_unsupported_results_are_refused(make_notebook):
    object_array = (
        "def neg_backward(input, output_grad):\n"
        "    return np.array([object()] * output_grad.size, dtype=object)\n"
    )
    pickle_bearing = (
        "class Evil:\n"
        "    def __reduce__(self):\n"
        "        import os\n"
        "        return (os.system, ('touch /tmp/gradcheck-pwned',))\n"
        "def exp_backward(input, output_grad):\n"
        "    return Evil()\n"
    )
    cells = solution_cells(
        "01_elementwise", {"neg_backward": object_array, "exp_backward": pickle_bearing}
    )
    ops = ops_by_name(grade_json(str(make_notebook(cells))))
    for name in ("neg_backward", "exp_backward"):
        assert ops[name]["score"] == 0
        assert all("returned" in c["message"] for c in ops[name]["cases"])
    assert ops["sin_backward"]["status"] == "passed"


def test_monkeypatching_numpy_or_importing_the_grader_changes_nothing(make_notebook):
    wrong = "def sin_backward(input, output_grad):\n    return np.sin(input) * output_grad\n"
    plain = solution_cells("01_elementwise", {"sin_backward": wrong})
    hostile = plain + [
        "np.allclose = lambda *a, **k: True\n"
        "np.isclose = lambda *a, **k: True\n"
        "np.testing.assert_allclose = lambda *a, **k: None\n",
        "import gradcheck_kit\ngradcheck_kit.judge = lambda *a, **k: None\n",
        "from autograder import grade\n",
        "try:\n    import torch\nexcept ImportError:\n    torch = None\n",
        "def cos_backward(input, output_grad):\n"
        "    import gradcheck_kit\n"
        "    return -np.sin(input) * output_grad\n",
    ]
    first = grade_json(str(make_notebook(plain)))
    second = grade_json(str(make_notebook(hostile)))
    assert ops_by_name(first)["sin_backward"]["status"] in ("partial", "failed")
    assert ops_by_name(second)["cos_backward"]["status"] == "failed"  # the import fails
    scores = {op["name"]: op["score"] for op in second["ops"]}
    expected = {op["name"]: op["score"] for op in first["ops"]}
    expected["cos_backward"] = 0
    assert scores == expected


def test_secret_never_reaches_student_code(make_notebook):
    spy = (
        "import os\n"
        "def neg_backward(input, output_grad):\n"
        "    if any('SECRET' in k or 'hunter2' in v for k, v in os.environ.items()):\n"
        "        return output_grad\n"
        "    return -output_grad\n"
    )
    path = make_notebook(solution_cells("01_elementwise", {"neg_backward": spy}))
    report = grade_json(str(path), env={"GRADCHECK_SECRET": "hunter2"})
    assert report["secret"] == "environment"
    assert ops_by_name(report)["neg_backward"]["status"] == "passed"


def test_definitions_however_bound_and_top_level_noise(make_notebook):
    cells = solution_cells("01_elementwise")
    cells = [c for c in cells if not c.startswith(("def relu_backward", "def neg_backward"))]
    cells += [
        "%matplotlib inline\n!echo hello\nprint('training...')\nfor i in range(10**9): pass\n",
        "relu_backward = make_backward(lambda x: (x > 0))\n",
        "def make_backward(local):\n"
        "    def backward(input, output_grad):\n"
        "        return output_grad * local(input)\n"
        "    return backward\n",
        "neg_backward = lambda input, output_grad: -SCALE * output_grad\nSCALE = 1.0\n",
        "def sin_backward(input, output_grad):\n    print('noise ' * 10000)\n"
        "    return np.cos(input) * output_grad\n",
        "import sys\nsys.stdout.write('x' * 100000)\n",
    ]
    ops = ops_by_name(grade_json(str(make_notebook(cells)), "--timeout", "5"))
    assert all(op["status"] == "passed" for op in ops.values()), [
        (n, op["status"]) for n, op in ops.items() if op["status"] != "passed"
    ]


def test_later_definition_wins_and_mutation_is_caught(make_notebook):
    cells = solution_cells("01_elementwise") + [
        "def sin_backward(input, output_grad):\n    return np.sin(input) * output_grad\n",
        "def neg_backward(input, output_grad):\n    output_grad *= -1\n    return output_grad\n",
    ]
    ops = ops_by_name(grade_json(str(make_notebook(cells))))
    assert ops["sin_backward"]["status"] in ("partial", "failed")
    hints = {c["hint"] for c in ops["neg_backward"]["cases"] if not c["passed"]}
    assert "mutated-input" in hints


def test_assignment_pin_scores_absent_ops_as_missing(make_notebook):
    path = make_notebook(solution_cells("01_elementwise"))
    report = grade_json(str(path), "--assignment", "03_matmul")
    assert report["assignment"] == "03_matmul"
    assert report["score"] == 0
    assert {op["status"] for op in report["ops"]} == {"missing"}


@pytest.mark.parametrize("kind", ["missing", "directory", "text", "json", "binary", "empty-nb"])
def test_bad_input_exits_2_with_one_line(tmp_path, kind):
    path = tmp_path / "sub.ipynb"
    if kind == "directory":
        path.mkdir()
    elif kind == "text":
        path.write_text("not a notebook")
    elif kind == "json":
        path.write_text('{"hello": 1}')
    elif kind == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    elif kind == "empty-nb":
        path.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    result = run_cli(str(path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_output_never_overwrites_the_submission(make_notebook):
    path = make_notebook(solution_cells("01_elementwise"))
    before = path.read_bytes()
    result = run_cli(str(path), "--output", str(path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert path.read_bytes() == before


def test_fail_under_and_report_formats(make_notebook, tmp_path):
    stub = "def sin_backward(input, output_grad):\n    raise NotImplementedError\n"
    path = make_notebook(solution_cells("01_elementwise", {"sin_backward": stub}))
    assert run_cli(str(path), "--fail-under", "26").returncode == 1
    assert run_cli(str(path), "--fail-under", "25").returncode == 0

    results = tmp_path / "results.json"
    assert run_cli(str(path), "--format", "gradescope", "--output", str(results)).returncode == 0
    gradescope = json.loads(results.read_text())
    assert gradescope["score"] == 25
    visible = [t for t in gradescope["tests"] if t["visibility"] == "visible"]
    assert len(visible) == len(gradcheck_kit.all_ops("01_elementwise"))
    assert sum(t["max_score"] for t in gradescope["tests"]) == 26
    assert all(t["visibility"] in ("visible", "after_published") for t in gradescope["tests"])
    hidden_tests = [t for t in gradescope["tests"] if t["visibility"] == "after_published"]
    assert hidden_tests and all(t["max_score"] == 0 for t in hidden_tests)
    assert not any("hidden" in line for t in visible for line in t["output"].splitlines()[2:])

    junit = run_cli(str(path), "--format", "junit")
    suite = ET.fromstring(junit.stdout)
    classes = {case.get("classname") for case in suite.iter("testcase")}
    assert "sin_backward" in classes and "exp_backward" in classes

    text = run_cli(str(path))
    assert "sin_backward" in text.stdout and "missing" in text.stdout and "25/26" in text.stdout


def test_batch_grades_everything_and_survives_broken_files(make_notebook, tmp_path):
    good = make_notebook(solution_cells("01_elementwise"), "alice.ipynb")
    buggy = "def exp_backward(input, output_grad):\n    return np.exp(input)\n"
    make_notebook(solution_cells("01_elementwise", {"exp_backward": buggy}), "bob.ipynb")
    (tmp_path / "carol.ipynb").write_text("garbage")
    out = tmp_path / "out" / "grades.csv"
    result = run_cli(str(tmp_path), "--jobs", "2", "--csv", str(out))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["file"].rsplit("/", 1)[-1] for r in rows] == [
        "alice.ipynb",
        "bob.ipynb",
        "carol.ipynb",
    ]
    assert float(rows[0]["total"]) == 26
    assert float(rows[1]["exp_backward"]) < 1 and float(rows[1]["sin_backward"]) == 1
    assert rows[2]["error"]
    feedback = out.parent / "feedback"
    assert sorted(p.name for p in feedback.iterdir()) == ["alice.md", "bob.md", "carol.md"]
    assert "upstream" in (feedback / "bob.md").read_text()
    assert good.exists()


def test_gradescope_bundle_runs_against_a_gradescope_layout(tmp_path, make_notebook):
    import os
    import subprocess
    import sys
    import zipfile

    bundle = tmp_path / "autograder.zip"
    made = run_cli("gradescope-bundle", "--assignment", "01_elementwise", "-o", str(bundle))
    assert made.returncode == 0, made.stderr
    root = tmp_path / "autograder"
    source, submission = root / "source", root / "submission"
    submission.mkdir(parents=True)
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
        archive.extractall(source)
    assert {"setup.sh", "run_autograder"} <= set(names)
    assert "gradcheck-kit/pyproject.toml" in names
    assert "gradcheck-kit/autograder/worker.py" in names
    # Gradescope runs a copy of run_autograder in /autograder, not the one in source/
    run_autograder = root / "run_autograder"
    run_autograder.write_bytes((source / "run_autograder").read_bytes())
    run_autograder.chmod(0o755)
    buggy = "def exp_backward(input, output_grad):\n    return np.exp(input)\n"
    cells = solution_cells("01_elementwise", {"exp_backward": buggy})
    make_notebook(cells, "unused.ipynb").rename(submission / "mine.ipynb")
    env = dict(os.environ, GRADCHECK_AUTOGRADER_ROOT=str(root), GRADCHECK_PYTHON=sys.executable)
    env.pop("GRADCHECK_SECRET", None)
    subprocess.run([str(run_autograder)], cwd=root, env=env, check=True, timeout=120)
    results = json.loads((root / "results" / "results.json").read_text())
    assert 24 < results["score"] < 26
    exp = [t for t in results["tests"] if t["name"] == "exp_backward"][0]
    assert exp["score"] < exp["max_score"] == 1

    (submission / "mine.ipynb").write_text("not json")
    subprocess.run([str(run_autograder)], cwd=root, env=env, check=True, timeout=120)
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 0 and "could not grade" in results["output"]
