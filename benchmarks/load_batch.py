"""Grading a large batch under load: throughput, memory, and that nothing leaks.

    python benchmarks/load_batch.py [--count 300] [--jobs 2] [--timeout 2] [--sample 20]
                                    [--all-alone] [--keep DIR]

Builds ``--count`` notebooks across assignments 01 to 04 from the test-only correct
implementations in ``tests/core/solutions.py``. Nine in ten are honest: correct, or
with one realistic bug (a flipped sign, a wrong factor, a forgotten function, a
syntax error). One in ten is hostile in one function: an infinite loop, a memory
bomb, ``os._exit``, 50 MB of printing, a long sleep, forked children that sleep,
an object array, a ``KeyboardInterrupt``. The rest of a hostile notebook is correct.

The batch is graded by the real command line,
``gradcheck-grade DIR --jobs J --csv grades.csv --timeout T``, with a private
``TMPDIR``. Reported: wall time, submissions per minute, peak memory of the grader
(the main process and its pool, sampled from /proc; and of the whole tree including
the workers), whether every honest submission in a sample (``--all-alone``: all of
them) gets the score it gets when graded alone, whether hostile functions cost only
themselves (and the functions that call them), and whether any worker process or
``gradcheck-worker-*`` directory is left behind. Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

import gradcheck_kit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.notebooks import solution_sources  # noqa: E402

GRADE = [sys.executable, "-m", "autograder.cli"]
ASSIGNMENTS = ["01_elementwise", "02_reductions", "03_matmul", "04_conv"]
SEED = "load-benchmark"

#: one function's body replaced by something hostile; the rest of the notebook is correct
HOSTILE = {
    "infinite loop": "    while True:\n        pass\n",
    "memory bomb": "    big = np.ones(10**10)\n    return big\n",
    "os._exit": "    import os\n    os._exit(3)\n",
    "prints 50 MB": "    print('x' * 50_000_000)\n    return None\n",
    "sleeps": "    import time\n    time.sleep(600)\n",
    "forks sleepers": (
        "    import os, time\n"
        "    for _ in range(3):\n"
        "        try:\n"
        "            if os.fork() == 0:\n"
        "                time.sleep(120)\n"
        "                os._exit(0)\n"
        "        except OSError:\n"
        "            pass\n"
        "    return None\n"
    ),
    "object array": "    return np.array([None, 1.0, 'x'], dtype=object)\n",
    "KeyboardInterrupt": "    raise KeyboardInterrupt\n",
}


def uses() -> dict[str, set[str]]:
    """For each solution function, the functions it calls, directly or not (the
    solution ``mean_backward`` calls ``sum_backward``: a bug there costs both)."""
    sources = solution_sources()
    direct = {
        name: {
            n.id
            for n in ast.walk(ast.parse(text))
            if isinstance(n, ast.Name) and n.id in sources and n.id != name
        }
        for name, text in sources.items()
    }
    closed = {}
    for name in direct:
        seen, todo = set(), list(direct[name])
        while todo:
            callee = todo.pop()
            if callee not in seen:
                seen.add(callee)
                todo += direct.get(callee, [])
        closed[name] = seen
    return closed


def _renamed(source: str, old: str, new: str) -> str:
    return source.replace(f"def {old}(", f"def {new}(", 1)


def _signature(source: str) -> str:
    return source.split("\n", 1)[0]


def bugged(name: str, source: str, bug: str) -> str:
    """``source`` (a correct function) with one realistic mistake."""
    right = f"_right_{name}"
    if bug in ("sign", "scale"):
        factor = "-1.0" if bug == "sign" else "2.0"
        return (
            _renamed(source, name, right)
            + f"\n\ndef {name}(*args, **kwargs):\n"
            + f"    result = {right}(*args, **kwargs)\n"
            + "    if isinstance(result, (tuple, list)):\n"
            + f"        return type(result)(g * {factor} for g in result)\n"
            + f"    return result * {factor}\n"
        )
    if bug == "forgotten":
        return f"{_signature(source)}\n    raise NotImplementedError\n"
    if bug == "syntax error":
        return source.replace(":\n", "\n", 1)  # the def line loses its colon
    raise ValueError(bug)


@dataclass
class Submission:
    path: Path
    assignment: str
    kind: str  # "correct", "bug: ...", "hostile: ..."
    op: str | None = None

    @property
    def honest(self) -> bool:
        return not self.kind.startswith("hostile")


def build(directory: Path, count: int, seed: int = 0) -> list[Submission]:
    sources = solution_sources()
    helpers = [name for name in sources if name.startswith("_")]
    rng = random.Random(seed)
    hostile_kinds = list(HOSTILE)
    bugs = ["sign", "scale", "forgotten", "syntax error"]
    made = []
    for i in range(count):
        assignment = ASSIGNMENTS[i % len(ASSIGNMENTS)]
        ops = [op.name for op in gradcheck_kit.all_ops(assignment)]
        cells = ["import numpy as np", *[sources[n] for n in helpers]]
        if assignment != "01_elementwise":
            cells.append(sources["unbroadcast"])
        target = rng.choice([n for n in ops if n != "unbroadcast"])
        if i % 10 == 9:
            kind = hostile_kinds[(i // 10) % len(hostile_kinds)]
            replace = {target: _signature(sources[target]) + "\n" + HOSTILE[kind]}
            label = f"hostile: {kind}"
        elif rng.random() < 0.5:
            replace, label, target = {}, "correct", None
        else:
            bug = rng.choice(bugs)
            replace = {target: bugged(target, sources[target], bug)}
            label = f"bug: {bug}"
        cells += [replace.get(name, sources[name]) for name in ops]
        notebook = nbformat.v4.new_notebook()
        notebook.cells = [nbformat.v4.new_markdown_cell(f"# {assignment}")] + [
            nbformat.v4.new_code_cell(c) for c in cells
        ]
        path = directory / f"s{i:04d}_{assignment[:2]}.ipynb"
        nbformat.write(notebook, str(path))
        made.append(Submission(path, assignment, label, target))
    return made


# --- watching the grader ---------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(p) for p in handle.read().split()]
    except OSError:
        pass
    return found


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _is_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"worker.py" in handle.read()
    except OSError:
        return False


@dataclass
class Peak:
    grader_kb: int = 0  # main process and pool processes
    tree_kb: int = 0  # everything, workers and their children included
    processes: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def watch(self, root: int) -> None:
        while not self.stop.is_set():
            grader = tree = 0
            seen, todo = 0, [root]
            while todo:
                pid = todo.pop()
                seen += 1
                rss = _rss_kb(pid)
                tree += rss
                worker = _is_worker(pid)
                if not worker:
                    grader += rss
                    todo += _children(pid)
                else:  # a worker's own children (forks) count towards the tree only
                    stack = _children(pid)
                    while stack:
                        child = stack.pop()
                        seen += 1
                        tree += _rss_kb(child)
                        stack += _children(child)
            self.grader_kb = max(self.grader_kb, grader)
            self.tree_kb = max(self.tree_kb, tree)
            self.processes = max(self.processes, seen)
            time.sleep(0.1)


def leftovers(tmp: Path) -> tuple[list[str], list[str]]:
    """Processes whose working directory is under ``tmp`` (workers and anything they
    spawned run in a scratch directory there), and scratch directories left in it."""
    processes = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(str(tmp)):
            processes.append(f"{entry} {command.strip()}")
    directories = sorted(p.name for p in tmp.glob("gradcheck-worker-*"))
    return processes, directories


# --- the run ---------------------------------------------------------------------------


def grade_alone(path: Path, timeout: float, env: dict) -> float | None:
    result = subprocess.run(
        [*GRADE, str(path), "--format", "json", "--seed", SEED, "--timeout", str(timeout)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if result.returncode != 0:
        return None
    return float(json.loads(result.stdout)["score"])


def run(args: argparse.Namespace) -> dict:
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="load-batch-"))
    submissions_dir, tmp = work / "submissions", work / "tmp"
    for directory in (submissions_dir, tmp):
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
    submissions = build(submissions_dir, args.count)
    env = dict(os.environ, TMPDIR=str(tmp))
    env.pop("GRADCHECK_SECRET", None)
    csv_path = work / "out" / "grades.csv"
    command = [
        *GRADE, str(submissions_dir), "--jobs", str(args.jobs), "--csv", str(csv_path),
        "--timeout", str(args.timeout), "--seed", SEED,
    ]  # fmt: skip
    peak = Peak()
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    watcher = threading.Thread(target=peak.watch, args=(process.pid,), daemon=True)
    watcher.start()
    try:
        _, stderr = process.communicate(timeout=args.limit)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate()
    wall = time.perf_counter() - start
    peak.stop.set()
    watcher.join()
    # a batch across assignments writes one CSV per assignment, grades-NAME.csv
    written = sorted(csv_path.parent.glob(f"{csv_path.stem}-*.csv")) or [csv_path]
    completed = process.returncode == 0 and all(p.exists() for p in written)
    rows = {}
    for path in written:
        if path.exists():
            with open(path, newline="", encoding="utf-8") as handle:
                rows.update({Path(r["file"]).name: r for r in csv.DictReader(handle)})
    time.sleep(0.5)  # let the kernel finish reaping before looking for leftovers
    left_processes, left_dirs = leftovers(tmp)

    honest = [s for s in submissions if s.honest]
    sample = (
        honest if args.all_alone else random.Random(1).sample(honest, min(args.sample, len(honest)))
    )
    mismatches = []
    for s in sample:
        alone = grade_alone(s.path, args.timeout, env)
        in_batch = float(rows[s.path.name]["total"]) if s.path.name in rows else None
        if alone is None or in_batch is None or abs(alone - in_batch) > 1e-9:
            mismatches.append((s.path.name, s.kind, in_batch, alone))

    callers = uses()
    by_kind: dict[str, list[tuple[Submission, dict | None]]] = {}
    for s in submissions:
        by_kind.setdefault(s.kind, []).append((s, rows.get(s.path.name)))
    kinds = {}
    for kind, items in sorted(by_kind.items()):
        graded = [row for _, row in items if row and not row["error"]]
        full = [row for row in graded if float(row["total"]) == float(row["max_score"])]
        # a hostile or buggy function costs itself only: every other function full marks
        contained = 0
        for s, row in items:
            if not row or row["error"]:
                continue
            others = [
                op.name
                for op in gradcheck_kit.all_ops(s.assignment)
                if op.name != s.op and s.op not in callers.get(op.name, set())
            ]
            maxima = {op.name: op.points for op in gradcheck_kit.all_ops(s.assignment)}
            if all(abs(float(row[n]) - maxima[n]) < 1e-9 for n in others):
                contained += 1
        kinds[kind] = {"count": len(items), "graded": len(graded), "full marks": len(full),
                       "others intact": contained}  # fmt: skip

    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = {
        "submissions": len(submissions),
        "jobs": args.jobs,
        "timeout": args.timeout,
        "wall_seconds": round(wall, 1),
        "per_minute": round(60 * len(submissions) / wall, 1),
        "completed": completed,
        "exit_code": process.returncode,
        "stderr_tail": stderr.decode(errors="replace")[-500:],
        "rows": len(rows),
        "peak_grader_mb": round(peak.grader_kb / 1024, 1),
        "peak_tree_mb": round(peak.tree_kb / 1024, 1),
        "peak_processes": peak.processes,
        "max_child_rss_mb": round(children / 1024, 1),
        "alone_checked": len(sample),
        "alone_mismatches": mismatches,
        "left_processes": left_processes,
        "left_directories": left_dirs,
        "kinds": kinds,
    }
    result["ok"] = bool(
        completed
        and len(rows) == len(submissions)
        and not mismatches
        and not left_processes
        and not left_dirs
        and all(k["others intact"] == k["graded"] == k["count"] for k in kinds.values())
        and kinds.get("correct", {}).get("full marks") == kinds.get("correct", {}).get("count")
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def print_table(result: dict) -> None:
    rows = [
        ("submissions", result["submissions"]),
        ("jobs / timeout per function", f"{result['jobs']} / {result['timeout']} s"),
        ("wall time", f"{result['wall_seconds']} s"),
        ("submissions per minute", result["per_minute"]),
        ("completed (exit 0, CSV written)", result["completed"]),
        ("CSV rows", result["rows"]),
        ("peak RSS, grader (main + pool)", f"{result['peak_grader_mb']} MB"),
        ("peak RSS, whole tree incl. workers", f"{result['peak_tree_mb']} MB"),
        ("largest single child (ru_maxrss)", f"{result['max_child_rss_mb']} MB"),
        ("peak processes in the tree", result["peak_processes"]),
        ("honest graded alone: same score", f"{result['alone_checked'] - len(result['alone_mismatches'])}/{result['alone_checked']}"),  # noqa: E501
        ("worker processes left behind", len(result["left_processes"])),
        ("gradcheck-worker-* dirs left", len(result["left_directories"])),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print()
    print(f"{'kind':<28} {'count':>5} {'graded':>6} {'full':>5} {'others intact':>13}")
    for kind, k in result["kinds"].items():
        print(
            f"{kind:<28} {k['count']:>5} {k['graded']:>6} {k['full marks']:>5} "
            f"{k['others intact']:>13}"
        )
    for line in result["alone_mismatches"]:
        print("score differs alone:", line)
    for line in result["left_processes"] + result["left_directories"]:
        print("left behind:", line)
    if not result["completed"]:
        print("grader failed:", result["exit_code"], result["stderr_tail"])
    print("\nOK" if result["ok"] else "\nFAILED")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=300, help="submissions (default 300)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per function")
    p.add_argument("--sample", type=int, default=20, help="honest ones to regrade alone")
    p.add_argument("--all-alone", action="store_true", help="regrade every honest one alone")
    p.add_argument("--limit", type=float, default=3600, help="give up after this many seconds")
    p.add_argument("--keep", help="build and grade in this directory and keep it")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
