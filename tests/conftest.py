"""Fixtures every suite may use: a Jupyter kernel for this interpreter."""

from __future__ import annotations

import json
import os
import sys

import pytest


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
