"""What the grader pays, before any isolation, for hostile notebooks of growing size.

Each kind of pathological notebook is built at 8, 32 and 64 MB (just under the
64 MiB cap) around a correct 01_elementwise solution, then graded twice in
subprocesses:

- ``read``: only what the grader does with the text itself (read, JSON parse,
  nbformat upgrade and validation, the code cells, the ``names_bound`` scan that picks
  the assignment): wall time and the peak RSS it adds to the process;
- ``cli``: the real ``gradcheck-grade`` on the file: wall time, the grader's peak RSS
  (``VmHWM``) and CPU time, the largest reaped child's peak RSS (``RUSAGE_CHILDREN``,
  which Linux carries across exec, so it is at least the grader's RSS when the worker
  was started), and how it ended.

The last columns divide by the size: seconds per MB and bytes of memory per byte of
notebook, which stay flat when growth is linear.

    python benchmarks/pathological_notebooks.py              # 8, 32 and 64 MB
    python benchmarks/pathological_notebooks.py --sizes 2 8 --kinds huge-cell
    python benchmarks/pathological_notebooks.py --no-cli     # the read phase only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MB = 1_000_000
#: CPython hashes an int modulo this prime: its multiples all hash to 0
MODULUS = 2**61 - 1

#: run in the ``read`` subprocess: the grader's own handling of the text, nothing else
READ_PHASE = """
import json, resource, sys, time
import gradcheck_kit
from autograder.grade import choose_assignment
from autograder.notebook import BadSubmission, code_cells, read_notebook
import nbformat
warm = sys.argv[1] + ".warm.ipynb"
nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("pass")]), warm)
code_cells(read_notebook(warm))  # imports and the compiled schema are not the file's cost
choose_assignment("warm-up", ["def relu_backward(input, output_grad): pass"], None)
def rss(field):
    with open("/proc/self/status") as handle:
        return next(int(l.split()[1]) * 1024 for l in handle if l.startswith(field))
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # the peak RSS starts again from the current RSS
before = rss("VmRSS:")
start = time.perf_counter()
try:
    cells = code_cells(read_notebook(sys.argv[1]))
    outcome = choose_assignment(sys.argv[1], cells, None)
except BadSubmission as error:
    outcome = "refused: " + str(error).split(": ", 1)[-1][:60]
seconds = time.perf_counter() - start
peak = rss("VmHWM:")
print(json.dumps({"seconds": seconds, "added_rss": peak - before, "outcome": outcome}))
"""

#: run as the ``cli`` subprocess: the real CLI, in process, then its own accounting
CLI_PHASE = """
import json, os, resource, sys, time
from autograder.cli import main
start = time.perf_counter()
code = main(sys.argv[2:])
seconds = time.perf_counter() - start
me = resource.getrusage(resource.RUSAGE_SELF)
children = resource.getrusage(resource.RUSAGE_CHILDREN)
# ru_maxrss survives exec (it would be the benchmark's own peak): VmHWM does not
with open("/proc/self/status") as handle:
    peak = next(int(l.split()[1]) * 1024 for l in handle if l.startswith("VmHWM:"))
with open(sys.argv[1], "w") as handle:
    json.dump({"code": code, "seconds": seconds, "grader_rss": peak,
               "grader_cpu": me.ru_utime + me.ru_stime,
               "worker_rss": children.ru_maxrss * 1024}, handle)
"""


def _solution_cells() -> list[str]:
    import gradcheck_kit
    from tests.notebooks import solution_sources

    sources = solution_sources()
    cells = ["import numpy as np", *(sources[n] for n in sources if n.startswith("_"))]
    return cells + [sources[op.name] for op in gradcheck_kit.all_ops("01_elementwise")]


def _cell(source: str | list[str], n: int, **extra: object) -> str:
    cell = {
        "cell_type": "code",
        "execution_count": None,
        "id": f"c{n}",
        "metadata": extra.pop("metadata", {}),
        "outputs": extra.pop("outputs", []),
        "source": source,
    }
    return json.dumps(cell)


def _lines(budget: int, line: Callable[[int], str]) -> list[str]:
    """Lines from ``line(i)`` whose JSON takes about ``budget`` bytes."""
    out, used, i = [], 0, 0
    while used < budget:
        text = line(i)
        out.append(text)
        used += len(json.dumps(text)) + 2  # and the ", " between items
        i += 1
    return out


def colliding_set(budget: int) -> Iterator[str]:
    items, used, k = [], 0, 0
    while used < budget - 64:
        text = str(k * MODULUS)
        items.append(text)
        used += len(text) + 1
        k += 1
    yield _cell("colliding = {" + ",".join(items) + "}\n", 0)


def statements(budget: int) -> Iterator[str]:
    yield _cell(_lines(budget, lambda i: f"x{i % 1000} = {i}\n"), 0)


def huge_cell(budget: int) -> Iterator[str]:
    line = "# " + "filler text of a long cell " * 3 + "\n"
    yield _cell(line * (budget // len(line)), 0)


def tiny_cells(budget: int) -> Iterator[str]:
    used, n = 0, 0
    while used < budget:
        text = _cell("pass", n)
        used += len(text) + 1
        n += 1
        yield text


def deep_json(budget: int, depth: int = 500) -> Iterator[str]:
    nested = "[" * depth + "]" * depth
    used, n = 0, 0
    while used < budget:
        text = _cell("pass", n).replace('"metadata": {}', '"metadata": {"d": ' + nested + "}")
        used += len(text) + 1
        n += 1
        yield text


def long_line(budget: int) -> Iterator[str]:
    # an identifier with no ":" or "=" after it: the binding regex's worst line
    yield _cell("a" * (budget - 128), 0)


def huge_outputs(budget: int) -> Iterator[str]:
    text = _lines(budget, lambda i: f"step {i}: " + "loss went down a little " * 3 + "\n")
    yield _cell("pass", 0, outputs=[{"output_type": "stream", "name": "stdout", "text": text}])


def binding_lookalikes(budget: int) -> Iterator[str]:
    import gradcheck_kit

    names = [op.name for op in gradcheck_kit.all_ops()]
    forms = ["{} = None\n", "def {}(a, b):\n    pass\n", "{}_copy: int = 1\n", "  {}=0\n"]
    yield _cell(_lines(budget, lambda i: forms[i % len(forms)].format(names[i % len(names)])), 0)


def invalid_at_end(budget: int) -> Iterator[str]:
    # the schema's refusal, found last: nbformat's jsonschema message for it took
    # 6 s per MB and more as the file grew
    yield from tiny_cells(budget - 256)
    yield json.dumps({"cell_type": "code", "id": "x", "metadata": {}, "outputs": [], "source": ""})


KINDS: dict[str, Callable[[int], Iterator[str]]] = {
    "colliding-set": colliding_set,
    "statements": statements,
    "huge-cell": huge_cell,
    "tiny-cells": tiny_cells,
    "deep-json": deep_json,
    "long-line": long_line,
    "huge-outputs": huge_outputs,
    "binding-lookalikes": binding_lookalikes,
    "invalid-at-end": invalid_at_end,
}


def build(path: Path, kind: str, size: int) -> int:
    """Write a notebook of about ``size`` bytes; its real size."""
    head = [_cell(source, 10_000_000 + i) for i, source in enumerate(_solution_cells())]
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('{"cells": [\n' + ",\n".join(head))
        for text in KINDS[kind](size - sum(len(h) + 2 for h in head) - 256):
            handle.write(",\n" + text)
        handle.write(f'\n], "metadata": {json.dumps(meta)}, "nbformat": 4, "nbformat_minor": 5}}')
    return path.stat().st_size


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("GRADCHECK_SECRET", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def measure_read(path: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", READ_PHASE, str(path)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=1200,
    )
    if result.returncode != 0:
        return {"seconds": float("nan"), "added_rss": 0, "outcome": result.stderr[-200:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_cli(path: Path, timeout: float) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as stats:
        args = [str(path), "--format", "json", "--public-only", "--efficiency-weight", "0"]
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", CLI_PHASE, stats.name, *args, "--timeout", str(timeout)],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=1200,
        )
        wall = time.perf_counter() - start
        text = stats.read()
    numbers = json.loads(text) if text else {"code": result.returncode}
    numbers["wall"] = wall
    if numbers["code"] == 0:
        report = json.loads(result.stdout)
        numbers["outcome"] = f"graded {report['score']}/{report['max_score']}"
    else:
        numbers["outcome"] = f"exit {numbers['code']}: " + result.stderr.strip()[-60:]
    return numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[8, 32, 64], help="MB")
    parser.add_argument("--kinds", nargs="+", choices=sorted(KINDS), default=list(KINDS))
    parser.add_argument("--no-cli", action="store_true", help="measure the read phase only")
    parser.add_argument("--timeout", type=float, default=2.0, help="the CLI's --timeout")
    args = parser.parse_args(argv)

    header = (
        f"{'kind':<19}{'MB':>6}{'read s':>8}{'read MB':>9}{'s/MB':>7}{'B/B':>6}"
        f"{'cli s':>8}{'grader MB':>10}{'cpu s':>7}{'worker MB':>10}  outcome"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="pathological-") as directory:
        for kind in args.kinds:
            for size_mb in args.sizes:
                path = Path(directory) / f"{kind}.ipynb"
                size = build(path, kind, int(size_mb * MB))
                mb = size / MB
                read = measure_read(path)
                line = (
                    f"{kind:<19}{mb:>6.1f}{read['seconds']:>8.2f}{read['added_rss'] / MB:>9.0f}"
                    f"{read['seconds'] / mb:>7.3f}{read['added_rss'] / size:>6.1f}"
                )
                outcome = read["outcome"]
                if not args.no_cli:
                    cli = measure_cli(path, args.timeout)
                    line += (
                        f"{cli['wall']:>8.1f}{cli.get('grader_rss', 0) / MB:>10.0f}"
                        f"{cli.get('grader_cpu', 0):>7.1f}{cli.get('worker_rss', 0) / MB:>10.0f}"
                    )
                    outcome = cli["outcome"]
                print(f"{line}  {outcome}", flush=True)
                path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
