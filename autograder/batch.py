"""Batch grading: many submissions in parallel, a CSV of scores and a Markdown feedback
file per submission (in ``feedback/`` next to the CSV).

Each submission is graded in a pool process that returns plain text (JSON and
Markdown), so one broken or hostile submission only ever costs its own row.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import sys
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from . import sanitize
from .sandbox import SandboxOptions


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


def run_batch(
    paths: list[str],
    *,
    jobs: int = 1,
    assignment: str | None = None,
    seed: str | None = None,
    hidden: bool = True,
    options: SandboxOptions | None = None,
    efficiency: dict | None = None,
) -> list[tuple[str, dict | None, str]]:
    """Grade every path; returns (path, report dict or None, feedback or error) in order."""
    options = options or SandboxOptions()
    progress = _Progress(len(paths))
    outcomes: dict[str, tuple[str, str, str | None]] = {}
    if jobs <= 1:
        for path in paths:
            outcomes[path] = grade_to_text(path, assignment, seed, hidden, options, efficiency)
            progress.step()
    else:
        context = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {
                pool.submit(grade_to_text, p, assignment, seed, hidden, options, efficiency): p
                for p in paths
            }
            for future in as_completed(futures):
                path = futures[future]
                try:
                    outcomes[path] = future.result()
                except Exception as error:  # a pool process died
                    outcomes[path] = (path, "", f"{path}: grading process failed: {error}")
                progress.step()
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
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
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


def main(args: argparse.Namespace, options: SandboxOptions) -> int:
    from .cli import efficiency_overrides

    paths = find_notebooks(args.paths)
    if not paths:
        sys.stderr.write("gradcheck-grade: no notebooks found\n")
        return 2
    if args.csv and any(os.path.realpath(args.csv) == os.path.realpath(p) for p in paths):
        sys.stderr.write("gradcheck-grade: refusing to overwrite a submission with the CSV\n")
        return 2
    results = run_batch(
        paths,
        jobs=max(1, args.jobs),
        assignment=args.assignment,
        seed=args.seed,
        hidden=not args.public_only,
        options=options,
        efficiency=efficiency_overrides(args),
    )
    if args.csv:
        write_csv(args.csv, results)
        write_feedback(
            os.path.join(os.path.dirname(os.path.abspath(args.csv)), "feedback"), results
        )
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
    below = args.fail_under is not None and any(
        report is None or report["score"] < args.fail_under for _, report, _ in results
    )
    return 1 if below else 0
