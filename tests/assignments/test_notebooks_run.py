"""Every assignment notebook runs top to bottom in a real Jupyter kernel."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import NAMES, is_check_line, solution_path, student_path


def execute(path, kernel_name: str):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    return nb


def check_outputs(nb) -> list[tuple[str, str]]:
    """(source, shown text) of every self-check cell."""
    found = []
    for cell in nb.cells:
        if cell.cell_type == "code" and any(is_check_line(x) for x in cell.source.splitlines()):
            shown = []
            for output in cell.outputs:
                if output.output_type == "stream":
                    shown.append(output.text)
                elif output.output_type in ("display_data", "execute_result"):
                    data = output.data
                    shown.append(data.get("text/html") or data.get("text/plain", ""))
            found.append((cell.source, "".join(shown)))
    return found


@pytest.mark.parametrize("name", NAMES)
def test_solution_notebook_runs_and_every_self_check_is_correct(name, python3_kernel):
    nb = execute(solution_path(name), python3_kernel)
    checks = check_outputs(nb)
    assert checks, "the notebook has no self-check cells"
    for source, shown in checks:
        assert "all correct" in shown and "FAIL" not in shown, (source, shown[:500])


@pytest.mark.parametrize("name", NAMES)
def test_student_notebook_runs_and_reports_not_implemented(name, python3_kernel):
    nb = execute(student_path(name), python3_kernel)
    checks = check_outputs(nb)
    assert checks
    for source, shown in checks:
        assert "not implemented" in shown, (source, shown[:500])


def _tables(cell) -> int:
    """How many result tables a cell shows (HTML outputs holding check()'s table)."""
    return sum(
        "<table>" in output.get("data", {}).get("text/html", "")
        for output in cell.outputs
        if output.output_type in ("display_data", "execute_result")
    )


def test_check_shows_its_table_once_in_a_real_kernel(tmp_path, python3_kernel):
    nb = nbformat.v4.new_notebook()
    define = "from gradcheck_kit import check\n\ndef sin_backward(input, output_grad):\n"
    nb.cells = [
        nbformat.v4.new_code_cell(define + "    return input.cos() * output_grad"),
        nbformat.v4.new_code_cell("check(sin_backward, efficiency=False)"),  # no trailing ;
        nbformat.v4.new_code_cell("result = check(sin_backward, efficiency=False)"),
        nbformat.v4.new_code_cell("result"),  # asked for again, in another cell
        nbformat.v4.new_code_cell("check(sin_backward, efficiency=False);"),
    ]
    path = tmp_path / "once.ipynb"
    nbformat.write(nb, path)
    cells = execute(path, python3_kernel).cells
    assert [_tables(cell) for cell in cells[1:]] == [1, 1, 1, 1]
