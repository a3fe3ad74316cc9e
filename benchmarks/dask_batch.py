"""A batch graded on a Dask LocalCluster against the same batch graded with --jobs.

    python benchmarks/dask_batch.py [--count 40] [--workers 2] [--timeout 10]
                                    [--public-only] [--rounds 1] [--keep DIR]

Builds ``--count`` notebooks across assignments 01 to 04 (correct, or one function with
a realistic bug), then grades them with the real command line twice per round:
``gradcheck-grade DIR --jobs W --csv ...`` and ``gradcheck-grade DIR --dask ADDRESS
--csv ...`` on a ``LocalCluster`` of W worker processes with one thread each (started
before the clock, as a cluster an instructor connects to is already running). Both
runs use ``--efficiency-weight 0``, so that the scores do not depend on how busy the
machine is and the outputs can be compared byte for byte. Prints wall time and
submissions per minute of each, the ratio, and whether the CSVs and feedback files
are identical. Exit status 1 if they differ.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gradcheck_kit  # noqa: E402
from tests.notebooks import build_notebook, solution_cells  # noqa: E402

GRADE = [sys.executable, "-m", "autograder.cli"]
ASSIGNMENTS = ["01_elementwise", "02_reductions", "03_matmul", "04_conv"]
SEED = "dask-benchmark"


def make_batch(directory: Path, count: int) -> None:
    rng = random.Random(0)
    for i in range(count):
        assignment = ASSIGNMENTS[i % len(ASSIGNMENTS)]
        replace = {}
        if rng.random() < 0.5:
            name = rng.choice([op.name for op in gradcheck_kit.all_ops(assignment)])
            replace[name] = f"def {name}(*args):\n    raise ValueError('not yet')\n"
        build_notebook(directory / f"student{i:03d}.ipynb", solution_cells(assignment, replace))


def timed(command: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if k != "GRADCHECK_SECRET"}
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
    return seconds


def identical(a: Path, b: Path) -> bool:
    csvs = sorted(p.name for p in a.glob("*.csv"))
    if csvs != sorted(p.name for p in b.glob("*.csv")):
        return False
    if any((a / n).read_bytes() != (b / n).read_bytes() for n in csvs):
        return False
    compared = filecmp.dircmp(a / "feedback", b / "feedback")
    if compared.left_only or compared.right_only:
        return False
    return all(
        (a / "feedback" / n).read_bytes() == (b / "feedback" / n).read_bytes()
        for n in compared.common_files
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--public-only", action="store_true")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the two this often")
    parser.add_argument("--keep", help="build the batch and outputs here (default: a temp dir)")
    args = parser.parse_args()

    from distributed import LocalCluster

    root = Path(args.keep or tempfile.mkdtemp(prefix="dask-batch-"))
    subs = root / "subs"
    subs.mkdir(parents=True, exist_ok=True)
    make_batch(subs, args.count)
    options = ["--seed", SEED, "--timeout", str(args.timeout), "--efficiency-weight", "0"]
    if args.public_only:
        options.append("--public-only")

    local_times, dask_times, same = [], [], True
    with LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        for round_ in range(args.rounds):
            local_out, dask_out = root / f"local{round_}", root / f"dask{round_}"
            local_times.append(
                timed([*GRADE, str(subs), "--jobs", str(args.workers), "--csv",
                       str(local_out / "grades.csv"), *options])
            )  # fmt: skip
            dask_times.append(
                timed([*GRADE, str(subs), "--dask", cluster.scheduler_address, "--csv",
                       str(dask_out / "grades.csv"), *options])
            )  # fmt: skip
            same = same and identical(local_out, dask_out)

    local, dask = statistics.median(local_times), statistics.median(dask_times)
    print(f"{args.count} notebooks, {args.workers} workers, {args.rounds} round(s), median:")
    print(f"  local --jobs {args.workers}:  {local:6.1f} s  {60 * args.count / local:6.1f} /min")
    print(f"  dask LocalCluster: {dask:6.1f} s  {60 * args.count / dask:6.1f} /min")
    print(f"  dask throughput / local: {local / dask:.2f}")
    print(f"  CSV and feedback identical: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
