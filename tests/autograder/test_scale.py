"""Batches at scale, end to end with the real command line: results kept as they are
graded, --resume after a SIGKILL, a full disk, --shard and merge, and --dask on a real
LocalCluster (one of whose workers is killed in the middle of the batch)."""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import build_notebook, run_cli, solution_cells

FAST = ["--public-only", "--efficiency-weight", "0", "--timeout", "2"]
ASSIGNMENT = "01_elementwise"
BUGS = {
    "sin_backward": "def sin_backward(input, output_grad):\n"
    "    return -np.cos(input) * output_grad\n",
    "exp_backward": "def exp_backward(input, output_grad):\n"
    "    return 2 * np.exp(input) * output_grad\n",
    "relu_backward": "def relu_backward(input, output_grad):\n    raise NotImplementedError\n",
}


def make_batch(directory: Path, count: int) -> list[Path]:
    """``count`` notebooks of one assignment, in two folders: correct ones, one bug each,
    and one that is not a notebook (its row is an error that names it)."""
    made = []
    bugs = list(BUGS.items())
    for i in range(count):
        folder = directory / ("group-a" if i % 2 else "group-b")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"student{i:02d}.ipynb"
        if i == count - 1:
            path.write_text('{"cells": [', encoding="utf-8")
        else:
            name, source = bugs[i % len(bugs)] if i % 3 else (None, None)
            build_notebook(path, solution_cells(ASSIGNMENT, {name: source} if name else None))
        made.append(path)
    return made


def grade(batch: Path, out: Path, *extra: str, env: dict | None = None):
    return run_cli(str(batch), "--csv", str(out / "grades.csv"), *FAST, *extra, env=env)


def records(out: Path) -> dict[str, dict]:
    """The results kept for a batch, by submission path."""
    store = out / "grades.results"
    found = {}
    for file in sorted(store.glob("*.json")):
        if not file.name.startswith("batch"):
            record = json.loads(file.read_text(encoding="utf-8"))
            found[record["path"]] = record
    return found


def same_outputs(a: Path, b: Path) -> None:
    assert (a / "grades.csv").read_bytes() == (b / "grades.csv").read_bytes()
    compared = filecmp.dircmp(a / "feedback", b / "feedback")
    assert not compared.left_only and not compared.right_only
    for name in compared.common_files:
        assert (a / "feedback" / name).read_bytes() == (b / "feedback" / name).read_bytes()


def resumed_counts(stderr: str) -> tuple[int, int]:
    match = re.search(r"resuming: (\d+) of \d+ already graded in .*, (\d+) to grade", stderr)
    assert match, stderr
    return int(match.group(1)), int(match.group(2))


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """10 notebooks and the outputs of one uninterrupted ``--jobs 2`` run over them."""
    root = tmp_path_factory.mktemp("scale")
    subs = root / "subs"
    make_batch(subs, 10)
    reference = root / "reference"
    result = grade(subs, reference, "--jobs", "2")
    assert result.returncode == 0, result.stderr
    return subs, reference


def copy_batch(subs: Path, where: Path) -> Path:
    copy = where / "subs"
    shutil.copytree(subs, copy)
    return copy


def test_a_batch_keeps_every_result_and_resume_reuses_them(batch, tmp_path):
    subs, reference = batch
    kept = records(reference)
    assert sorted(kept) == sorted(str(p) for p in subs.rglob("*.ipynb"))
    broken = kept[str(subs / "group-a" / "student09.ipynb")]
    assert broken["report"] is None and "not a notebook" in broken["text"]
    # the secret is never written, whatever the store holds
    secret = "a-secret-nobody-may-read"
    out = tmp_path / "out"
    assert grade(subs, out, "--seed", secret).returncode == 0
    for file in (out / "grades.results").iterdir():
        assert secret not in file.read_text(encoding="utf-8")
    again = grade(subs, out, "--seed", secret, "--resume")
    assert again.returncode == 0, again.stderr
    assert resumed_counts(again.stderr) == (10, 0)


def test_resume_after_sigkill_grades_only_the_rest(batch, tmp_path):
    subs, reference = batch
    out = tmp_path / "out"
    command = [sys.executable, "-m", "autograder.cli", str(subs), "--csv", str(out / "grades.csv")]
    env = {k: v for k, v in os.environ.items() if k != "GRADCHECK_SECRET"}
    process = subprocess.Popen(
        [*command, *FAST, "--jobs", "2"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while len(records(out)) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the grader and its pool, as a dying machine
    process.wait()
    before = {path: record["graded_at"] for path, record in records(out).items()}
    assert 3 <= len(before) < 10, "the batch ended before it could be killed"
    assert not (out / "grades.csv").exists()

    resumed = grade(subs, out, "--jobs", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed_counts(resumed.stderr) == (len(before), 10 - len(before))
    after = records(out)
    assert {p: after[p]["graded_at"] for p in before} == before  # nothing graded twice
    assert len(after) == 10
    same_outputs(out, reference)
    assert not list((out / "grades.results").glob(".tmp-*"))


def test_a_changed_notebook_or_other_options_are_graded_again(batch, tmp_path):
    subs = copy_batch(batch[0], tmp_path)
    out = tmp_path / "out"
    assert grade(subs, out, "--jobs", "2").returncode == 0
    changed = subs / "group-b" / "student00.ipynb"
    build_notebook(changed, solution_cells(ASSIGNMENT, {"sin_backward": BUGS["sin_backward"]}))
    resumed = grade(subs, out, "--jobs", "2", "--resume")
    assert resumed_counts(resumed.stderr) == (9, 1)
    rows = (out / "grades.csv").read_text().splitlines()
    row = next(line for line in rows if "student00" in line).split(",")
    assert float(row[1]) < float(row[2])  # below full marks now
    other_secret = grade(subs, out, "--jobs", "2", "--resume", "--seed", "another")
    assert resumed_counts(other_secret.stderr) == (0, 10)


def test_shards_merge_into_what_a_single_run_writes(batch, tmp_path):
    subs, reference = batch
    parts = []
    graded: list[str] = []
    for k in (1, 2, 3):
        part = tmp_path / f"shard{k}"
        result = grade(subs, part, "--shard", f"{k}/3", "--jobs", "2")
        assert result.returncode == 0, result.stderr
        graded += list(records(part))
        parts.append(str(part / "grades.results"))
    assert sorted(graded) == sorted(records(reference))  # every one once, in some shard
    merged = tmp_path / "merged"
    result = run_cli("merge", *parts, "--csv", str(merged / "grades.csv"))
    assert result.returncode == 0, result.stderr
    same_outputs(merged, reference)

    missing = run_cli("merge", *parts[:2], "--csv", str(tmp_path / "bad" / "grades.csv"))
    assert missing.returncode == 2
    assert len(missing.stderr.strip().splitlines()) == 1
    assert "have no result in the parts given" in missing.stderr
    assert not (tmp_path / "bad" / "grades.csv").exists()
    bad = run_cli("grade", str(subs), "--shard", "4/3", "--csv", str(tmp_path / "x.csv"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_a_full_disk_gives_one_line_and_keeps_earlier_results(batch, tmp_path):
    subs, _ = batch
    out = tmp_path / "tiny"
    out.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(out)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        result = grade(subs, out, "--jobs", "2")
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "No space left on device" in lines[0] and "--resume" in lines[0]
        kept = records(out)  # every file there parses: each is a whole result
        assert 1 <= len(kept) < 10
        assert not list((out / "grades.results").glob(".tmp-*"))
    finally:
        subprocess.run(["umount", str(out)], check=True)


# -- Dask ---------------------------------------------------------------------------------


def test_dask_batch_survives_a_killed_worker_and_matches_local_grading(batch, tmp_path):
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    subs, reference = batch
    out = tmp_path / "dask"
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "autograder.cli",
                str(subs),
                "--dask",
                cluster.scheduler_address,
                "--csv",
                str(out / "grades.csv"),
                *FAST,
            ],
            env={k: v for k, v in os.environ.items() if k != "GRADCHECK_SECRET"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        victim = None
        while victim is None and time.monotonic() < deadline:
            busy = {
                worker: keys
                for worker, keys in client.processing().items()
                if any(str(key).startswith("gradcheck-grade-") for key in keys)
            }
            if busy and len(records(out)) >= 2:
                victim = next(iter(busy))
            else:
                time.sleep(0.02)
        assert victim is not None, "the batch ended before a worker could be killed"
        lost_keys = [str(k) for k in client.processing()[victim]]
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        stories = client.run_on_scheduler(
            lambda dask_scheduler, keys=lost_keys: [
                [event[:3] for event in dask_scheduler.story(key)] for key in keys
            ]
        )
    # the killed worker's submissions were sent to another worker, and graded once each
    rescheduled = [story for story in stories if sum(1 for e in story if e[2] == "processing") >= 2]
    assert rescheduled, stories
    same_outputs(out, reference)
    assert len(records(out)) == 10
    assert "student09.ipynb" in stdout and str(subs) in (out / "grades.csv").read_text()
