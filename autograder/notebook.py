"""Reading a submission: any notebook nbformat can read, upgraded to v4 and validated.

Everything that can go wrong with the file itself becomes one :class:`BadSubmission`
with a one-line message; the CLI turns that into exit code 2.

Only regular files are read, and symlinks are never followed, even when named on the
command line: a submission that is a link to a classmate's notebook or to a solution
must not be graded as the student's own, and a link to a device or a FIFO must not
block the grader or fill its memory. To grade the file a link points to, name that
file. The file is opened without following a link and without blocking, checked on
the opened descriptor, and read up to :data:`MAX_BYTES` plus one byte whatever its
size says, so a file that grows while it is read is refused too.

The text is parsed once (the JSON, straight into NotebookNodes) and validated once,
with fastjsonschema when nbformat has it, after a count of its brackets bounds the
number of JSON containers: each step is linear in the file's size with a bounded
constant (``benchmarks/pathological_notebooks.py`` measures them).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import warnings
from typing import Any

#: nbformat accepts anything it can upgrade to this major version
TARGET_VERSION = 4
#: notebooks larger than this are refused rather than parsed
MAX_BYTES = 64 * 1024 * 1024

#: a bound on the JSON containers (at most one per "[" or "{", counted in the bytes
#: before parsing): each costs the parser about 70 bytes of memory for 2 bytes of file,
#: so without it 64 MB of "[]" would take the grader 2.5 GB. Real notebooks, outputs
#: of printed arrays included, have far fewer than one per 16 bytes
MAX_BRACKETS = MAX_BYTES // 16

#: what a non-regular entry is, for the message that refuses it
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}
#: never follow the last component, never wait for a writer, never become a terminal
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
#: read a little past the size fstat reports, to see the end of the file in one call
_SLACK = 64 * 1024


class BadSubmission(Exception):
    """The submission cannot be read as a notebook; the message is one line."""


def _refuse_kind(path: str, mode: int) -> None:
    if stat.S_ISLNK(mode):
        raise BadSubmission(f"{path}: symlink, not followed")
    if stat.S_ISDIR(mode):
        raise BadSubmission(f"{path}: is a directory, not a notebook")
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a file")
        raise BadSubmission(f"{path}: not a regular file ({kind})")


def _too_large(path: str, size: int | str, limit: int) -> BadSubmission:
    return BadSubmission(f"{path}: file too large ({size} bytes; the limit is {limit})")


def read_bytes(path: str | os.PathLike, limit: int = MAX_BYTES) -> bytes:
    """The content of the regular file at ``path``, at most ``limit`` bytes.

    Refuses symlinks (never followed), FIFOs, sockets, devices and directories, and
    files over ``limit`` (by their size before reading, and again by what is read).
    """
    path = os.fspath(path)
    try:
        # refuse what is visibly not a file before opening it: opening a device can
        # have effects of its own
        _refuse_kind(path, os.lstat(path).st_mode)
        fd = os.open(path, _OPEN_FLAGS)
    except BadSubmission:
        raise
    except FileNotFoundError:
        raise BadSubmission(f"{path}: no such file") from None
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENXIO):  # replaced since the lstat
            try:
                _refuse_kind(path, os.lstat(path).st_mode)
            except OSError:
                pass
        raise BadSubmission(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        # the descriptor decides: the entry may have been swapped since the lstat
        status = os.fstat(fd)
        _refuse_kind(path, status.st_mode)
        if status.st_size > limit:
            raise _too_large(path, status.st_size, limit)
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            want = min(limit + 1 - total, max(status.st_size - total, 0) + _SLACK)
            chunk = os.read(fd, want)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise _too_large(path, f"over {limit}", limit)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except BadSubmission:
        raise
    except OSError as error:
        raise BadSubmission(f"{path}: cannot read ({error.strerror or error})") from None
    finally:
        os.close(fd)


def read_notebook(path: str | os.PathLike) -> Any:
    """The notebook at ``path`` as an nbformat v4 NotebookNode."""
    import nbformat

    path = os.fspath(path)
    data = read_bytes(path)
    brackets = data.count(b"[") + data.count(b"{")
    if brackets > MAX_BRACKETS:
        raise BadSubmission(
            f"{path}: not a notebook this grader reads ({brackets} '[' and '{{' "
            f"characters; the limit is {MAX_BRACKETS})"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadSubmission(f"{path}: not a notebook (not UTF-8 text)") from None
    del data  # the bytes and the text of a 64 MB notebook need not both stay alive
    from nbformat import NotebookNode

    try:
        # NotebookNodes straight from the parser: no second copy of the whole tree
        raw = json.loads(text, object_hook=NotebookNode)
    except ValueError as error:
        raise BadSubmission(f"{path}: not a notebook (invalid JSON: {error})") from None
    except RecursionError:
        raise BadSubmission(f"{path}: not a notebook (JSON nested too deeply)") from None
    del text
    if not isinstance(raw, dict) or "cells" not in raw and "worksheets" not in raw:
        raise BadSubmission(f"{path}: not a notebook (no cells)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            notebook = _upgrade(nbformat, raw)
            del raw
    except RecursionError:
        raise BadSubmission(f"{path}: not a valid notebook (nested too deeply)") from None
    except Exception as error:  # nbformat raises many kinds for malformed input
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BadSubmission(f"{path}: not a valid notebook ({first[:200]})") from None
    return notebook


def _upgrade(nbformat: Any, raw: dict) -> Any:
    """What ``nbformat.reads`` does after its own JSON parse, validating once: the
    notebook converted to v4 and validated."""
    from nbformat.reader import get_version

    major, minor = get_version(raw)
    if major not in nbformat.versions:
        raise nbformat.NBFormatError(f"Unsupported nbformat version {major}")
    if major == TARGET_VERSION:
        # v4's to_notebook_json without its first step, a copy of the whole tree into
        # NotebookNodes, which the parser already made; validated first, so that a
        # malformed cell gets the schema's message
        from nbformat.v4.rwbase import rejoin_lines, strip_transient

        _validate(nbformat, raw)
        return strip_transient(rejoin_lines(raw))
    try:
        notebook = nbformat.versions[major].to_notebook_json(raw, minor=minor)
    except AttributeError as error:
        raise nbformat.ValidationError(f"missing an expected key: {error}") from None
    notebook = nbformat.convert(notebook, TARGET_VERSION)
    _validate(nbformat, notebook)
    return notebook


def _validate(nbformat: Any, notebook: Any) -> None:
    """nbformat's validation, on fastjsonschema's compiled schema when nbformat has it
    (nbformat itself picks it only from an environment variable). A refusal keeps
    fastjsonschema's own message: nbformat would redo the whole validation with
    jsonschema for a better one, which takes minutes on a large notebook."""
    try:
        from nbformat.corpus.words import generate_corpus_id
        from nbformat.validator import get_validator

        version, minor = notebook.get("nbformat"), notebook.get("nbformat_minor")
        fast = get_validator(version, minor, name="fastjsonschema")
    except Exception:  # noqa: BLE001  (an older nbformat, or no fastjsonschema installed)
        fast = None
    if fast is None:
        nbformat.validate(notebook)
        return
    cells = notebook.get("cells")
    if (version, minor) >= (4, 5) and isinstance(cells, list):
        for cell in cells:  # what nbformat.validate repairs before validating
            if isinstance(cell, dict) and "id" not in cell:
                cell["id"] = generate_corpus_id()
    fast.validate(notebook)


def code_cells(notebook: Any) -> list[str]:
    """The source of each code cell, in order (markdown and raw cells are skipped)."""
    sources = []
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            sources.append("".join(source) if isinstance(source, list) else str(source))
    return sources
