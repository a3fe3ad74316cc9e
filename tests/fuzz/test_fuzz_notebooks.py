"""Malformed notebooks: the grader reads what it can and refuses the rest in one line.

In process, every file goes through the functions the grader uses (read, list code
cells, extract, detect the assignment); end to end, through ``gradcheck-grade`` itself:
either exit 2 with one line on stderr, or exit 0 with a valid report, never a traceback.
"""

from __future__ import annotations

import json
import os
import tempfile

import nbformat
import pytest
from hypothesis import given

import gradcheck_kit
from autograder.extract import extract
from autograder.grade import detect_assignment
from autograder.notebook import BadSubmission, code_cells, read_notebook

from .conftest import E2E, E2E_SLOW, FUZZ
from .helpers import (
    assert_clean_bad_input,
    assert_valid_report,
    notebook_dict,
    run_cli,
    solution_sources,
)
from .strategies import notebook_bytes

CURRICULUM = {op.name for op in gradcheck_kit.all_ops()}


def _write(data: bytes, directory: str) -> str:
    path = os.path.join(directory, "submission.ipynb")
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def read_and_extract(path: str):
    """What the grader does before any student code runs; BadSubmission or the result."""
    notebook = read_notebook(path)
    cells = code_cells(notebook)
    assert all(isinstance(cell, str) for cell in cells)
    extracted = extract(cells, CURRICULUM)
    detect_assignment(extracted.defined, gradcheck_kit.all_ops())
    for chunk in extracted.chunks:
        json.dumps(chunk.to_json())  # what crosses to the worker must be JSON
        compile(chunk.source, "<chunk>", "exec")
    return extracted


@FUZZ
@given(notebook_bytes())
def test_any_file_is_read_or_refused_in_one_line(data):
    with tempfile.TemporaryDirectory() as directory:
        path = _write(data, directory)
        try:
            read_and_extract(path)
        except BadSubmission as error:
            message = str(error)
            assert message.startswith(path + ": ")
            assert "\n" not in message and len(message) < 400


def _grade_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = _write(data, directory)
        result = run_cli(path, "--format", "json", "--public-only", "--timeout", "5")
        if result.returncode == 2:
            assert_clean_bad_input(result)
        else:
            assert_valid_report(result)


@E2E
@given(notebook_bytes())
def test_cli_on_any_file_exits_cleanly(data):
    _grade_file(data)


@pytest.mark.slow
@E2E_SLOW
@given(notebook_bytes())
def test_cli_on_any_file_exits_cleanly_large(data):
    _grade_file(data)


V3 = {
    "nbformat": 3,
    "nbformat_minor": 0,
    "metadata": {"name": "old"},
    "worksheets": [
        {
            "metadata": {},
            "cells": [
                {"cell_type": "heading", "level": 1, "metadata": {}, "source": "Old"},
                {
                    "cell_type": "code",
                    "input": "import numpy as np",
                    "language": "python",
                    "metadata": {},
                    "outputs": [],
                    "collapsed": False,
                },
                {
                    "cell_type": "code",
                    "input": solution_sources()["neg_backward"],
                    "language": "python",
                    "metadata": {},
                    "outputs": [],
                    "collapsed": False,
                },
            ],
        }
    ],
}


def _v40() -> dict:
    """A genuine nbformat 4.0 file: no cell ids (they arrived in 4.5)."""
    document = notebook_dict(["neg_backward"])
    document["nbformat_minor"] = 0
    for cell in document["cells"]:
        cell.pop("id", None)
    return document


def _list_sources() -> dict:
    document = notebook_dict(["neg_backward"])
    for cell in document["cells"]:
        cell["source"] = "".join(cell["source"])  # nbformat writes lists of lines
    return document


def _deep(depth: int) -> bytes:
    return b'{"cells": [], "metadata": ' + b"[" * depth + b"]" * depth + b"}"


GOOD = json.dumps(notebook_dict(["neg_backward"])).encode()

CORPUS = {
    # name: (file bytes, expected exit code)
    "v3 notebook": (json.dumps(V3).encode(), 0),
    "v4.0 notebook": (json.dumps(_v40()).encode(), 0),
    "sources as single strings": (json.dumps(_list_sources()).encode(), 0),
    "valid": (GOOD, 0),
    "empty file": (b"", 2),
    "utf-8 BOM": (b"\xef\xbb\xbf" + GOOD, 2),
    "utf-16": (GOOD.decode().encode("utf-16"), 2),
    "invalid utf-8": (GOOD[:40] + b"\xff\xfe" + GOOD[40:], 2),
    "truncated": (GOOD[: len(GOOD) // 2], 2),
    "top-level list": (b"[" + GOOD + b"]", 2),
    "top-level string": (b'"notebook"', 2),
    "JSON nested 100000 deep": (_deep(100_000), 2),
    "cells is a string": (GOOD.replace(b'"cells": [', b'"cells": "x", "y": ['), 2),
    "nbformat 5": (GOOD.replace(b'"nbformat": 4', b'"nbformat": 5'), 2),
    "nbformat as text": (GOOD.replace(b'"nbformat": 4', b'"nbformat": "4"'), 2),
    "v3 without worksheets": (json.dumps(dict(V3, worksheets="none")).encode(), 2),
    "cell_type garbage": (GOOD.replace(b'"cell_type": "code"', b'"cell_type": 7', 1), 2),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_cli_on_known_bad_and_odd_files(tmp_path, name):
    data, expected = CORPUS[name]
    path = tmp_path / "submission.ipynb"
    path.write_bytes(data)
    result = run_cli(str(path), "--format", "json", "--public-only", "--timeout", "5")
    if expected == 2:
        assert_clean_bad_input(result)
    else:
        report = assert_valid_report(result)
        statuses = {op["name"]: op["status"] for op in report["ops"]}
        assert statuses["neg_backward"] == "passed", report["notes"]


def test_deeply_nested_json_is_bad_input_not_an_internal_error(tmp_path):
    path = tmp_path / "deep.ipynb"
    path.write_bytes(_deep(100_000))
    with pytest.raises(BadSubmission, match="nested too deeply"):
        read_notebook(path)


@pytest.mark.parametrize(
    "cell",
    [
        "y = " + "-" * 200_000 + "1",  # the parser runs out of stack (MemoryError)
        "a = 1; b = " + "1 + " * 1500 + "1",  # parses, but ast.unparse recurses too deep
    ],
)
def test_extraction_survives_code_too_deep_for_the_parser(cell):
    source = solution_sources()["neg_backward"]
    extracted = extract(["import numpy as np", cell, source], CURRICULUM)
    assert "neg_backward" in extracted.defined  # the other cells still count
    for chunk in extracted.chunks:
        compile(chunk.source, "<chunk>", "exec")


def test_nbformat_reads_what_the_fixtures_write(tmp_path):
    # guard for the corpus above: the "valid" entries really are valid notebooks
    for name in ("v3 notebook", "v4.0 notebook", "sources as single strings", "valid"):
        path = tmp_path / "n.ipynb"
        path.write_bytes(CORPUS[name][0])
        nbformat.validate(read_notebook(path))
