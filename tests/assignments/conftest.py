"""Fixtures for the assignment notebooks: paths, a Jupyter kernel for this interpreter,
and loading a notebook's definitions in-process."""

from __future__ import annotations

from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
ASSIGNMENTS = ROOT / "assignments"
SOLUTIONS = ASSIGNMENTS / "solutions"
NAMES = ["01_elementwise", "02_reductions", "03_matmul", "04_conv", "05_engine"]


def solution_path(name: str) -> Path:
    return SOLUTIONS / f"{name}.ipynb"


def student_path(name: str) -> Path:
    return ASSIGNMENTS / f"{name}.ipynb"


def is_check_line(line: str) -> bool:
    return line.startswith("check(")


def load_definitions(path: Path) -> dict:
    """Run a notebook's code cells in one namespace (without its self-check calls)."""
    nb = nbformat.read(path, as_version=4)
    namespace: dict = {"__name__": "__main__"}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not is_check_line(line))
        exec(compile(source, str(path), "exec"), namespace)
    return namespace
