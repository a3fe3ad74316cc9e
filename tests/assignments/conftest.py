"""Fixtures for the assignment notebooks: paths, a Jupyter kernel for this interpreter,
and loading a notebook's definitions in-process."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest

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


@pytest.fixture(scope="session")
def python3_kernel(tmp_path_factory):
    """A kernelspec named ``python3`` that runs this interpreter, found first via JUPYTER_PATH.

    A fresh virtualenv need not have a kernelspec installed; this one always points at the
    interpreter running the tests, which has the project installed.
    """
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    saved = {key: os.environ.get(key) for key in ("JUPYTER_PATH", "PYDEVD_DISABLE_FILE_VALIDATION")}
    old_path = saved["JUPYTER_PATH"]
    os.environ["JUPYTER_PATH"] = str(root) + (os.pathsep + old_path if old_path else "")
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    yield "python3"
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
