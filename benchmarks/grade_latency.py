"""Grading latency and batch throughput, relative to ``python -c "import numpy, nbformat"``.

    python benchmarks/grade_latency.py [--batch 100] [--jobs 2] [--repeat 3]

Notebooks are built from the test-only correct implementations in
``tests/core/solutions.py`` (every op of an assignment, so every case runs; the
05_engine notebook, which those do not cover, is the shipped solution notebook).
Each figure is the median wall time of ``--repeat`` runs of the real command line, in a
subprocess, including interpreter start-up; the baseline is measured in the same run.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import statistics
import subprocess
import sys
import tempfile
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    baseline = timed([sys.executable, "-c", "import numpy, nbformat"], max(5, args.repeat))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        notebooks = build_notebooks(tmp_path)
        for assignment, path in notebooks.items():
            seconds = timed(GRADE + [str(path), "--format", "json", "--seed", "bench"], args.repeat)
            rows.append((f"grade one notebook: {assignment}", seconds))

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


if __name__ == "__main__":
    main()
