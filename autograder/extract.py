"""Reading a notebook's code cells into the statements a Jupyter kernel would run.

Each cell is turned into plain Python by IPython's own input transformer (``%magic``,
``%%cell magic`` and ``!shell`` lines become ``get_ipython()`` calls, which the worker's
stand-in shell answers, see kernel.py) and parsed on its own: a syntax error loses that
cell only, as in Jupyter. Nothing is dropped: the worker runs every statement in order.
Only the standard library is used here, and IPython lazily, so that both the worker and
the grader's own tests can load this file.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_transformer = None

#: what IPython's transformer would change: escapes at the start of a line (magics,
#: shell, help, autocall), ``x = %magic`` / ``x = !cmd``, help at the end of a line,
#: pasted prompts. A cell without any of these is plain Python already, and importing
#: IPython (about 0.1 s) is not needed for it.
_IPYTHON_SYNTAX = re.compile(
    r"^[ \t]*[%!?,;/]|=[ \t]*[%!]|\?[ \t]*$|^(?:>>>|\.\.\.|In \[)", re.MULTILINE
)


def _needs_transform(source: str) -> bool:
    if _IPYTHON_SYNTAX.search(source):
        return True
    first = source.lstrip("\r\n")[:1]
    return first in (" ", "\t")  # IPython dedents a cell whose first line is indented


def to_python(source: str) -> str:
    """Cell source with IPython syntax made into plain Python, as a kernel does."""
    global _transformer
    if not _needs_transform(source):
        return source
    if _transformer is None:
        try:
            from IPython.core.inputtransformer2 import TransformerManager
        except ImportError:  # without IPython, magics stay syntax errors (as in nbconvert)
            return source
        _transformer = TransformerManager()
    try:
        return _transformer.transform_cell(source)
    except Exception:  # a cell IPython cannot tokenize: let ast report it
        return source


@dataclass
class Chunk:
    """One parsed code cell: the statements the kernel runs for it, in order."""

    source: str
    cell: int
    line: int
    binds: list[str]
    #: the parsed module (not sent anywhere: the worker parses for itself)
    tree: ast.Module | None = field(default=None, repr=False, compare=False)
    #: lines of imports inside a ``try`` with handlers: the student handles their failure
    guarded: frozenset[int] = frozenset()

    @property
    def filename(self) -> str:
        return f"<cell {self.cell + 1}>"

    def to_json(self) -> dict:
        return {"source": self.source, "filename": self.filename, "binds": self.binds}


@dataclass
class Extracted:
    chunks: list[Chunk] = field(default_factory=list)
    #: names bound at top level by the cells that parsed
    defined: set[str] = field(default_factory=set)
    #: (cell number from 1, one-line message) for each cell that did not parse
    syntax_errors: list[tuple[int, str]] = field(default_factory=list)


def bound_names(node: ast.stmt) -> set[str]:
    """Names a top-level statement binds in the module namespace."""
    names: set[str] = set()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        for alias in node.names:
            if alias.name != "*":
                names.add((alias.asname or alias.name).partition(".")[0])
        return names
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
    stack: list[ast.AST] = [node]
    while stack:  # walk without entering nested scopes
        current = stack.pop()
        if isinstance(current, ast.Name) and isinstance(current.ctx, ast.Store):
            names.add(current.id)
        elif isinstance(current, scopes) and current is not node:
            if not isinstance(current, ast.Lambda):
                names.add(current.name)
            continue
        elif isinstance(current, (ast.Import, ast.ImportFrom)):
            names |= bound_names(current)
            continue
        stack.extend(ast.iter_child_nodes(current))
    return names


def guarded_imports(tree: ast.AST) -> frozenset[int]:
    """Lines of the import statements that sit in the body of a ``try`` with handlers."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and node.handlers:
            for inner in node.body:
                for sub in ast.walk(inner):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return frozenset(lines)


def parse_cell(index: int, raw: str) -> Chunk | tuple[int, str]:
    """The cell ``index`` (from 0) as a Chunk, or (cell number from 1, message) if it
    does not parse."""
    source = to_python(raw)
    filename = f"<cell {index + 1}>"
    try:
        tree = ast.parse(source, filename=filename)
        # what only compiling finds (``return`` outside a function, ``nonlocal`` at the
        # top): a kernel compiles the whole cell first and runs none of it then
        compile(tree, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    except (SyntaxError, ValueError) as error:
        where = f"line {error.lineno}: " if getattr(error, "lineno", None) else ""
        message = getattr(error, "msg", str(error))
        return index + 1, f"{where}{message}"
    except (MemoryError, RecursionError):  # the parser's own stack overflowed
        return index + 1, "code nested too deeply to parse"
    binds: set[str] = set()
    for node in tree.body:
        binds |= bound_names(node)
    return Chunk(source, index, 1, sorted(binds), tree, guarded_imports(tree))


def extract(cells: Iterable[str], wanted: Iterable[str] = ()) -> Extracted:
    """Every code cell in order, parsed. ``wanted`` (the curriculum's names) is not
    needed any more, since every statement runs, and is accepted for older callers."""
    del wanted
    result = Extracted()
    for index, raw in enumerate(cells):
        parsed = parse_cell(index, raw)
        if isinstance(parsed, tuple):
            result.syntax_errors.append(parsed)
            continue
        result.chunks.append(parsed)
        result.defined.update(parsed.binds)
    return result
