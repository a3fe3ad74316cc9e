"""Solution notebooks never reach students: not in the wheel, not referenced by package code."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest

from .conftest import ROOT, SOLUTIONS


def test_package_code_does_not_reference_the_solutions():
    for package in ("gradcheck_kit", "autograder"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            assert "assignments/solutions" not in text and "solutions/0" not in text, path


def test_solutions_are_outside_the_packages():
    assert SOLUTIONS.is_dir()
    for package in ("gradcheck_kit", "autograder"):
        assert not list((ROOT / package).rglob("*.ipynb"))


def test_built_wheel_has_no_notebooks(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    for folder in ("gradcheck_kit", "autograder", "assignments"):
        skip = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / folder, source / folder, ignore=skip)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=240,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot build a wheel here (no build backend?): {done.stderr[-300:]}")
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("gradcheck_kit/") for n in names)
    assert not [n for n in names if n.endswith(".ipynb") or n.startswith("assignments")], names
