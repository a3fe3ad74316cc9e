"""``gradcheck-grade``: grade notebooks, build a Gradescope bundle, make student copies.

    gradcheck-grade submission.ipynb [--format json] [--output PATH]
    gradcheck-grade DIR_OR_FILES... --jobs N --csv grades.csv
    gradcheck-grade gradescope-bundle --assignment NAME -o autograder.zip
    gradcheck-grade assign SOLUTION -o STUDENT

Exit codes: 0 grading completed (whatever the score), 1 below ``--fail-under``,
2 bad input (one line on stderr), 3 an internal error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

SUBCOMMANDS = ("assign", "gradescope-bundle", "grade", "merge")

#: what ``--help`` says each subcommand does
SUBCOMMAND_HELP = (
    ("grade", "grade notebooks (the default: `gradcheck-grade submission.ipynb` is the same)"),
    ("gradescope-bundle", "build the zip to upload to Gradescope (--assignment, --seed, -o)"),
    ("assign", "make the student notebook from a solution notebook (SOLUTION -o STUDENT)"),
)

#: the worker's own address space before any student code: Python, NumPy and the
#: grader's protocol. Measured with NumPy 2.4 on x86-64 Linux: a worker limited to
#: 100 MB dies while importing NumPy, one limited to 120 MB grades; the floor leaves
#: room for other NumPy builds and for the efficiency cases' inputs
MIN_MEMORY_MB = 256
MAX_MEMORY_MB = 1024 * 1024
#: below this a soft deadline fires before an ordinary op has run its cases
MIN_TIMEOUT = 0.5
#: the worker's CPU limit (SandboxOptions.cpu_seconds): a longer deadline never fires
MAX_TIMEOUT = 600.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every bad input
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def grade_parser() -> argparse.ArgumentParser:
    commands = "\n".join(f"  {name:<19} {text}" for name, text in SUBCOMMAND_HELP)
    parser = _Parser(
        prog="gradcheck-grade",
        usage="gradcheck-grade [grade] PATHS... [options]\n"
        "       gradcheck-grade gradescope-bundle --assignment NAME [-o ZIP]\n"
        "       gradcheck-grade assign SOLUTION -o STUDENT",
        description="Grade gradcheck-kit notebooks.\n\nsubcommands:\n" + commands,
        epilog="Exit codes: 0 grading completed (whatever the score), 1 below --fail-under, "
        "2 bad input (one line on stderr), 3 an internal error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", help="notebooks, or directories of notebooks")
    parser.add_argument("--assignment", help="grade as this assignment (default: detect)")
    parser.add_argument("--seed", help="secret for the hidden cases (default: $GRADCHECK_SECRET)")
    parser.add_argument(
        "--format", choices=("text", "json", "gradescope", "junit", "markdown"), default="text"
    )
    parser.add_argument("--output", "-o", help="write the report here instead of stdout")
    parser.add_argument("--fail-under", type=float, help="exit 1 if the score is below this")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per op (default 10)")
    parser.add_argument("--memory-mb", type=int, default=3072, help="worker memory limit")
    parser.add_argument(
        "--cell-timeout",
        type=float,
        default=10.0,
        help="seconds of top-level work per notebook cell; a cell over it is stopped (default 10)",
    )
    parser.add_argument(
        "--notebook-timeout",
        type=float,
        default=60.0,
        help="seconds of top-level work for all cells together; later cells are not run "
        "(default 60)",
    )
    parser.add_argument("--public-only", action="store_true", help="skip the hidden cases")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="submissions graded at once")
    parser.add_argument("--csv", help="batch mode: write one row per submission here")
    parser.add_argument("--worker-user", help="run student code as this user (needs root)")
    parser.add_argument(
        "--allow-shared-uid",
        action="store_true",
        help="with --jobs above 1, grade in parallel even where workers of different "
        "submissions would run as one user (no namespaces, and not root or no interpreter "
        "other users can read)",
    )
    add_scale_arguments(parser)
    parser.add_argument(
        "--efficiency-bound",
        type=float,
        help="an efficiency case fails when the backward takes more than this many times the "
        "forward (default: per assignment, 30 to 100)",
    )
    parser.add_argument(
        "--efficiency-weight",
        type=float,
        help="weight of each op's efficiency case against an ordinary case's 1 (default 2; "
        "0 turns efficiency cases off)",
    )
    return parser


def add_scale_arguments(parser: argparse.ArgumentParser) -> None:
    """Batches across machines, and batches that survive being stopped."""
    from .results import parse_shard

    parser.add_argument(
        "--dask",
        metavar="SCHEDULER",
        help="grade the batch on this Dask cluster (tcp://host:8786, a scheduler file, or "
        "'current': the client of the Python process that calls the CLI)",
    )
    parser.add_argument(
        "--shard",
        metavar="K/N",
        type=parse_shard,
        help="grade only shard K of N (by a hash of each notebook's path in the batch); "
        "gradcheck-grade merge joins the shards' results",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="with --csv: keep the results already graded (in grades.results beside the "
        "CSV) and grade only the rest, and what changed since",
    )


def _fail(message: str, code: int = 2) -> int:
    sys.stderr.write(f"gradcheck-grade: {message}\n")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


def _main(argv: list[str]) -> int:
    if argv and argv[0] == "assign":
        from . import assign

        return int(assign.main(argv[1:]) or 0)
    if argv and argv[0] == "gradescope-bundle":
        from . import bundle

        return bundle.main(argv[1:])
    if argv and argv[0] == "merge":
        from . import results

        return results.merge_main(argv[1:])
    if argv and argv[0] == "grade":
        argv = argv[1:]
    args = grade_parser().parse_args(argv)
    problem = out_of_range(args)
    if problem:
        return _fail(problem)

    from .sandbox import SandboxOptions, scrub_argv

    if args.seed:
        # any process can read our command line (/proc/<pid>/cmdline): hide the secret
        scrub_argv(args.seed)

    options = SandboxOptions(
        timeout=args.timeout,
        memory_bytes=args.memory_mb * 1024 * 1024,
        cell_timeout=args.cell_timeout,
        notebook_timeout=args.notebook_timeout,
        user=args.worker_user or os.environ.get("GRADCHECK_WORKER_USER") or None,
    )
    if options.user:
        import pwd

        try:
            pwd.getpwnam(options.user)
        except KeyError:
            return _fail(f"worker user {options.user!r} does not exist")
    only = args.paths[0]
    # a symlinked directory named alone is refused like any other symlink (exit 2)
    is_dir = os.path.isdir(only) and not os.path.islink(only.rstrip(os.sep) or only)
    batch = args.csv is not None or len(args.paths) > 1 or is_dir or args.dask or args.shard
    if batch:
        from . import batch as batch_mod

        if args.jobs > 1 and not args.allow_shared_uid:
            from .isolation import shared_uid_reason

            reason = shared_uid_reason(options)
            if reason:
                return _fail(
                    f"refusing --jobs {args.jobs} without namespaces: {reason}, and one "
                    "submission could kill or trace another's workers; use --jobs 1, or "
                    "--allow-shared-uid to accept that"
                )

        return batch_mod.main(args, options)
    return grade_one(args, options)


def grade_one(args: argparse.Namespace, options) -> int:
    from .grade import grade_submission
    from .notebook import BadSubmission

    path = args.paths[0]
    if args.output and _same_file(args.output, path):
        return _fail(f"refusing to overwrite the submission {path} with the report")
    try:
        grade = grade_submission(
            path,
            assignment=args.assignment,
            seed=args.seed,
            hidden=not args.public_only,
            options=options,
            efficiency=efficiency_overrides(args),
        )
    except BadSubmission as error:
        return _fail(str(error))
    except Exception as error:  # never a traceback for the user; still a distinct code
        return _fail(f"internal error while grading {path}: {type(error).__name__}: {error}", 3)

    from .reports import render

    text = render(grade, args.format)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as error:
            return _fail(f"cannot write {args.output}: {error.strerror or error}")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if args.fail_under is not None and grade.score < args.fail_under:
        below_threshold(grade.score, grade.max_score, args.fail_under, path)
        return 1
    return 0


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def out_of_range(args: argparse.Namespace) -> str | None:
    """One line saying which limit is outside the range it works in, or None."""
    import math

    def finite(value: float | None) -> bool:
        return value is None or math.isfinite(value)

    if not finite(args.timeout) or not MIN_TIMEOUT <= args.timeout <= MAX_TIMEOUT:
        return (
            f"--timeout {args.timeout:g} is out of range: give seconds per function from "
            f"{MIN_TIMEOUT:g} to {MAX_TIMEOUT:g} (the worker's CPU limit); default 10"
        )
    for flag, value in (("--cell-timeout", args.cell_timeout),
                        ("--notebook-timeout", args.notebook_timeout)):  # fmt: skip
        if not finite(value) or not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
            return (
                f"{flag} {value:g} is out of range: give seconds of a notebook's top-level "
                f"work from {MIN_TIMEOUT:g} to {MAX_TIMEOUT:g} (the worker's CPU limit)"
            )
    if not MIN_MEMORY_MB <= args.memory_mb <= MAX_MEMORY_MB:
        return (
            f"--memory-mb {args.memory_mb} is out of range: the worker needs about 120 MB for "
            f"Python and NumPy before any student code runs, so give at least "
            f"{MIN_MEMORY_MB} (default 3072)"
        )
    most = 8 * _cpu_count()
    if not 1 <= args.jobs <= most:
        return (
            f"--jobs {args.jobs} is out of range: give 1 to {most} (8 per CPU of this "
            "machine); each job runs a worker of its own"
        )
    bound = args.efficiency_bound
    if bound is not None and (not finite(bound) or not 1 <= bound <= 1e6):
        return (
            f"--efficiency-bound {bound:g} is out of range: give from 1 to 1e6 times the "
            "forward's time (correct backwards take up to about 22x)"
        )
    weight = args.efficiency_weight
    if weight is not None and (not finite(weight) or not 0 <= weight <= 100):
        return (
            f"--efficiency-weight {weight:g} is out of range: give from 0 (no efficiency "
            "cases) to 100 ordinary cases' weight"
        )
    if not finite(args.fail_under):
        return f"--fail-under {args.fail_under:g} is not a finite score"
    return None


def below_threshold(score: float, max_score: float, threshold: float, what: str) -> None:
    """Say on stderr why the exit code is 1: the score and the threshold it missed."""
    sys.stderr.write(
        f"gradcheck-grade: {sanitize_line(what)} scored {score:g}/{max_score:g}, below "
        f"--fail-under {threshold:g}\n"
    )


def sanitize_line(text: str) -> str:
    from .sanitize import line

    return line(text)


def efficiency_overrides(args: argparse.Namespace) -> dict:
    overrides = {"bound": args.efficiency_bound, "weight": args.efficiency_weight}
    return {key: value for key, value in overrides.items() if value is not None}


def _same_file(a: str, b: str) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


if __name__ == "__main__":
    sys.exit(main())
