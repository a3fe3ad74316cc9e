"""Reading a submission: any notebook nbformat can read, upgraded to v4 and validated.

Everything that can go wrong with the file itself becomes one :class:`BadSubmission`
with a one-line message; the CLI turns that into exit code 2.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

#: nbformat accepts anything it can upgrade to this major version
TARGET_VERSION = 4
#: notebooks larger than this are refused rather than parsed
MAX_BYTES = 64 * 1024 * 1024


class BadSubmission(Exception):
    """The submission cannot be read as a notebook; the message is one line."""


def read_notebook(path: str | os.PathLike) -> Any:
    """The notebook at ``path`` as an nbformat v4 NotebookNode."""
    import nbformat

    path = os.fspath(path)
    if not os.path.exists(path):
        raise BadSubmission(f"{path}: no such file")
    if os.path.isdir(path):
        raise BadSubmission(f"{path}: is a directory, not a notebook")
    try:
        size = os.path.getsize(path)
        if size > MAX_BYTES:
            raise BadSubmission(f"{path}: file too large ({size} bytes)")
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except BadSubmission:
        raise
    except UnicodeDecodeError:
        raise BadSubmission(f"{path}: not a notebook (not UTF-8 text)") from None
    except OSError as error:
        raise BadSubmission(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise BadSubmission(f"{path}: not a notebook (invalid JSON: {error})") from None
    except RecursionError:
        raise BadSubmission(f"{path}: not a notebook (JSON nested too deeply)") from None
    if not isinstance(raw, dict) or "cells" not in raw and "worksheets" not in raw:
        raise BadSubmission(f"{path}: not a notebook (no cells)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            notebook = nbformat.reads(text, as_version=TARGET_VERSION)
            nbformat.validate(notebook)
    except Exception as error:  # nbformat raises many kinds for malformed input
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BadSubmission(f"{path}: not a valid notebook ({first[:200]})") from None
    return notebook


def code_cells(notebook: Any) -> list[str]:
    """The source of each code cell, in order (markdown and raw cells are skipped)."""
    sources = []
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            sources.append("".join(source) if isinstance(source, list) else str(source))
    return sources
