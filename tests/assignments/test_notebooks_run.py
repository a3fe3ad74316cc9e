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
