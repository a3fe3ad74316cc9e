"""``gradcheck-grade assign``: generating student notebooks from solution notebooks."""

from __future__ import annotations

import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from autograder import assign

from .conftest import NAMES, ROOT, solution_path, student_path

TIMING = {"iopub.status.idle": "2024-01-01T00:00:00Z"}


def write(path, cells):
    nb = new_notebook(cells=cells)
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize("name", NAMES)
def test_committed_student_notebook_is_what_the_command_generates(name, tmp_path):
    out = tmp_path / f"{name}.ipynb"
    assert assign.main([str(solution_path(name)), "-o", str(out)]) == 0
    assert out.read_bytes() == student_path(name).read_bytes(), (
        f"regenerate it: python -m autograder.assign {solution_path(name)} -o {student_path(name)}"
    )


@pytest.mark.parametrize("name", NAMES)
def test_generation_is_idempotent(name, tmp_path):
    again = tmp_path / "again.ipynb"
    assert assign.main([str(student_path(name)), "-o", str(again)]) == 0
    assert again.read_bytes() == student_path(name).read_bytes()


@pytest.mark.parametrize("name", NAMES)
def test_student_notebook_keeps_no_solution_or_hidden_content(name):
    text = student_path(name).read_text()
    nb = nbformat.reads(text, as_version=4)
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    assert "Instructor notes" not in text
    for cell in nb.cells:
        assert "hidden" not in cell.metadata.get("tags", [])
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_regions_become_indented_stubs_and_the_rest_is_kept(tmp_path):
    solution = write(
        tmp_path / "solution.ipynb",
        [
            new_markdown_cell(
                "# Title\n\n<!-- BEGIN SOLUTION -->\nThe answer is 42.\n<!-- END SOLUTION -->"
            ),
            new_code_cell(
                "def f(x):\n    '''Doc.'''\n    ### BEGIN SOLUTION\n    y = x + 1\n"
                "    return y\n    ### END SOLUTION\n\n\nprint(1)",
                execution_count=3,
                outputs=[new_output("stream", name="stdout", text="1\n")],
            ),
            new_code_cell("### BEGIN SOLUTION\nz = 2\n### END SOLUTION"),
            new_markdown_cell("secret notes", metadata={"tags": ["hidden"]}),
            new_code_cell("print('instructor only')", metadata={"tags": ["hidden", "x"]}),
            new_code_cell("check(f);", metadata={"tags": ["keep"], "execution": TIMING}),
        ],
    )
    out = tmp_path / "student.ipynb"
    assert assign.main([str(solution), "-o", str(out)]) == 0
    nb = nbformat.read(out, as_version=4)
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code", "code"]
    assert nb.cells[0].source == f"# Title\n\n{assign.MARKDOWN_STUB}"
    assert nb.cells[1].source == f"def f(x):\n    '''Doc.'''\n    {assign.STUB}\n\n\nprint(1)"
    assert nb.cells[1].outputs == [] and nb.cells[1].execution_count is None
    assert nb.cells[2].source == assign.STUB
    assert nb.cells[3].metadata == {"tags": ["keep"]}
    original = nbformat.read(solution, as_version=4)
    assert [c.id for c in nb.cells] == [original.cells[i].id for i in (0, 1, 2, 5)]
    namespace: dict = {}
    exec(nb.cells[1].source.replace("print(1)", ""), namespace)
    with pytest.raises(NotImplementedError):
        namespace["f"](1)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("### BEGIN SOLUTION\nx = 1", "never closed"),
        ("x = 1\n### END SOLUTION", "without BEGIN"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "inside another"),
    ],
)
def test_unbalanced_markers_are_bad_input(tmp_path, capsys, source, problem):
    solution = write(tmp_path / "bad.ipynb", [new_code_cell(source)])
    before = solution.read_bytes()
    out = tmp_path / "out.ipynb"
    assert assign.main([str(solution), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err and "cell 1" in err
    assert not out.exists() and solution.read_bytes() == before


def test_other_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    good = solution_path("01_elementwise")
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json")
    cases = [
        [str(tmp_path / "missing.ipynb"), "-o", str(tmp_path / "o.ipynb")],
        [str(broken), "-o", str(tmp_path / "o.ipynb")],
        [str(good)],  # no -o
        [str(good), "-o", str(tmp_path / "no" / "such" / "dir.ipynb")],
    ]
    for argv in cases:
        assert assign.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1, (argv, err)
    assert broken.read_text() == "{not json"


def test_never_overwrites_the_input(tmp_path, capsys):
    solution = tmp_path / "solution.ipynb"
    solution.write_bytes(solution_path("01_elementwise").read_bytes())
    before = solution.read_bytes()
    assert assign.main([str(solution), "-o", str(solution)]) == 2
    assert assign.main([str(solution), "-o", str(tmp_path / "." / "solution.ipynb")]) == 2
    assert solution.read_bytes() == before
    assert "overwrite" in capsys.readouterr().err


def test_runs_as_a_module(tmp_path):
    out = tmp_path / "student.ipynb"
    done = subprocess.run(
        [sys.executable, "-m", "autograder.assign", str(solution_path("03_matmul")), "-o", out],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == student_path("03_matmul").read_bytes()


def test_a_notebook_with_no_solution_markers_is_refused(tmp_path, capsys):
    # a finished notebook handed in by mistake: its copy would give students the answers
    solution = write(
        tmp_path / "answers.ipynb",
        [
            new_markdown_cell("# 01"),
            new_code_cell(
                "def sin_backward(input, output_grad):\n    return np.cos(input) * output_grad"
            ),
        ],
    )
    before = solution.read_bytes()
    out = tmp_path / "student.ipynb"
    assert assign.main([str(solution), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "BEGIN SOLUTION" in err
    assert not out.exists() and solution.read_bytes() == before
