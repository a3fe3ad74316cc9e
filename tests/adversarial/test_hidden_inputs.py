"""Hidden inputs never reach what a student sees before grades are published.

A function may remember every input it is given and put it in a later exception
message. The grader runs every public case before any hidden one, so the messages of
public cases (shown to students at once) hold no hidden input; only hidden cases'
messages (shown after publication) may.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gradcheck_kit
from tests import notebooks as fixtures

SECRET = "hidden-inputs-secret-4e2"
ASSIGNMENT = "01_elementwise"

# relu remembers the first values of every input; abs, graded after it, tells them
REMEMBER = """
SEEN = []
def relu_backward(input, output_grad):
    SEEN.append(repr(round(float(input.reshape(-1)[0]), 6)) if input.size else "empty")
    return output_grad * (input > 0)
"""
TELL = """
def abs_backward(input, output_grad):
    raise ValueError("seen: " + " ".join(SEEN))
"""


def test_public_case_messages_hold_no_hidden_input(tmp_path: Path):
    cells = fixtures.solution_cells(
        ASSIGNMENT, replace={"relu_backward": REMEMBER, "abs_backward": TELL}
    )
    notebook = fixtures.build_notebook(tmp_path / "submission.ipynb", cells)
    result = subprocess.run(
        [sys.executable, "-m", "autograder.cli", str(notebook), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "GRADCHECK_SECRET": SECRET},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    ops = fixtures.ops_by_name(json.loads(result.stdout))
    relu = gradcheck_kit.get_op("relu_backward")
    hidden = {
        repr(round(float(case.arrays["input"].reshape(-1)[0]), 6))
        for case in relu.cases(hidden=True, secret=SECRET)
        if case.arrays["input"].size
    }
    public = {
        repr(round(float(case.arrays["input"].reshape(-1)[0]), 6))
        for case in relu.cases()
        if case.arrays["input"].size
    }
    hidden -= public  # a value both kinds share tells nothing
    cases = ops["abs_backward"]["cases"]
    visible = " ".join(c["message"] for c in cases if not c["hidden"])
    after = " ".join(c["message"] for c in cases if c["hidden"])
    assert "seen:" in visible and public & set(visible.split())
    assert not hidden & set(visible.split()), "a hidden input reached a public message"
    # the attack itself works: hidden messages, shown after publication, do hold them
    assert hidden & set(after.split())
