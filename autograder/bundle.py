"""``gradcheck-grade gradescope-bundle``: the zip an instructor uploads to Gradescope.

The zip holds ``setup.sh`` (installs this project, from the copy of its source inside
the zip, into a virtual environment, and creates an unprivileged user for student
code), ``run_autograder`` (picks the submitted notebook that defines most of the
assignment's functions and grades it into ``results/results.json``, saying which file
it graded and why) and the hidden-case secret. ``GRADCHECK_AUTOGRADER_ROOT`` moves the
``/autograder`` root, so the script can be exercised against a temporary directory
laid out like Gradescope's.
"""

from __future__ import annotations

import os
import secrets
import shlex
import stat
import sys
import zipfile
from collections.abc import Sequence

from .grade import DEFAULT_SECRET

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_DIR = "gradcheck-kit"
WORKER_USER = "gradcheck"

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (Ubuntu 22.04
# or 24.04 based). Everything goes into a virtual environment beside source/ (that is
# /autograder/venv), which run_autograder uses: the system Python of Ubuntu 24.04 and
# Debian 12 refuses pip installs (PEP 668, "externally-managed-environment").
# Steps that change the machine itself (apt-get, useradd) run only as root and
# without GRADCHECK_SETUP_NO_SYSTEM=1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$(dirname "$here")/venv"
system=1
if [ "$(id -u)" != 0 ] || [ -n "${{GRADCHECK_SETUP_NO_SYSTEM:-}}" ]; then
    system=0
fi

apt_install() {{
    if [ "$system" = 1 ] && command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
    else
        echo "setup.sh: cannot install $* (not root, no apt-get, or GRADCHECK_SETUP_NO_SYSTEM)" >&2
        return 1
    fi
}}

apt_updated=0
apt_update() {{
    if [ "$system" = 1 ] && [ "$apt_updated" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -q && apt_updated=1
    fi
}}

if ! command -v python3 >/dev/null 2>&1; then
    apt_update
    apt_install python3 python3-venv
fi

make_venv() {{
    # a directory of that name that is not a virtual environment is not ours to replace
    if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
        echo "setup.sh: $venv exists and is not a virtual environment; move it away" >&2
        exit 1
    fi
    python3 -m venv "$venv" >/dev/null 2>&1 && "$venv/bin/python" -m pip --version >/dev/null 2>&1
}}

if ! make_venv; then
    # Debian and Ubuntu ship venv's pip bootstrap (ensurepip) in python3-venv and
    # python3.X-venv; a half-made environment is removed before trying again
    [ -f "$venv/pyvenv.cfg" ] && rm -rf "$venv"
    version="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    apt_update
    apt_install python3-venv "python$version-venv" || apt_install python3-venv
    if ! make_venv; then
        echo "setup.sh: python3 -m venv $venv failed; install python3-venv" >&2
        exit 1
    fi
fi

"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$here/{source}"
"$venv/bin/python" -I -c "import autograder.cli, gradcheck_kit"
# student code runs as {user}, which imports NumPy from here
chmod -R a+rX "$venv"

if [ "$system" = 1 ] && ! id -u {user} >/dev/null 2>&1; then
    # student code runs as this user, never as root
    useradd --no-create-home --shell /usr/sbin/nologin {user} || true
fi
# the secret (secret.txt) and this copy of the source are for root only: without
# namespaces the worker, as {user}, could otherwise read them
chmod 700 "$here"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Grades the notebook in /autograder/submission into /autograder/results/results.json.
# Gradescope unpacks the zip into /autograder/source and runs a copy of this script
# from /autograder: everything of the bundle is looked for under $root/source.
set -uo pipefail
root="${{GRADCHECK_AUTOGRADER_ROOT:-/autograder}}"
source_dir="$root/source"
# the environment setup.sh made, else whatever python3 is (a machine set up by hand)
python="${{GRADCHECK_PYTHON:-}}"
if [ -z "$python" ]; then
    if [ -x "$root/venv/bin/python" ]; then
        python="$root/venv/bin/python"
    else
        python=python3
    fi
fi
assignment={assignment}
results="$root/results/results.json"
mkdir -p "$root/results"

# the message may hold a file name the student chose: made inert like every report
report() {{
    "$python" -I -c '
import json, sys
try:
    from autograder.sanitize import text
except Exception:
    def text(value):
        return "".join(c if c.isprintable() or c == "\\n" else "?" for c in value)
json.dump({{"score": 0, "output": text(sys.argv[1]), "output_format": "text",
    "visibility": "visible", "stdout_visibility": "hidden", "tests": []}},
    open(sys.argv[2], "w"), indent=2)' "$1" "$results"
}}

# the submission's fault: the student sees why, and the run itself succeeded
fail() {{
    report "$1"
    exit 0
}}

# the bundle's fault: nothing is graded, and Gradescope shows the run as failed
misconfigured() {{
    echo "run_autograder: misconfigured: $1" >&2
    report "The autograder is misconfigured ($1), so nothing was graded. \\
Please tell your instructor."
    exit 1
}}

secret_file="$source_dir/secret.txt"
[ -r "$secret_file" ] || misconfigured "no readable secret.txt in $source_dir"
secret="$(cat "$secret_file")" || misconfigured "cannot read $secret_file"
[ -n "$secret" ] || misconfigured "secret.txt is empty"
# the public default would make the hidden cases known to everyone
[ "$secret" != {default} ] || misconfigured "secret.txt holds the public default secret"
export GRADCHECK_SECRET="$secret"
unset secret

user_args=()
if [ "$(id -u)" = 0 ] && id -u {user} >/dev/null 2>&1; then
    user_args=(--worker-user {user})
fi
# picks the notebook (the one that defines most of the assignment's functions), grades
# it and says in results.json which file it graded and why.
# -I: nothing in the working directory (next to the submission) can shadow the grader
if ! errors="$("$python" -I -m autograder.bundle run --assignment "$assignment" \\
        --submission "$root/submission" --results "$results" "${{user_args[@]}}" 2>&1)"; then
    fail "The autograder could not grade the submission: $errors"
fi
"""


def _source_files() -> list[tuple[str, str]]:
    """(path on disk, path in the zip) of the project's installable source."""
    files = []
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        path = os.path.join(PROJECT_ROOT, name)
        if os.path.isfile(path):
            files.append((path, f"{SOURCE_DIR}/{name}"))
    for package in ("gradcheck_kit", "autograder"):
        for root, dirs, names in os.walk(os.path.join(PROJECT_ROOT, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            for name in sorted(names):
                if name.endswith((".py", ".typed", ".json")):
                    path = os.path.join(root, name)
                    files.append((path, f"{SOURCE_DIR}/{os.path.relpath(path, PROJECT_ROOT)}"))
    return files


def _add_text(archive: zipfile.ZipFile, name: str, text: str, executable: bool) -> None:
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    mode = 0o755 if executable else 0o644
    info.external_attr = (stat.S_IFREG | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, text)


def build_bundle(output: str, assignment: str, secret: str) -> None:
    quoted = shlex.quote(assignment)
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as archive:
        _add_text(archive, "setup.sh", SETUP_SH.format(source=SOURCE_DIR, user=WORKER_USER), True)
        run = RUN_AUTOGRADER.format(
            assignment=quoted, user=WORKER_USER, default=shlex.quote(DEFAULT_SECRET)
        )
        _add_text(archive, "run_autograder", run, True)
        _add_text(archive, "secret.txt", secret, False)
        for path, name in _source_files():
            with open(path, encoding="utf-8") as handle:
                _add_text(archive, name, handle.read(), False)


def main(argv: Sequence[str]) -> int:
    from .cli import _Parser

    parser = _Parser(prog="gradcheck-grade gradescope-bundle")
    parser.add_argument("--assignment", required=True)
    parser.add_argument("-o", "--output", default="autograder.zip")
    parser.add_argument("--seed", help="hidden-case secret (default: $GRADCHECK_SECRET or random)")
    args = parser.parse_args(list(argv))
    import gradcheck_kit

    if args.assignment not in gradcheck_kit.assignments():
        known = ", ".join(gradcheck_kit.assignments())
        sys.stderr.write(f"gradcheck-grade: unknown assignment {args.assignment!r} ({known})\n")
        return 2
    secret = args.seed or os.environ.get("GRADCHECK_SECRET")
    if secret == DEFAULT_SECRET:
        sys.stderr.write(
            "gradcheck-grade: the public default secret would make the hidden cases known; "
            "choose another --seed\n"
        )
        return 2
    if not secret:
        secret = secrets.token_hex(16)
        sys.stderr.write("gradcheck-grade: no --seed given; the bundle uses a random secret\n")
    try:
        build_bundle(args.output, args.assignment, secret)
    except OSError as error:
        sys.stderr.write(f"gradcheck-grade: cannot write {args.output}: {error.strerror}\n")
        return 2
    print(f"wrote {args.output} for {args.assignment}")
    return 0


def pick_notebook(submission: str, assignment: str) -> tuple[str | None, str]:
    """(the notebook to grade, why it was chosen) among those in ``submission``.

    The one defining most of the assignment's functions wins (a scan of the text for
    the names, as when the assignment is detected; nothing is parsed), then the one
    named after the assignment, then the first by name. A single notebook is graded
    even if unreadable, so that its grade says why."""
    import gradcheck_kit

    from .batch import find_notebooks
    from .grade import names_bound
    from .notebook import BadSubmission, code_cells, read_notebook

    found = find_notebooks([submission]) if os.path.isdir(submission) else []
    found = [p for p in found if p.endswith(".ipynb")]
    if not found:
        return None, "No notebook (.ipynb) found in the submission."
    wanted = {op.name for op in gradcheck_kit.all_ops(assignment)}
    counts: dict[str, int | None] = {}
    for path in found:
        try:
            counts[path] = len(names_bound(code_cells(read_notebook(path)), wanted))
        except BadSubmission:
            counts[path] = None
    own_name = f"{assignment}.ipynb"

    def rank(item: tuple[int, str]) -> tuple:
        index, path = item
        count = counts[path]
        return (-1 if count is None else count, os.path.basename(path) == own_name, -index)

    _, best = max(enumerate(found), key=rank)

    def label(path: str) -> str:
        return os.path.relpath(path, submission)

    def defines(path: str) -> str:
        count = counts[path]
        if count is None:
            return "cannot be read"
        return f"defines {count} of the {len(wanted)} functions of {assignment}"

    if len(found) == 1:
        return best, f"Graded {label(best)}: it {defines(best)}."
    others = "; ".join(f"{label(p)} {defines(p)}" for p in found if p != best)
    return best, (
        f"Graded {label(best)} of the {len(found)} notebooks submitted: it {defines(best)}, "
        f"the most (others: {others})."
    )


def run_main(argv: Sequence[str]) -> int:
    """What run_autograder calls: pick the notebook, grade it, write results.json."""
    from .cli import _Parser
    from .grade import grade_submission
    from .notebook import BadSubmission
    from .reports import to_gradescope
    from .sandbox import SandboxOptions

    parser = _Parser(prog="run_autograder")
    parser.add_argument("--assignment", required=True)
    parser.add_argument("--submission", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--worker-user")
    args = parser.parse_args(list(argv))
    path, why = pick_notebook(args.submission, args.assignment)
    if path is None:
        text = _plain_results(why)
    else:
        try:
            grade = grade_submission(
                path,
                assignment=args.assignment,
                options=SandboxOptions(user=args.worker_user or None),
            )
        except BadSubmission as error:
            name = os.path.basename(path)
            text = _plain_results(f"{why}\nThe autograder could not grade {name}: {error}")
        else:
            text = to_gradescope(grade, preface=[why])
    with open(args.results, "w", encoding="utf-8") as handle:
        handle.write(text)
    return 0


def _plain_results(message: str) -> str:
    """results.json with no tests: a submission that could not be graded."""
    import json

    from .sanitize import text

    results = {
        "score": 0,
        "output": text(message),
        "output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": [],
    }
    return json.dumps(results, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:2] == ["run"]:
        sys.exit(run_main(sys.argv[2:]))
    sys.exit(main(sys.argv[1:]))
