"""Fixtures: real notebooks built with nbformat from the test-only correct solutions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.notebooks import (  # noqa: F401  (the suites import them from here)
    build_notebook,
    grade_json,
    helpers_for,
    ops_by_name,
    run_cli,
    solution_cells,
    solution_sources,
)


@pytest.fixture
def make_notebook(tmp_path):
    counter = iter(range(10_000))

    def make(cells: list[str], name: str | None = None) -> Path:
        return build_notebook(tmp_path / (name or f"nb{next(counter)}.ipynb"), cells)

    return make
