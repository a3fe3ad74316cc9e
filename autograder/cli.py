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

SUBCOMMANDS = ("assign", "gradescope-bundle", "grade")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every bad input
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def grade_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gradcheck-grade",
        description="Grade gradcheck-kit notebooks (also: gradcheck-grade gradescope-bundle, "
        "gradcheck-grade assign).",
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
    if argv and argv[0] == "grade":
        argv = argv[1:]
    args = grade_parser().parse_args(argv)

    from .sandbox import SandboxOptions, scrub_argv

    if args.seed:
        # any process can read our command line (/proc/<pid>/cmdline): hide the secret
        scrub_argv(args.seed)

    options = SandboxOptions(
        timeout=args.timeout,
        memory_bytes=args.memory_mb * 1024 * 1024,
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
    batch = args.csv is not None or len(args.paths) > 1 or is_dir
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
        return 1
    return 0


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
