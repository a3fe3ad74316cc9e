"""``gradcheck-grade gradescope-bundle``: the zip an instructor uploads to Gradescope.

The zip holds ``setup.sh`` (installs this project from the copy of its source inside
the zip and creates an unprivileged user for student code), ``run_autograder``
(grades the submitted notebook into ``results/results.json``) and the hidden-case
secret. ``GRADCHECK_AUTOGRADER_ROOT`` moves the ``/autograder`` root, so the script
can be exercised against a temporary directory laid out like Gradescope's.
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
# Gradescope runs this once when it builds the autograder image.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if command -v apt-get >/dev/null 2>&1 && ! command -v python3 >/dev/null 2>&1; then
    apt-get update && apt-get install -y python3 python3-pip
fi
python3 -m pip install --quiet "$here/{source}"
# student code runs as this user, never as root
if ! id -u {user} >/dev/null 2>&1; then
    useradd --no-create-home --shell /usr/sbin/nologin {user} || true
fi
# the secret (secret.txt) and this copy of the source are for root only: without
# namespaces the worker, as {user}, could otherwise read them
chmod 700 "$here"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Grades /autograder/submission/*.ipynb into /autograder/results/results.json.
# Gradescope unpacks the zip into /autograder/source and runs a copy of this script
# from /autograder: everything of the bundle is looked for under $root/source.
set -uo pipefail
root="${{GRADCHECK_AUTOGRADER_ROOT:-/autograder}}"
source_dir="$root/source"
python="${{GRADCHECK_PYTHON:-python3}}"
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

notebook="$root/submission/$assignment.ipynb"
if [ ! -f "$notebook" ]; then
    notebook="$(find "$root/submission" -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' \\
        2>/dev/null | LC_ALL=C sort | head -n 1)"
fi
[ -n "$notebook" ] || fail "No notebook (.ipynb) found in the submission."

user_args=()
if [ "$(id -u)" = 0 ] && id -u {user} >/dev/null 2>&1; then
    user_args=(--worker-user {user})
fi
# -I: nothing in the working directory (next to the submission) can shadow the grader
if ! errors="$("$python" -I -m autograder.cli "$notebook" --assignment "$assignment" \\
        --format gradescope --output "$results" "${{user_args[@]}}" 2>&1 >/dev/null)"; then
    fail "The autograder could not grade $(basename "$notebook"): $errors"
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
