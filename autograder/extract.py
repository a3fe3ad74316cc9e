"""Extracting the student's definitions from a notebook's code cells.

Each cell is turned into plain Python the way nbconvert's Python exporter does it
(IPython's input transformer: ``%magic`` and ``!shell`` lines become calls, which are
then dropped like any other top-level call), parsed on its own (a syntax error loses
that cell only), and reduced to the statements that define things: imports, function
and class definitions, simple constants, assignments that bind a curriculum name, and
whatever those need. Plots, prints and training runs are left out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field

_transformer = None


def to_python(source: str) -> str:
    """Cell source with IPython syntax made into plain Python (as nbconvert does)."""
    global _transformer
    if _transformer is None:
        try:
            from IPython.core.inputtransformer2 import TransformerManager
        except ImportError:  # nbconvert's own filter degrades the same way
            return source
        _transformer = TransformerManager()
    try:
        return _transformer.transform_cell(source)
    except Exception:  # a cell IPython cannot tokenize: let ast report it
        return source


@dataclass
class Chunk:
    """One top-level statement to execute in the worker."""

    source: str
    cell: int
    line: int
    binds: list[str]

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "filename": f"<cell {self.cell + 1}>",
            "binds": self.binds,
        }


@dataclass
class Extracted:
    chunks: list[Chunk] = field(default_factory=list)
    #: names bound at top level by the kept statements
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


def used_names(node: ast.AST) -> set[str]:
    """Every name a statement reads, including inside function bodies."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


_LITERAL = (ast.Constant, ast.Tuple, ast.List, ast.Set, ast.Dict, ast.UnaryOp, ast.USub, ast.UAdd)
_LITERAL += (ast.Load, ast.BinOp, ast.Add, ast.Sub)


def _is_constant(value: ast.expr) -> bool:
    """Whether ``value`` is a literal (numbers, strings, containers of them): decided by
    the shape of its tree alone, in one pass. ``ast.literal_eval`` would build the value,
    and a set literal of colliding hashes takes quadratic time to build."""
    return all(isinstance(node, _LITERAL) for node in ast.walk(value))


#: imported only for display; kept only if a kept statement uses them (they are slow)
_DISPLAY_MODULES = {"matplotlib", "seaborn", "IPython", "tqdm", "ipywidgets", "plotly", "pandas"}


def _is_display_import(node: ast.stmt) -> bool:
    if isinstance(node, ast.Import):
        return all(a.name.partition(".")[0] in _DISPLAY_MODULES for a in node.names)
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").partition(".")[0] in _DISPLAY_MODULES
    return False


def _is_definition(node: ast.stmt) -> bool:
    if _is_display_import(node):
        return False
    return isinstance(
        node,
        (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef),
    )


def _is_constant_assignment(node: ast.stmt) -> bool:
    if isinstance(node, ast.Assign):
        simple = all(isinstance(t, ast.Name) for t in node.targets)
        return simple and _is_constant(node.value)
    if isinstance(node, ast.AnnAssign):
        return (
            isinstance(node.target, ast.Name)
            and node.value is not None
            and _is_constant(node.value)
        )
    return False


def _candidate(node: ast.stmt) -> bool:
    """Statements that may be kept if they bind a needed name (helpers, aliases,
    factories, guarded imports); loops, calls and bare expressions never are."""
    return isinstance(
        node, (ast.Assign, ast.AnnAssign, ast.If, ast.Try, ast.With, ast.Import, ast.ImportFrom)
    )


#: at most this many newlines of padding in all the chunks together: each chunk is
#: padded to its line in the cell, which grows as lines x statements for a huge cell
PADDING_BUDGET = 4 * 1024 * 1024


def _segment(lines: list[str], node: ast.stmt, shared: bool, padding: int) -> str:
    """The statement's own text, padded with ``padding`` newlines (so that tracebacks
    show the cell's line numbers)."""
    start = _start(node)
    if shared:  # another statement shares its lines (``a = 1; b = 2``)
        try:
            text = ast.unparse(node)
        except RecursionError:  # unparse recurses; the exact source text does not
            text = ast.get_source_segment("".join(lines), node) or ""
        return "\n" * padding + text + "\n"
    body = "".join(lines[start - 1 : node.end_lineno])
    return "\n" * padding + body + ("" if body.endswith("\n") else "\n")


def _start(node: ast.stmt) -> int:
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])


def extract(cells: Iterable[str], wanted: Iterable[str]) -> Extracted:
    """The definitions in ``cells`` (code cell sources), keeping every binding of a name
    in ``wanted`` (the curriculum's function names) and the helpers they need."""
    wanted = set(wanted)
    result = Extracted()
    statements: list[tuple[int, ast.stmt, list[str], bool, set[str]]] = []
    for index, raw in enumerate(cells):
        source = to_python(raw)
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError) as error:
            where = f"line {error.lineno}: " if getattr(error, "lineno", None) else ""
            message = getattr(error, "msg", str(error))
            result.syntax_errors.append((index + 1, f"{where}{message}"))
            continue
        except (MemoryError, RecursionError):  # the parser's own stack overflowed
            result.syntax_errors.append((index + 1, "code nested too deeply to parse"))
            continue
        lines = source.splitlines(keepends=True)
        line_use: dict[int, int] = {}
        for node in tree.body:
            for n in range(node.lineno, node.end_lineno + 1):
                line_use[n] = line_use.get(n, 0) + 1
        for node in tree.body:
            shared = any(line_use[n] > 1 for n in range(node.lineno, node.end_lineno + 1))
            statements.append((index, node, lines, shared, bound_names(node)))

    keep = [
        _is_definition(node) or _is_constant_assignment(node) or bool(binds & wanted)
        for _, node, _, _, binds in statements
    ]
    # pull in whatever the kept statements read, until nothing new is needed
    # (a work list: each statement's names are read once, however long the chain)
    binders: dict[str, list[int]] = {}
    for i, (_, node, _, _, binds) in enumerate(statements):
        if not keep[i] and _candidate(node):
            for name in binds:
                binders.setdefault(name, []).append(i)
    needed: set[str] = set()
    work = [i for i, kept in enumerate(keep) if kept]
    while work:
        for name in used_names(statements[work.pop()][1]) - needed:
            needed.add(name)
            for j in binders.get(name, []):
                if not keep[j]:
                    keep[j] = True
                    work.append(j)
    budget = PADDING_BUDGET
    for i, (cell, node, lines, shared, binds) in enumerate(statements):
        if keep[i]:
            padding = _start(node) - 1 if _start(node) - 1 <= budget else 0
            budget -= padding
            text = _segment(lines, node, shared, padding)
            result.chunks.append(Chunk(text, cell, node.lineno, sorted(binds)))
            result.defined |= binds
    return result
