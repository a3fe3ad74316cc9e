"""Grading latency and batch throughput, relative to ``python -c "import numpy, nbformat"``.

    python benchmarks/grade_latency.py [--batch 100] [--jobs 2] [--repeat 3]
        [--sizes 100,300,1000] [--default-sizes 100] [--cold] [--cold-sizes 100]

Notebooks are built from the test-only correct implementations in
``tests/core/solutions.py`` (every op of an assignment, so every case runs; the
05_engine notebook, which those do not cover, is the shipped solution notebook).
Each figure is the median wall time of ``--repeat`` runs of the real command line, in a
subprocess, including interpreter start-up; the baseline is measured in the same run.

The scale section grades batches of copies of the 01 notebook with ``--jobs``, with
``--efficiency-weight 0`` at each of ``--sizes`` (the start-up's share of a submission
shows there) and with the default settings at ``--default-sizes`` (efficiency cases
cost time per submission); each row gives submissions per minute and the peak memory
of the grader with every process below it (zygotes and workers): the sum of their
proportional set sizes (shared pages counted once) and of their resident sizes.
``--cold`` repeats the batches of ``--cold-sizes`` with ``GRADCHECK_WARM=off``: every
worker a fresh interpreter, as before warm workers.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat

import gradcheck_kit

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "tests" / "core" / "solutions.py"
GRADE = [sys.executable, "-m", "autograder.cli"]


def timed(command: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_notebooks(directory: Path) -> dict[str, Path]:
    text = SOLUTIONS.read_text()
    lines = text.splitlines(keepends=True)
    sources = {
        node.name: "".join(lines[node.lineno - 1 : node.end_lineno])
        for node in ast.parse(text).body
        if isinstance(node, ast.FunctionDef)
    }
    helpers = [name for name in sources if name.startswith("_")] + ["unbroadcast"]
    built = {}
    for assignment in gradcheck_kit.assignments():
        names = [op.name for op in gradcheck_kit.all_ops(assignment)]
        path = directory / f"{assignment}.ipynb"
        if all(name in sources for name in names):
            cells = ["import numpy as np"]
            cells += [sources[n] for n in dict.fromkeys(helpers + names)]
            notebook = nbformat.v4.new_notebook()
            notebook.cells = [nbformat.v4.new_code_cell(c) for c in cells]
            nbformat.write(notebook, str(path))
        else:
            shipped = ROOT / "assignments" / "solutions" / f"{assignment}.ipynb"
            if not shipped.exists():
                continue
            shutil.copy(shipped, path)
        built[assignment] = path
    return built


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        found.append(parent)
        try:
            for task in os.listdir(f"/proc/{parent}/task"):
                with open(f"/proc/{parent}/task/{task}/children") as handle:
                    stack += [int(c) for c in handle.read().split()]
        except (OSError, ValueError):
            continue
    return found


def _memory(pids: list[int]) -> tuple[int, int]:
    """(PSS, RSS) of ``pids`` together, in bytes."""
    pss = rss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return pss, rss


def run_measured(command: list[str], env: dict[str, str] | None = None) -> tuple[float, int, int]:
    """(wall seconds, peak PSS, peak RSS) of the command and every process below it."""
    peak = [0, 0]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, cwd=ROOT, env=env)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            pss, rss = _memory(_tree(process.pid))
            peak[0], peak[1] = max(peak[0], pss), max(peak[1], rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = process.wait()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if code != 0:
        raise subprocess.CalledProcessError(code, command)
    return seconds, peak[0], peak[1]


def scale(notebook: Path, tmp_path: Path, args: argparse.Namespace) -> list[tuple]:
    """Batches of copies of ``notebook``: (label, size, seconds, peak PSS, peak RSS)."""
    largest = max([*args.sizes, *args.default_sizes, 0])
    pool = tmp_path / "scale"
    pool.mkdir()
    for i in range(largest):
        shutil.copy(notebook, pool / f"student{i:04d}.ipynb")
    modes = [("warm", {}, None)]
    if args.cold:
        modes.append(("cold", {"GRADCHECK_WARM": "off"}, set(args.cold_sizes)))
    plans = [("--efficiency-weight 0", ["--efficiency-weight", "0"], n) for n in args.sizes]
    plans += [("default settings", [], n) for n in args.default_sizes]
    rows = []
    for mode, extra_env, only in modes:
        for label, flags, size in plans:
            if only is not None and size not in only:
                continue
            batch = tmp_path / f"scale-{size}"
            if batch.exists():
                shutil.rmtree(batch)
            batch.mkdir()
            for i in range(size):
                os.link(pool / f"student{i:04d}.ipynb", batch / f"student{i:04d}.ipynb")
            command = GRADE + [str(batch), "--jobs", str(args.jobs), *flags, "--seed", "bench"]
            command += ["--csv", str(tmp_path / f"out-{size}" / "grades.csv")]
            measured = run_measured(command, {**os.environ, **extra_env})
            rows.append((f"{mode}, {label}", size, *measured))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=_sizes, default=[100, 300, 1000])
    parser.add_argument("--default-sizes", type=_sizes, default=[100])
    parser.add_argument("--cold", action="store_true", help="also with GRADCHECK_WARM=off")
    parser.add_argument("--cold-sizes", type=_sizes, default=[100], help="sizes for --cold")
    args = parser.parse_args()

    baseline = timed([sys.executable, "-c", "import numpy, nbformat"], max(5, args.repeat))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        notebooks = build_notebooks(tmp_path)
        for assignment, path in notebooks.items():
            seconds = timed(GRADE + [str(path), "--format", "json", "--seed", "bench"], args.repeat)
            rows.append((f"grade one notebook: {assignment}", seconds))
        first = notebooks["01_elementwise"]
        one = GRADE + [str(first), "--format", "json", "--seed", "bench", "--efficiency-weight"]
        single_fast = timed([*one, "0"], args.repeat)
        rows.append(("grade one notebook: 01 --efficiency-weight 0", single_fast))
        scaled = scale(first, tmp_path, args)

        batch_dir = tmp_path / "batch"
        batch_dir.mkdir()
        sources = list(notebooks.values())
        for i in range(args.batch):
            shutil.copy(sources[i % len(sources)], batch_dir / f"student{i:03d}.ipynb")
        command = GRADE + [str(batch_dir), "--jobs", str(args.jobs), "--csv"]
        command += [str(tmp_path / "out" / "grades.csv"), "--seed", "bench"]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        batch_seconds = time.perf_counter() - start

    width = max(len(label) for label, _ in rows) + 2
    print(f"baseline: python -c 'import numpy, nbformat' = {baseline:.3f} s")
    print(f"{'measurement':<{width}} {'seconds':>9} {'x baseline':>11}")
    for label, seconds in rows:
        print(f"{label:<{width}} {seconds:>9.3f} {seconds / baseline:>11.2f}")
    label = f"batch of {args.batch}, --jobs {args.jobs} (total)"
    print(f"{label:<{width}} {batch_seconds:>9.3f} {batch_seconds / baseline:>11.2f}")
    per = batch_seconds / args.batch
    label = "batch: per submission"
    print(f"{label:<{width}} {per:>9.3f} {per / baseline:>11.2f}")
    print(f"batch throughput: {args.batch / batch_seconds:.1f} submissions/s")
    budget = 2 * baseline + 0.5
    worst = max(seconds for _, seconds in rows)
    verdict = "within" if worst <= budget else "OVER"
    print(
        f"target per notebook: 2 x baseline + 0.5 s = {budget:.3f} s; slowest {worst:.3f} s"
        f" ({verdict})"
    )
    full = next(seconds for label, seconds in rows if label.endswith("01_elementwise"))
    target = 1.5 * baseline + 0.1
    print(
        f"target for a full 01 notebook: 1.5 x baseline + 0.1 s = {target:.3f} s; "
        f"default {full:.3f} s ({full / baseline:.2f}x), --efficiency-weight 0 "
        f"{single_fast:.3f} s ({single_fast / baseline:.2f}x)"
    )
    print(f"\nscale: copies of the 01 notebook, --jobs {args.jobs}")
    print(
        f"{'batch':<38} {'n':>5} {'seconds':>9} {'per sub':>8} {'per min':>8} "
        f"{'PSS MB':>7} {'RSS MB':>7}"
    )
    for label, size, seconds, pss, rss in scaled:
        print(
            f"{label:<38} {size:>5} {seconds:>9.2f} {seconds / size:>8.4f} "
            f"{60 * size / seconds:>8.0f} {pss / 2**20:>7.0f} {rss / 2**20:>7.0f}"
        )


def _sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


if __name__ == "__main__":
    main()
