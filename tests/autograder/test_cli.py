"""End-to-end: the real ``gradcheck-grade`` command on real notebooks."""

from __future__ import annotations

import csv
import json
import os
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


# --- what the command line says when something is off ---------------------------------


@pytest.mark.parametrize(
    "flag, value, says",
    [
        ("--timeout", "-1", "0.5"),
        ("--timeout", "0", "0.5"),
        ("--timeout", "nan", "0.5"),
        ("--memory-mb", "10", "256"),
        ("--jobs", "0", "--jobs"),
        ("--efficiency-bound", "0", "--efficiency-bound"),
        ("--efficiency-weight", "-1", "--efficiency-weight"),
        ("--fail-under", "inf", "--fail-under"),
    ],
)
def test_limits_outside_their_range_are_one_line_and_exit_2(make_notebook, flag, value, says):
    path = make_notebook(solution_cells("01_elementwise"))
    result = run_cli(str(path), flag, value)
    assert result.returncode == 2, result.stdout[:300]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert flag in result.stderr and says in result.stderr
    assert result.stdout == ""


def test_the_smallest_memory_limit_accepted_lets_the_worker_grade(make_notebook):
    from autograder.cli import MIN_MEMORY_MB

    path = make_notebook(solution_cells("01_elementwise"))
    report = grade_json(str(path), "--memory-mb", str(MIN_MEMORY_MB))
    assert report["score"] == report["max_score"] > 0 and report["notes"] == []


def test_a_notebook_whose_only_cell_does_not_parse_says_so(make_notebook):
    path = make_notebook(["import numpy as np\nx = np.array([1, 2\n"])
    result = run_cli(str(path))
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert "syntax error" in line and "code cell 1" in line and "line 2" in line


def test_a_notebook_without_curriculum_functions_says_what_to_write(make_notebook):
    path = make_notebook(["import numpy as np\nx = 1\n"])
    result = run_cli(str(path))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "syntax error" not in line and "sin_backward" in line and "--assignment" in line


def test_fail_under_says_the_score_and_the_threshold(make_notebook):
    stub = "def sin_backward(input, output_grad):\n    raise NotImplementedError\n"
    path = make_notebook(solution_cells("01_elementwise", {"sin_backward": stub}))
    result = run_cli(str(path), "--fail-under", "26", "--public-only")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "25/26" in line and "26" in line.split("fail-under", 1)[1]
    assert run_cli(str(path), "--fail-under", "25", "--public-only").stderr == ""


def test_help_lists_every_subcommand_with_a_line():
    result = run_cli("--help")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    for name in ("grade", "gradescope-bundle", "assign"):
        described = [x for x in lines if x.strip().startswith(name + " ")]
        assert described and len(described[0].split()) > 2, (name, result.stdout)


def test_a_mixed_batch_grades_each_as_its_own_with_one_csv_per_assignment(make_notebook, tmp_path):
    make_notebook(solution_cells("01_elementwise"), "alice.ipynb")
    make_notebook(solution_cells("03_matmul"), "bob.ipynb")
    (tmp_path / "carol.ipynb").write_text("=cmd|' /C calc'!A0")
    out = tmp_path / "out" / "grades.csv"
    result = run_cli(str(tmp_path), "--csv", str(out), "--public-only")
    assert result.returncode == 0, result.stderr
    assert "mixes assignments" in result.stderr and "--assignment" in result.stderr
    assert not out.exists()
    first = list(csv.DictReader((out.parent / "grades-01_elementwise.csv").open()))
    third = list(csv.DictReader((out.parent / "grades-03_matmul.csv").open()))
    by_file = {r["file"].rsplit("/", 1)[-1]: r for r in first}
    assert by_file["alice.ipynb"]["assignment"] == "01_elementwise"
    assert float(by_file["alice.ipynb"]["total"]) == float(by_file["alice.ipynb"]["max_score"])
    assert "bob.ipynb" not in by_file and by_file["carol.ipynb"]["error"]
    assert "sin_backward" in first[0] and "matmul_backward" not in first[0]
    (bob,) = [r for r in third if r["file"].endswith("bob.ipynb")]
    assert "matmul_backward" in bob and "sin_backward" not in bob
    assert float(bob["total"]) == float(bob["max_score"]) > 0
    # the ungraded file's row is still defused for spreadsheets
    assert all(not r["error"].startswith("=") for r in first + third)

    pinned = tmp_path / "pinned" / "grades.csv"
    result = run_cli(
        str(tmp_path), "--csv", str(pinned), "--assignment", "01_elementwise", "--public-only"
    )
    assert result.returncode == 0 and "mixes" not in result.stderr
    rows = {r["file"].rsplit("/", 1)[-1]: r for r in csv.DictReader(pinned.open())}
    assert rows["bob.ipynb"]["assignment"] == "01_elementwise"
    assert float(rows["bob.ipynb"]["total"]) < float(rows["bob.ipynb"]["max_score"]) == 26


def test_junit_of_ops_that_could_not_run_is_valid_for_the_strict_schema(make_notebook):
    """The Windy Road / Jenkins junit.xsd asks, of every suite, for name, timestamp
    (to the second, no zone), hostname, tests, failures, errors and time, properties,
    system-out and system-err; of every testcase for name, classname and time; and has
    no <skipped>."""
    import xmlschema

    schema = xmlschema.XMLSchema(str(Path(__file__).parents[1] / "adversarial" / "junit.xsd"))
    hang = "def tanh_backward(input, output_grad):\n    while True:\n        pass\n"
    stub = "def sin_backward(input, output_grad):\n    raise NotImplementedError\n"
    path = make_notebook(
        solution_cells("01_elementwise", {"tanh_backward": hang, "sin_backward": stub})
    )
    text = run_cli(str(path), "--format", "junit", "--timeout", "1", "--public-only").stdout
    schema.validate(text)
    root = ET.fromstring(text)
    assert root.tag == "testsuites" and not root.attrib
    assert not list(root.iter("skipped"))
    for suite in root.iter("testsuite"):
        assert set(suite.attrib) >= {"name", "timestamp", "hostname", "tests", "failures"}
        assert set(suite.attrib) >= {"errors", "time", "package", "id"}
        assert "skipped" not in suite.attrib
        assert [child.tag for child in suite][0] == "properties"
        assert [child.tag for child in suite][-2:] == ["system-out", "system-err"]
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert suites["tanh_backward"].find("testcase/error").get("type") == "timeout"
    assert suites["sin_backward"].find("testcase/error").get("type") == "missing"


# --- Gradescope, laid out and run as Gradescope does it --------------------------------


def _gradescope(tmp_path: Path) -> Path:
    """The layout of tests/adversarial/test_gradescope_secret.py (zip unpacked into
    source/, run_autograder copied to the root, submission/, results/) plus the
    submission_metadata.json Gradescope writes beside them."""
    from tests.adversarial.test_gradescope_secret import SECRET, gradescope_layout

    root = gradescope_layout(tmp_path, "--seed", SECRET)
    (root / "results").mkdir()
    metadata = {"id": 1, "assignment": {"title": "01"}, "users": [{"name": "A Student"}]}
    (root / "submission_metadata.json").write_text(json.dumps(metadata))
    return root


def test_gradescope_grades_the_notebook_that_defines_the_assignment(tmp_path, make_notebook):
    from tests.adversarial.test_gradescope_secret import run_autograder

    root = _gradescope(tmp_path)
    submission = root / "submission"
    # a scratch notebook with two functions, and an unreadable one that sorts first
    scratch = make_notebook(["import numpy as np", solution_sources()["sin_backward"]])
    scratch.rename(submission / "scratch.ipynb")
    (submission / "aaa.ipynb").write_text("not json")
    result, results = run_autograder(root)
    assert result.returncode == 0, result.stderr
    first = results["output"].splitlines()[0]
    assert first.startswith("Graded submission.ipynb of the 3 notebooks submitted")
    assert "defines 17 of the 17 functions of 01_elementwise" in first
    assert "scratch.ipynb defines 1 of the 17" in first and "aaa.ipynb cannot be read" in first
    assert 0 < results["score"] < 26
    names = {t["name"]: t for t in results["tests"]}
    assert names["exp_backward"]["status"] == "failed"
    assert names["exp_backward (hidden cases)"]["status"] == "failed"
    assert all(t["status"] in ("passed", "failed") for t in results["tests"])

    (submission / "submission.ipynb").unlink()
    (submission / "scratch.ipynb").unlink()
    result, results = run_autograder(root)  # only the unreadable one: says why
    assert result.returncode == 0 and results["score"] == 0
    assert "aaa.ipynb" in results["output"] and "could not grade" in results["output"]


def _system_python_refusing_pip() -> str | None:
    """A system interpreter (not a virtual environment) whose distribution marked it
    EXTERNALLY-MANAGED (PEP 668), as Debian 12 and Ubuntu 24.04 do, with venv."""
    import shutil
    import subprocess

    probe = (
        "import os, sys, sysconfig, ensurepip, venv; "
        "marker = os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED'); "
        "print(sys.prefix == sys.base_prefix and os.path.exists(marker))"
    )
    for candidate in ("/usr/bin/python3", shutil.which("python3", path="/usr/bin:/bin")):
        if candidate and os.path.exists(candidate):
            done = subprocess.run([candidate, "-c", probe], capture_output=True, text=True)
            if done.stdout.strip() == "True":
                return candidate
    return None


def test_setup_sh_installs_into_a_venv_where_the_system_python_refuses_pip(tmp_path):
    import subprocess

    system_python = _system_python_refusing_pip()
    if system_python is None:
        pytest.skip("no system python3 marked EXTERNALLY-MANAGED on this machine")
    refused = subprocess.run(
        [system_python, "-m", "pip", "install", "--dry-run", "--no-index", "numpy"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr

    root = _gradescope(tmp_path)
    # python3 on PATH is the system one; nothing of this test's own environment
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(system_python)
    path = f"{bin_dir}:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
    env = {k: v for k, v in os.environ.items() if k.startswith(("PIP_", "HOME", "LANG"))}
    env.update(PATH=path, GRADCHECK_SETUP_NO_SYSTEM="1")
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy"):
        if proxy in os.environ:
            env[proxy] = os.environ[proxy]
    setup = subprocess.run(
        ["bash", "./setup.sh"],
        cwd=root / "source",  # where Gradescope runs it
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert setup.returncode == 0, setup.stderr[-2000:]
    venv_python = root / "venv" / "bin" / "python"
    assert venv_python.exists()

    env.update(GRADCHECK_AUTOGRADER_ROOT=str(root))  # no GRADCHECK_PYTHON: the venv's
    run = subprocess.run(
        [str(root / "run_autograder")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["output"].startswith("Graded submission.ipynb"), results["output"]
    assert 0 < results["score"] < 26
