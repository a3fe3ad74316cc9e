"""Batch grading: many submissions in parallel, a CSV of scores and a Markdown feedback
file per submission (in ``feedback/`` next to the CSV).

Each submission is graded in a pool process that returns plain text (JSON and
Markdown), so one broken or hostile submission only ever costs its own row.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from . import sanitize
from .results import write_atomically
from .sandbox import SandboxOptions, prepare_warm_workers


def find_notebooks(paths: Iterable[str]) -> list[str]:
    """The notebooks named or found (recursively) under the given paths, sorted.

    Symlinks are never followed: a symlinked directory is not descended, and a symlink
    named ``*.ipynb`` or pointing to a directory is listed as it is, so that its row
    says it was not followed (reading refuses it, as it refuses FIFOs, sockets and
    devices named ``*.ipynb``, which are listed too). Hidden directories are skipped.
    """
    found: list[str] = []
    for path in paths:
        # "DIR/" would make lstat follow a symlinked DIR
        named = path.rstrip(os.sep) or path
        if os.path.isdir(path) and not os.path.islink(named):
            found += _walk(path)
        else:
            found.append(path)
    return sorted(dict.fromkeys(found))


def _walk(top: str) -> list[str]:
    found: list[str] = []
    pending = [top]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError:
            found.append(directory)  # unreadable: a row of its own, not silently dropped
            continue
        for entry in entries:
            if entry.is_symlink():
                if entry.name.endswith(".ipynb") or os.path.isdir(entry.path):
                    found.append(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                if not entry.name.startswith("."):
                    pending.append(entry.path)
            elif entry.name.endswith(".ipynb"):
                found.append(entry.path)
    return found


def grade_to_text(
    path: str,
    assignment: str | None,
    seed: str | None,
    hidden: bool,
    options: SandboxOptions,
    efficiency: dict | None = None,
) -> tuple[str, str, str | None]:
    """(path, JSON report, Markdown feedback) or (path, "", error line)."""
    from .grade import grade_submission
    from .notebook import BadSubmission
    from .reports import to_dict, to_markdown

    try:
        grade = grade_submission(
            path,
            assignment=assignment,
            seed=seed,
            hidden=hidden,
            options=options,
            efficiency=efficiency,
        )
    except BadSubmission as error:
        return path, "", str(error)
    except Exception as error:  # one submission's failure never stops the batch
        return path, "", f"{path}: internal error: {type(error).__name__}: {error}"
    return path, json.dumps(to_dict(grade), sort_keys=True), to_markdown(grade)


class _Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.enabled = sys.stderr.isatty()

    def step(self) -> None:
        self.done += 1
        if self.enabled:
            width = 30
            filled = width * self.done // max(self.total, 1)
            bar = "#" * filled + "." * (width - filled)
            sys.stderr.write(f"\r[{bar}] {self.done}/{self.total}")
            if self.done == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def grading_pool(jobs: int, options: SandboxOptions) -> ProcessPoolExecutor:
    """The batch's pool: each process starts its own zygote as it starts, so the start
    of a worker (an interpreter importing NumPy) is paid once per process, not once
    per submission."""
    context = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
    return ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=context,
        initializer=prepare_warm_workers,
        initargs=(options,),
    )


def run_batch(
    paths: list[str],
    *,
    jobs: int = 1,
    assignment: str | None = None,
    seed: str | None = None,
    hidden: bool = True,
    options: SandboxOptions | None = None,
    efficiency: dict | None = None,
    on_result: Callable[[tuple[str, str, str | None]], None] | None = None,
) -> list[tuple[str, dict | None, str]]:
    """Grade every path; returns (path, report dict or None, feedback or error) in order.

    ``on_result`` is given each grader's outcome as it completes (not a dead pool
    process's row, which is worth grading again); if it raises, the batch stops.
    """
    options = options or SandboxOptions()
    progress = _Progress(len(paths))
    outcomes: dict[str, tuple[str, str, str | None]] = {}
    if jobs <= 1:
        if len(paths) > 1:
            prepare_warm_workers(options)
        for path in paths:
            outcomes[path] = grade_to_text(path, assignment, seed, hidden, options, efficiency)
            if on_result is not None:
                on_result(outcomes[path])
            progress.step()
    else:
        with grading_pool(jobs, options) as pool:
            futures = {
                pool.submit(grade_to_text, p, assignment, seed, hidden, options, efficiency): p
                for p in paths
            }
            try:
                for future in as_completed(futures):
                    path = futures[future]
                    try:
                        outcomes[path] = future.result()
                    except Exception as error:  # a pool process died
                        outcomes[path] = (path, "", f"{path}: grading process failed: {error}")
                    else:
                        if on_result is not None:
                            on_result(outcomes[path])
                    progress.step()
            except BaseException:
                # stopping: the submissions not started yet are not graded for nothing
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    results = []
    for path in paths:
        _, report, text = outcomes[path]
        results.append((path, json.loads(report) if report else None, text or ""))
    return results


def _csv_row(writer: Any, cells: list[Any]) -> None:
    """The one place batch CSV cells are written: each is defused for spreadsheets."""
    writer.writerow([sanitize.csv_cell(cell) for cell in cells])


def write_csv(csv_path: str, results: list[tuple[str, dict | None, str]]) -> None:
    op_names: list[str] = []
    for _, report, _ in results:
        for op in (report or {}).get("ops", []):
            if op["name"] not in op_names:
                op_names.append(op["name"])
    os.makedirs(os.path.dirname(os.path.abspath(csv_path)), exist_ok=True)
    with io.StringIO(newline="") as handle:
        writer = csv.writer(handle)
        _csv_row(writer, ["file", "total", "max_score", "assignment", "error", *op_names])
        for path, report, text in results:
            if report is None:
                _csv_row(writer, [path, 0, "", "", text, *([""] * len(op_names))])
                continue
            scores = {op["name"]: op["score"] for op in report["ops"]}
            _csv_row(
                writer,
                [
                    path,
                    report["score"],
                    report["max_score"],
                    report["assignment"],
                    "",
                    *[scores.get(name, "") for name in op_names],
                ],
            )
        text = handle.getvalue()
    # whole or not at all: an interrupted batch never leaves half a CSV over the last one
    write_atomically(csv_path, text)


def feedback_labels(paths: list[str]) -> list[str]:
    """How each feedback file names its submission: the path below the directory all
    the submissions share, so that two notebooks of the same name stay apart."""
    if not paths:
        return []
    folders = [os.path.dirname(os.path.abspath(p)) for p in paths]
    try:
        common = os.path.commonpath(folders)
    except ValueError:  # different drives
        return list(paths)
    return [os.path.relpath(os.path.abspath(p), common) for p in paths]


def write_feedback(directory: str, results: list[tuple[str, dict | None, str]]) -> None:
    """One Markdown file per submission, each under a name no other submission's can
    share (also where file names ignore case), each saying which submission it is for."""
    from .reports import markdown_from_dict

    os.makedirs(directory, exist_ok=True)
    labels = feedback_labels([path for path, _, _ in results])
    stems = sanitize.unique_stems(os.path.splitext(label)[0] for label in labels)
    for (_, report, text), label, stem in zip(results, labels, stems):
        if report is not None:
            body = markdown_from_dict(report, label)
        else:
            body = (
                f"# Feedback for {sanitize.markdown(label)}\n\n"
                f"Not graded: {sanitize.markdown(text)}\n"
            )
        with open(os.path.join(directory, stem + ".md"), "w", encoding="utf-8") as handle:
            handle.write(body)


def csv_paths(csv_path: str, results: list[tuple[str, dict | None, str]]) -> dict[str, list]:
    """Where each result's row goes: ``csv_path`` itself when every graded submission is
    of one assignment, else one file per assignment beside it (``grades.csv`` ->
    ``grades-01_elementwise.csv``...). Rows of ungraded files go into every file, so
    that whichever one an instructor opens shows them."""
    assignments = sorted({report["assignment"] for _, report, _ in results if report})
    if len(assignments) <= 1:
        return {csv_path: list(results)}
    stem, ext = os.path.splitext(csv_path)
    return {
        f"{stem}-{name}{ext or '.csv'}": [
            r for r in results if r[1] is None or r[1]["assignment"] == name
        ]
        for name in assignments
    }


def mixed_note(results: list[tuple[str, dict | None, str]], files: list[str]) -> str | None:
    """One line for a batch that mixes assignments, or None."""
    counts: dict[str, int] = {}
    for _, report, _ in results:
        if report:
            counts[report["assignment"]] = counts.get(report["assignment"], 0) + 1
    if len(counts) <= 1:
        return None
    mix = ", ".join(f"{name}: {n}" for name, n in sorted(counts.items()))
    where = f"; one CSV per assignment: {', '.join(files)}" if files else ""
    return (
        f"the batch mixes assignments ({mix}); each submission was graded as its own"
        f"{where} (pin one with --assignment NAME)"
    )


def _refuse_overwrite(targets: list[str], paths: list[str]) -> str | None:
    submissions = {os.path.realpath(p) for p in paths}
    for target in targets:
        if os.path.realpath(target) in submissions:
            return f"refusing to overwrite the submission {target} with the CSV"
    return None


def _fail_under_lines(results: list[tuple[str, dict | None, str]], threshold: float) -> list[str]:
    lines = []
    for path, report, _ in results:
        if report is None:
            lines.append(f"{sanitize.line(path)} was not graded (threshold {threshold:g})")
        elif report["score"] < threshold:
            lines.append(
                f"{sanitize.line(path)} scored {report['score']:g}/{report['max_score']:g}, "
                f"below --fail-under {threshold:g}"
            )
    return lines


def grade_selected(
    paths: list[str], args: argparse.Namespace, options: SandboxOptions
) -> list[tuple[str, dict | None, str]]:
    """The results of the batch ``paths``: with ``--shard K/N`` of that shard only; with
    ``--csv`` each kept beside it as soon as it is graded (and, with ``--resume``, those
    kept before reused); graded on the cluster with ``--dask``, else with ``--jobs``.

    A store or cluster that cannot be used ends the run: one line, exit code 2.
    """
    from . import results as store
    from .cli import efficiency_overrides
    from .distributed import ClusterError

    shard = getattr(args, "shard", None)
    address = getattr(args, "dask", None)
    resume = getattr(args, "resume", False)
    efficiency = efficiency_overrides(args)
    hidden = not args.public_only

    def local(todo: list[str], arrived: Callable) -> dict:
        graded = run_batch(
            todo,
            jobs=max(1, args.jobs),
            assignment=args.assignment,
            seed=args.seed,
            hidden=hidden,
            options=options,
            efficiency=efficiency,
            on_result=arrived,
        )
        return {
            path: (path, json.dumps(report, sort_keys=True) if report else "", text)
            for path, report, text in graded
        }

    if resume and not args.csv:
        store.say("--resume needs --csv: the results are kept beside the CSV")
        raise SystemExit(2)
    selected = store.in_shard(paths, shard)
    if shard is not None:
        store.say(f"shard {shard[0]}/{shard[1]}: {len(selected)} of {len(paths)} submissions")
    cluster = None
    try:
        if address:
            from .distributed import DaskBackend

            cluster = DaskBackend(
                address,
                assignment=args.assignment,
                seed=args.seed,
                hidden=hidden,
                options=options,
                efficiency=efficiency,
            )
            secret_print = cluster.secret_print()
        else:
            from .grade import resolve_secret

            secret_print = store.secret_fingerprint(resolve_secret(args.seed)[0])
        grading = store.grading_fingerprint(
            assignment=args.assignment,
            hidden=hidden,
            efficiency=efficiency,
            options=options,
            secret_print=secret_print,
        )
        kept = None
        if args.csv:
            kept = store.Store(store.store_beside(args.csv))
            kept.create()
            kept.write_manifest(paths, shard, grading)
        work = store.plan(selected, kept, grading, resume)
        if resume:
            store.say(
                f"resuming: {len(work.reused)} of {len(selected)} already graded in "
                f"{sanitize.line(kept.directory)}, {len(selected) - len(work.reused)} to grade"
            )
        try:
            return store.grade_with_store(work, kept, cluster or local)
        except store.StoreError as error:
            if kept is None:
                raise
            done = sum(1 for path in selected if kept.get(path) is not None)
            raise store.StoreError(
                f"{error}; {done} results are kept in {sanitize.line(kept.directory)}: "
                "make room and run again with --resume"
            ) from None
    except (store.StoreError, ClusterError) as error:
        store.say(str(error))
        raise SystemExit(2) from None
    finally:
        if cluster is not None:
            cluster.close()


def write_outputs(csv_path: str, results: list[tuple[str, dict | None, str]]) -> list[str]:
    """The CSV (or CSVs) and the feedback directory of ``results``, as a batch writes
    them; the CSV files written."""
    written = []
    for target, rows in csv_paths(csv_path, results).items():
        write_csv(target, rows)
        written.append(target)
    write_feedback(os.path.join(os.path.dirname(os.path.abspath(csv_path)), "feedback"), results)
    return written


def main(args: argparse.Namespace, options: SandboxOptions) -> int:
    paths = find_notebooks(args.paths)
    if not paths:
        sys.stderr.write("gradcheck-grade: no notebooks found\n")
        return 2
    if args.csv:
        refused = _refuse_overwrite([args.csv], paths)
        if refused:
            sys.stderr.write(f"gradcheck-grade: {refused}\n")
            return 2
    results = grade_selected(paths, args, options)
    written: list[str] = []
    if args.csv:
        targets = csv_paths(args.csv, results)
        refused = _refuse_overwrite(list(targets), paths)
        if refused:
            sys.stderr.write(f"gradcheck-grade: {refused}\n")
            return 2
        for target, rows in targets.items():
            write_csv(target, rows)
            written.append(target)
        write_feedback(
            os.path.join(os.path.dirname(os.path.abspath(args.csv)), "feedback"), results
        )
    note = mixed_note(results, written if len(written) > 1 else [])
    if note:
        sys.stderr.write(f"gradcheck-grade: {sanitize.line(note)}\n")
    lines = []
    for path, report, text in results:
        if report is None:
            lines.append(f"{sanitize.line(path)}: not graded ({sanitize.line(text)})")
        else:
            lines.append(
                f"{sanitize.line(path)}: {report['score']}/{report['max_score']} "
                f"({report['assignment']})"
            )
    summary = "\n".join(lines) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(summary)
    elif not args.csv or args.format == "text":
        sys.stdout.write(summary)
    if args.fail_under is not None:
        below = _fail_under_lines(results, args.fail_under)
        for line in below:
            sys.stderr.write(f"gradcheck-grade: {line}\n")
        return 1 if below else 0
    return 0
