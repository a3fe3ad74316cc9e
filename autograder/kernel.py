"""Running a notebook's code cells the way a Jupyter kernel does, inside the worker.

What the grader checks is the namespace a kernel has after Run All: every code cell in
order, each top-level statement on its own (as IPython runs them), a cell that raises
keeping what it bound before the error, later cells running all the same. Around that:

- IPython syntax: extract.py turns magics into ``get_ipython()`` calls; the stand-in
  shell here runs the body of ``%%time``, ``%%capture`` and ``%%prun`` in the
  namespace, and that of ``%%timeit`` once in a scope of its own (as IPython does);
  shell escapes, ``%matplotlib``, ``%load_ext`` and the like do nothing.
- ``display``, ``get_ipython`` and an ``input`` that raises are builtins, as in a kernel.
- ``from gradcheck_kit import check`` at the top of a cell gives a ``check`` that does
  nothing (the real package stays unimportable); a module this machine lacks, imported
  at the top of a cell outside a ``try``, becomes a placeholder whose names do nothing
  while the notebook loads and raise once a graded function uses them. Both are noted.
- Time: each cell gets ``cell_timeout`` seconds and all of them ``notebook_timeout``; a
  cell over budget is stopped (the worker's SIGALRM) and the next one runs.

A cell that stopped on a ``NameError`` for a name a later cell binds is run again from
that statement once every cell has run: the curriculum lets a factory be defined after
its use. That is the one place where the grader is kinder than Run All, and it is noted.

Only the standard library is imported here (IPython lazily, through extract.py).
"""

from __future__ import annotations
import __future__ as future_module

import ast
import builtins
import dis
import importlib.util
import linecache
import os
import signal
import sys
import time
import types
from collections.abc import Callable
from typing import Any

#: true while the notebook's top-level code runs: placeholders then do nothing
_LOADING = False

#: line magics of IPython and ipykernel that change nothing a grader looks at
QUIET_LINE_MAGICS = frozenset(
    "alias alias_magic autoawait autocall automagic autoreload aimport autosave bookmark "
    "cat cd clear code_wrap colors conda config connect_info cp dhist dirs doctest_mode "
    "ed edit env gui hist history killbgscripts ldir less lf lk ll load_ext logoff logon "
    "logstart logstate logstop ls lsmagic lx magic mamba man matplotlib micromamba mkdir "
    "more mv notebook page pastebin pdb pdef pdoc pfile pinfo pinfo2 pip popd pprint "
    "precision psearch psource pushd pwd pycat qtconsole quickref rehashx reload_ext rm "
    "rmdir sc set_env store sx system tb unalias unload_ext uv who who_ls whos xmode "
    "debug".split()
)
#: cell magics whose body is not Python for this kernel (shells, other languages, display)
QUIET_CELL_MAGICS = frozenset(
    "! HTML SVG bash code_wrap debug html javascript js latex markdown perl pypy python "
    "python2 python3 ruby script sh svg sx system".split()
)
#: these run their body in the namespace, as IPython does
RUNNING_CELL_MAGICS = frozenset({"time", "capture", "prun"})
#: options of %timeit that take a value
_TIMEIT_VALUED = frozenset({"-n", "-r", "-p"})


class UsageError(Exception):
    """What IPython raises for a cell magic it does not know (the cell does not run)."""


class Missing:
    """Stands in for a module the grading machine lacks, or for a name taken from one.

    While the notebook loads it does nothing: calls return another placeholder (one
    that iterates over its first argument, as ``tqdm(range(3))`` does), unpacking gives
    as many placeholders as asked for. In a graded function it raises."""

    __slots__ = ("_path", "_why", "_wraps")

    def __init__(self, path: str, why: str, wraps: Any = None):
        self._path, self._why, self._wraps = path, why, wraps

    def __getattr__(self, name: str) -> Missing:
        if name.startswith("__"):
            raise AttributeError(name)
        return Missing(f"{self._path}.{name}", self._why)

    def __call__(self, *args: Any, **kwargs: Any) -> Missing:
        if not _LOADING:
            raise ModuleNotFoundError(f"{self._path}: {self._why}")
        return Missing(f"{self._path}()", self._why, args[0] if args else None)

    def __iter__(self):
        if self._wraps is not None:
            try:
                return iter(self._wraps)
            except TypeError:
                pass
        if not _LOADING:
            raise ModuleNotFoundError(f"{self._path}: {self._why}")
        count = _unpacking(sys._getframe(1))
        return iter([Missing(f"{self._path}[{i}]", self._why) for i in range(count)])

    def __getitem__(self, key: Any) -> Missing:
        return Missing(f"{self._path}[...]", self._why)

    def __enter__(self) -> Missing:
        return self

    def __exit__(self, *exc: Any) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<{self._path}: {self._why}>"


def _unpacking(frame: types.FrameType) -> int:
    """How many values the statement being run unpacks (``fig, ax = plt.subplots()``)."""
    try:
        for instruction in dis.get_instructions(frame.f_code):
            if instruction.offset == frame.f_lasti:
                if instruction.opname == "UNPACK_SEQUENCE":
                    return int(instruction.arg)
                if instruction.opname == "UNPACK_EX":
                    return (instruction.arg & 0xFF) + (instruction.arg >> 8)
                return 0
    except Exception:  # noqa: BLE001  (an unusual frame: iterate over nothing)
        pass
    return 0


class _PlaceholderModule(types.ModuleType):
    """A module whose every public name is a :class:`Missing` (a package, so that
    ``import a.b`` and ``from a import b`` find placeholders too)."""

    def __getattr__(self, name: str) -> Missing:
        if name.startswith("__"):
            raise AttributeError(name)
        return Missing(f"{self.__name__}.{name}", self.__dict__.get("_why", "not available"))


def _no_check(*args: Any, **kwargs: Any) -> None:
    """``check()`` while grading: the grader checks, the notebook's call costs nothing."""
    return None


class _Loader:
    def __init__(self, why: str, stub: bool):
        self.why, self.stub = why, stub

    def create_module(self, spec: Any) -> types.ModuleType:
        module = _PlaceholderModule(spec.name)
        module._why = self.why
        if self.stub:
            module.check = module.load_course = _no_check
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


#: frames of the import machinery, between a cell's import and a finder: ``import x``
#: itself, and ``importlib.import_module`` or ``importlib.util.find_spec`` (a notebook's
#: "install the course's package if it is missing" cell asks the latter)
_IMPORTLIB = ("<frozen importlib", os.path.dirname(importlib.util.__file__) + os.sep)


def _import_site() -> tuple[str, int] | None:
    """(file name, line) of the import statement running, if it is a notebook cell's
    top-level code; None for imports inside functions, libraries and ``exec``."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_IMPORTLIB):
        frame = frame.f_back
    if frame is None or frame.f_code.co_name != "<module>":
        return None
    if not frame.f_code.co_filename.startswith("<cell "):
        return None
    return frame.f_code.co_filename, frame.f_lineno


class _CellImports:
    """Meta path finder for the imports of the cells' top-level code: in front of the
    worker's blocker for the grader's own package and the blocked frameworks, at the
    end of ``sys.meta_path`` for modules nobody else found."""

    def __init__(self, kernel: Kernel, front: bool):
        self.kernel, self.front = kernel, front

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        root = name.partition(".")[0]
        if self.front and root not in self.kernel.blocked:
            return None
        site = _import_site()
        if site is None:
            return None
        stub = root == "gradcheck_kit"
        if not stub and site[1] in self.kernel.guarded.get(site[0], ()):
            return None  # the student's own except clause decides, as in their kernel
        if stub:
            why = "gradcheck_kit's checks do not run while grading"
        elif self.front:
            why = f"{root} cannot be used in graded code"
            self.kernel.note_once(site[0], root, f"{root} cannot be used in graded code")
        else:
            why = f"{root} is not installed on the grading machine"
            self.kernel.note_once(
                site[0],
                root,
                f"module {root} is not installed on the grading machine; its names do "
                "nothing here and fail in a graded function",
            )
        self.kernel.placeholders.add(name)
        return importlib.util.spec_from_loader(name, _Loader(why, stub), is_package=True)


class _Captured:
    """What ``%%capture name`` binds: nothing was captured, and showing it shows nothing."""

    stdout = stderr = ""
    outputs: list = []

    def show(self) -> None:
        return None

    __call__ = show


class Shell:
    """The object ``get_ipython()`` returns: magics run or do nothing, shells do nothing."""

    def __init__(self, kernel: Kernel):
        self._kernel = kernel
        self.user_ns = kernel.namespace

    def run_line_magic(self, magic_name: str, line: str, _stack_depth: int = 1) -> Any:
        return self._kernel.line_magic(str(magic_name), str(line), sys._getframe(1))

    def run_cell_magic(self, magic_name: str, line: str, cell: str) -> Any:
        return self._kernel.cell_magic(str(magic_name), str(line), str(cell), sys._getframe(1))

    def magic(self, arg_s: str) -> Any:
        name, _, line = str(arg_s).lstrip("%").partition(" ")
        return self._kernel.line_magic(name, line, sys._getframe(1))

    def system(self, cmd: str) -> None:
        return None

    def getoutput(self, cmd: str, split: bool = True, depth: int = 0) -> list:
        return []


def _display(*objs: Any, **kwargs: Any) -> None:
    """``display()`` without a front end: the text form of each object, as IPython's."""
    for obj in objs:
        print(repr(obj))


def _input(prompt: str = "") -> str:
    raise EOFError("input() is not available while grading: nobody can type an answer")


class Kernel:
    """Runs cells in ``namespace``; one instance per load."""

    def __init__(
        self,
        namespace: dict,
        *,
        parse_cell: Callable[[int, str], Any],
        bound_names: Callable[[ast.stmt], set[str]],
        stop: type[BaseException],
        on_alarm: Callable,
        take_output: Callable[[], str],
        blocked: frozenset[str],
        output_cap: int = 4000,
    ):
        self.namespace = namespace
        self.parse_cell, self.bound_names = parse_cell, bound_names
        self.stop, self.on_alarm = stop, on_alarm
        # the worker's own streams: student code may replace sys.stdout for a cell
        self.streams = sys.stdout, sys.stderr
        self.take_output, self.output_cap = take_output, output_cap
        self.blocked = frozenset(blocked)
        self.guarded: dict[str, frozenset[int]] = {}
        self.placeholders: set[str] = set()
        self.notes: list[str] = []
        self._noted: set[tuple[str, str]] = set()
        self._flags = 0  # __future__ features, carried from statement to statement
        self._output: list[str] = []
        self._output_size = 0
        self.shell = Shell(self)
        scope = dict(builtins.__dict__)
        scope.update(display=_display, get_ipython=lambda: self.shell, input=_input)
        namespace["__builtins__"] = scope

    # --- notes ------------------------------------------------------------------

    def note(self, text: str) -> None:
        if len(self.notes) < 50:
            self.notes.append(text[:300])

    def note_once(self, filename: str, key: str, text: str) -> None:
        if (filename, key) not in self._noted:
            self._noted.add((filename, key))
            self.note(f"{filename.strip('<>')}: {text}")

    # --- running ----------------------------------------------------------------

    def run(self, cells: list[str], cell_timeout: float, notebook_timeout: float) -> dict:
        """Run every cell; the load reply's fields (``errors``, ``syntax_errors``,
        ``notes``, ``output``), without ``callable``."""
        global _LOADING
        deadline = time.monotonic() + notebook_timeout
        chunks, syntax = [], []
        for index, raw in enumerate(cells):
            raw = raw if isinstance(raw, str) else ""
            parsed = self.parse_cell(index, raw)
            if isinstance(parsed, tuple):
                syntax.append({"cell": parsed[0], "error": parsed[1]})
                continue
            chunks.append(parsed)
            self.guarded[parsed.filename] = parsed.guarded
            lines = raw.splitlines(keepends=True)
            linecache.cache[parsed.filename] = (len(raw), None, lines, parsed.filename)
        #: cell index -> (statement it stopped at, the error)
        stopped: dict[int, tuple[int, BaseException]] = {}
        front, back = _CellImports(self, True), _CellImports(self, False)
        sys.meta_path.insert(0, front)
        sys.meta_path.append(back)
        _LOADING = True
        try:
            for position, chunk in enumerate(chunks):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    rest = [c.cell + 1 for c in chunks[position:]]
                    self.note(_not_run(rest, notebook_timeout))
                    break
                outcome = self._run_cell(chunk, 0, cell_timeout, deadline)
                if outcome is not None:
                    stopped[chunk.cell] = outcome
            self._retry_forward_references(chunks, stopped, cell_timeout, deadline)
        finally:
            _LOADING = False
            for finder in (front, back):
                if finder in sys.meta_path:
                    sys.meta_path.remove(finder)
            self._forget_placeholders()
            self._collect_output()
        errors = []
        for cell, (_, error) in sorted(stopped.items()):
            if isinstance(error, self.stop):
                continue  # noted as a timeout already
            errors.append(
                {"cell": cell, "line": _error_line(error, f"<cell {cell + 1}>"), "error": error}
            )
        return {
            "errors": errors,
            "syntax_errors": syntax,
            "notes": self.notes,
            "output": "".join(self._output),
        }

    def _run_cell(
        self, chunk: Any, start: int, cell_timeout: float, deadline: float
    ) -> tuple[int, BaseException] | None:
        """Run the cell's statements from ``start``; (statement, error) if one raised."""
        budget = max(min(cell_timeout, deadline - time.monotonic()), 0.001)
        at = start
        try:
            signal.signal(signal.SIGALRM, self.on_alarm)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGALRM])
            # the alarm repeats: one swallowed where Python cannot raise it (a __del__,
            # a callback) must not let the cell run on for ever
            signal.setitimer(signal.ITIMER_REAL, budget, 0.5)
            try:
                for at in range(start, len(chunk.tree.body)):
                    self._exec_node(chunk.tree.body[at], chunk.filename, self.namespace)
                    self._forget_placeholders()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except self.stop as error:
            if budget < cell_timeout:
                why = "the notebook's top-level code used up its time (--notebook-timeout)"
            else:
                why = "the time budget of one cell (--cell-timeout)"
            self.note(
                f"cell {chunk.cell + 1} stopped after {budget:.3g} s, {why}; what it "
                "defined before that was kept"
            )
            return at, error
        except BaseException as error:  # noqa: BLE001  (SystemExit too: student code)
            return at, error
        finally:
            self._restore()
        return None

    def _exec_node(self, node: ast.stmt, filename: str, globals_: dict, locals_=None) -> Any:
        code = compile(ast.Module([node], []), filename, "exec", self._flags, dont_inherit=True)
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            for alias in node.names:
                feature = getattr(future_module, alias.name, None)
                self._flags |= getattr(feature, "compiler_flag", 0)
        exec(code, globals_, globals_ if locals_ is None else locals_)

    def _retry_forward_references(self, chunks, stopped, cell_timeout, deadline) -> None:
        """Cells stopped by a NameError for a name bound later: the rest of the cell runs
        again at the end, unless a later cell rebinds what that rest binds."""
        by_cell = {chunk.cell: chunk for chunk in chunks}
        for _ in range(3):
            progress = False
            for cell, (at, error) in sorted(stopped.items()):
                name = getattr(error, "name", None)
                if type(error) is not NameError or name not in self.namespace:
                    continue
                chunk = by_cell[cell]
                binds: set[str] = set()
                for node in chunk.tree.body[at:]:
                    binds |= self.bound_names(node)
                later = set()
                for other in chunks:
                    if other.cell > cell:
                        later.update(other.binds)
                if binds & later:
                    continue
                if deadline <= time.monotonic():
                    return
                outcome = self._run_cell(chunk, at, cell_timeout, deadline)
                if outcome is None:
                    del stopped[cell]
                    progress = True
                    self.note(
                        f"cell {cell + 1}: {name} was used before the cell defining it "
                        "ran; the rest of the cell ran again after the others (in "
                        "Jupyter, Run All stops there with a NameError)"
                    )
                else:
                    stopped[cell] = outcome
                    progress = progress or outcome[0] > at
            if not progress:
                return

    def _restore(self) -> None:
        """Undo what a cell's top-level code did to the worker's own machinery."""
        sys.stdout, sys.stderr = self.streams
        signal.signal(signal.SIGALRM, self.on_alarm)
        self._forget_placeholders()
        self._collect_output()

    def _forget_placeholders(self) -> None:
        # the name a statement bound keeps its placeholder; the module table does not, so
        # an import inside a graded function fails as it always did
        for name in self.placeholders:
            sys.modules.pop(name, None)
        self.placeholders.clear()

    def _collect_output(self) -> None:
        """Move what the cell printed out of the worker's log (its size is limited), keeping
        the beginning."""
        text = self.take_output()
        if text and self._output_size < self.output_cap:
            self._output.append(text[: self.output_cap - self._output_size])
            self._output_size += len(self._output[-1])

    # --- magics -----------------------------------------------------------------

    def line_magic(self, name: str, line: str, caller: types.FrameType) -> Any:
        filename, lineno = caller.f_code.co_filename, caller.f_lineno
        if name in ("time", "prun"):
            return self._run_source(line, filename, lineno - 1, self.namespace, value=True)
        if name == "timeit":
            return self._run_source(_timeit_code(line), filename, lineno - 1, self.namespace, {})
        if name not in QUIET_LINE_MAGICS:
            self.note_once(filename, f"%{name}", f"%{name} does nothing while grading")
        return None

    def cell_magic(self, name: str, line: str, body: str, caller: types.FrameType) -> Any:
        filename, lineno = caller.f_code.co_filename, caller.f_lineno
        if name in RUNNING_CELL_MAGICS:
            if name == "capture":
                target = next((w for w in line.split() if not w.startswith("-")), None)
                if target is not None and target.isidentifier():
                    self.namespace[target] = _Captured()
            return self._run_source(body, filename, lineno, self.namespace)
        if name == "timeit":
            setup = _timeit_code(line)
            scope: dict = {}
            self._run_source(setup, filename, lineno - 1, self.namespace, scope)
            return self._run_source(body, filename, lineno, self.namespace, scope)
        if name in ("writefile", "file"):
            self.note_once(
                filename,
                "%%writefile",
                "%%writefile wrote no file (the grader "
                "writes none); an import of that file finds nothing",
            )
            return None
        if name in QUIET_CELL_MAGICS:
            return None
        raise UsageError(f": Cell magic `%%{name}` not found.")

    def _run_source(self, source, filename, offset, globals_, locals_=None, value=False):
        """Python (possibly with magics) run statement by statement, with its line
        numbers shifted to where it stands in the cell."""
        parsed = self.parse_cell(0, source)
        if isinstance(parsed, tuple):
            raise SyntaxError(parsed[1])
        tree, offset = parsed.tree, max(offset, 0)
        ast.increment_lineno(tree, offset)
        shifted = frozenset(line + offset for line in parsed.guarded)
        self.guarded[filename] = self.guarded.get(filename, frozenset()) | shifted
        if value and len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr):
            expression = ast.Expression(tree.body[0].value)
            code = compile(expression, filename, "eval", self._flags, dont_inherit=True)
            return eval(code, globals_, globals_ if locals_ is None else locals_)
        for node in tree.body:
            self._exec_node(node, filename, globals_, locals_)
        return None


def _timeit_code(line: str) -> str:
    """The statement of a ``%timeit`` line (or the setup of ``%%timeit``), without its
    options."""
    words = line.split(" ")
    while words and words[0].startswith("-"):
        option = words.pop(0)
        if option in _TIMEIT_VALUED and words:
            words.pop(0)
        while words and words[0] == "":
            words.pop(0)
    return " ".join(words)


def _error_line(error: BaseException, filename: str) -> int:
    """The line of the cell where ``error`` was raised (its innermost frame there)."""
    line, tb = 1, error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _not_run(cells: list[int], budget: float) -> str:
    which = f"cell {cells[0]}" if len(cells) == 1 else f"cells {cells[0]} to {cells[-1]}"
    return (
        f"{which} not run: the notebook's top-level code used up its {budget:g} s budget "
        "(--notebook-timeout)"
    )
