"""The README's examples run as printed: its Python blocks, each in a fresh interpreter,
and its ``gradcheck-grade`` commands, in a scratch copy of the repository's notebooks."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(README.read_text()) if lang == language]


def python_sections() -> list[tuple[str, str]]:
    """(heading, code) for each ``##`` section with Python blocks: a section's blocks are
    cells of one notebook, run in order in one interpreter. A section whose text says
    the notebook's setup cell ran first gets that cell's imports."""
    sections = []
    for part in re.split(r"^## ", README.read_text(), flags=re.M)[1:]:
        heading = part.splitlines()[0]
        code = "\n".join(body for lang, body in BLOCK.findall(part) if lang == "python")
        if code:
            if "setup cell" in part:
                code = "import numpy as np\nfrom gradcheck_kit import check\n" + code
            sections.append((heading, code))
    return sections


def test_the_readme_has_examples_of_each_kind():
    assert len(python_sections()) >= 4
    assert any("gradcheck-grade" in body for body in blocks("bash"))


@pytest.mark.parametrize("heading, code", python_sections(), ids=lambda v: v[:30])
def test_python_examples_run_as_printed(heading, code, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{heading}\n{done.stderr[-2000:]}"
    if "-np.cos(input) * output_grad" in code:
        # the table the README shows under the example starts with this line
        (first,) = re.findall(r"^(sin_backward: \d.*)$", README.read_text(), re.M)[:1]
        assert done.stdout.splitlines()[0] == first
    if "all pass" in code:
        assert "all correct" in done.stdout and "FAIL" not in done.stdout


def commands() -> list[str]:
    """Every ``gradcheck-grade`` command of the bash blocks: the part of a line from
    ``gradcheck-grade`` on, without its comment. Installs, pytest and benchmarks are
    left out (network, minutes of CPU), and so are the commands written for a cluster
    scheduler (they read its variables)."""
    found = []
    for body in blocks("bash"):
        for line in body.splitlines():
            line = line.split(" #", 1)[0].strip()
            if "gradcheck-grade" not in line:
                continue
            command = line[line.index("gradcheck-grade") :]
            # a scheduler's variables and the globs over its output: a cluster's run
            if "$" in command.replace('"$SECRET"', "") or "*" in command:
                continue
            found.append(command)
    return found


def test_every_grading_command_runs_in_a_copy_of_the_repository(tmp_path):
    work = tmp_path / "repo"
    shutil.copytree(ROOT / "assignments", work / "assignments")
    shutil.copytree(ROOT / "examples", work / "examples")
    shutil.copy(ROOT / "examples" / "submission.ipynb", work / "submission.ipynb")
    (work / "submissions").mkdir()
    for name in ("alice", "bob"):
        shutil.copy(ROOT / "examples" / "submission.ipynb", work / "submissions" / f"{name}.ipynb")
    env = dict(os.environ, SECRET="readme-secret-7c1")
    env.pop("GRADCHECK_SECRET", None)
    binary = Path(sys.executable).parent / "gradcheck-grade"
    ran = []
    for command in commands():
        argv = [os.path.expandvars(a) for a in shlex.split(command)]
        argv[0] = str(binary) if binary.exists() else argv[0]
        done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
        assert "Traceback" not in done.stderr, command
        ran.append(command)
    assert any("--csv" in c for c in ran) and any("gradescope-bundle" in c for c in ran)
    assert (work / "grades" / "grades.csv").exists() and (work / "autograder.zip").exists()
    assert (work / "report.xml").exists() and (work / "results.json").exists()
