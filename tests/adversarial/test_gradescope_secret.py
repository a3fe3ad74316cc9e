"""The Gradescope bundle where Gradescope runs it: the zip unpacked into
``autograder/source``, ``run_autograder`` copied to ``autograder/`` and run from there.

It must grade with its own secret, refuse to grade without one (never falling back to
the public default), and keep the hidden cases and whatever a student prints while
they run out of everything students see before grades are published.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from autograder.grade import DEFAULT_SECRET
from tests import notebooks as fixtures

ASSIGNMENT = "01_elementwise"
SECRET = "bundle-secret-4b1d"
MARK = "PRINTED-WHILE-GRADED"
# prints a value of every input it gets: hidden inputs are drawn from the secret
SPY = f"""def relu_backward(input, output_grad):
    first = float(input.ravel()[0]) if input.size else None
    print({MARK!r}, input.shape, first)
    return output_grad * (input > 0)
"""
BUGGY = "def exp_backward(input, output_grad):\n    return np.exp(input)\n"


def gradescope_layout(tmp_path: Path, *bundle_args: str) -> Path:
    """/autograder as Gradescope builds it, under ``tmp_path``: returns its root."""
    bundle = tmp_path / "autograder.zip"
    made = fixtures.run_cli(
        "gradescope-bundle", "--assignment", ASSIGNMENT, "-o", str(bundle), *bundle_args
    )
    assert made.returncode == 0, made.stderr
    root = tmp_path / "autograder"
    source = root / "source"
    source.mkdir(parents=True)
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(source)
    # Gradescope copies the script out of the source and runs the copy
    shutil.copy(source / "run_autograder", root / "run_autograder")
    (root / "run_autograder").chmod(0o755)
    (root / "submission").mkdir()
    cells = fixtures.solution_cells(ASSIGNMENT, {"relu_backward": SPY, "exp_backward": BUGGY})
    fixtures.build_notebook(root / "submission" / "submission.ipynb", cells)
    return root


def run_autograder(root: Path) -> tuple[subprocess.CompletedProcess, dict]:
    env = dict(os.environ, GRADCHECK_AUTOGRADER_ROOT=str(root), GRADCHECK_PYTHON=sys.executable)
    env.pop("GRADCHECK_SECRET", None)
    result = subprocess.run(
        [str(root / "run_autograder")],
        cwd=root,  # Gradescope's working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = json.loads((root / "results" / "results.json").read_text())
    return result, results


def after_published(results: dict) -> list[dict]:
    return [t for t in results["tests"] if t["visibility"] == "after_published"]


def direct(root: Path, *args: str) -> dict:
    result = fixtures.run_cli(
        str(root / "submission" / "submission.ipynb"),
        "--assignment",
        ASSIGNMENT,
        "--format",
        "gradescope",
        "--timeout",
        "5",
        "--efficiency-weight",
        "0",
        *args,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, dict]:
    root = gradescope_layout(tmp_path_factory.mktemp("gradescope"), "--seed", SECRET)
    result, results = run_autograder(root)
    return root, result, results


def test_bundle_grades_with_its_own_secret_where_gradescope_runs_it(graded):
    root, result, results = graded
    assert result.returncode == 0, result.stderr
    assert 0 < results["score"] < 26
    assert "default secret" not in results["output"]
    # hidden inputs come from the secret: the bundle's are those of --seed SECRET and
    # not those of the public default
    own = after_published(results)
    assert own and own == after_published(direct(root, "--seed", SECRET))
    assert own != after_published(direct(root))


def test_every_test_has_a_status_and_hidden_ones_wait_for_publication(graded):
    _, _, results = graded
    for test in results["tests"]:
        assert test["status"] in ("passed", "failed"), test["name"]
        assert test["visibility"] in ("visible", "after_published"), test["name"]
        if test["max_score"]:
            assert (test["status"] == "passed") == (test["score"] == test["max_score"])
    names = {t["name"]: t for t in results["tests"]}
    assert names["exp_backward"]["status"] == "failed"
    assert names["sin_backward"]["status"] == "passed"
    assert names["exp_backward (hidden cases)"]["status"] == "failed"
    assert names["exp_backward (hidden cases)"]["visibility"] == "after_published"
    assert names["sin_backward (hidden cases)"]["status"] == "passed"


def test_hidden_inputs_and_prints_during_them_stay_out_of_visible_text(graded):
    root, _, results = graded
    report = fixtures.run_cli(
        str(root / "submission" / "submission.ipynb"),
        "--format",
        "json",
        "--seed",
        SECRET,
        "--efficiency-weight",
        "0",
    )
    hidden_names = {
        case["name"]
        for op in json.loads(report.stdout)["ops"]
        for case in op["cases"]
        if case["hidden"]
    }
    assert hidden_names
    visible = [results["output"]] + [
        t["output"] + t["name"] for t in results["tests"] if t["visibility"] == "visible"
    ]
    for text in visible:
        assert MARK not in text
        assert not [name for name in hidden_names if name in text]
    published = "\n".join(t["output"] for t in after_published(results))
    assert MARK in published  # shown, once grades are published
    assert any(name in published for name in hidden_names)


@pytest.mark.parametrize("secret_file", ["missing", "empty", "default"])
def test_a_bundle_without_its_secret_fails_loudly(tmp_path, secret_file):
    root = gradescope_layout(tmp_path, "--seed", SECRET)
    secret = root / "source" / "secret.txt"
    if secret_file == "missing":
        secret.unlink()
    elif secret_file == "empty":
        secret.write_text("\n")
    else:
        secret.write_text(DEFAULT_SECRET)
    result, results = run_autograder(root)
    assert result.returncode != 0
    assert "misconfigured" in results["output"]
    assert results["score"] == 0 and results["tests"] == []
    assert "misconfigured" in result.stderr


def test_a_bundle_is_never_built_with_the_public_default_secret(tmp_path):
    made = fixtures.run_cli(
        "gradescope-bundle",
        "--assignment",
        ASSIGNMENT,
        "--seed",
        DEFAULT_SECRET,
        "-o",
        str(tmp_path / "autograder.zip"),
    )
    assert made.returncode == 2
    assert len(made.stderr.strip().splitlines()) == 1 and "Traceback" not in made.stderr
    assert not (tmp_path / "autograder.zip").exists()


def test_an_ungradable_submission_is_reported_as_plain_text(tmp_path):
    root = gradescope_layout(tmp_path, "--seed", SECRET)
    (root / "submission" / "submission.ipynb").unlink()
    name = "\x1b[2J\x1b]0;pwned\x07<b onmouseover=alert(1)>x\u202e.ipynb"
    (root / "submission" / name).write_text("not json")
    result, results = run_autograder(root)
    assert result.returncode == 0, result.stderr  # the submission's fault, not the bundle's
    assert "could not grade" in results["output"]
    assert "<b onmouseover=alert(1)>x" in results["output"]
    assert results["output_format"] == "text"
    unsafe = [c for c in results["output"] if not (c.isprintable() or c == "\n")]
    assert not unsafe, unsafe
