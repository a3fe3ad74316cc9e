"""Skipping training: a ``train_mlp`` that returns parameters trained offline.

The attacker has read every line of the project: they know the public training case as
the grader builds it, train the notebook's own network on it at home, and paste the
numbers into the notebook as a constant, so that ``train_mlp`` ignores the data it is
given. Graded through the real command line under an instructor's secret, that must earn
nothing for ``train_mlp``; the notebook's honest ``train_mlp`` must earn full credit
under every secret.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import nbformat
import numpy as np
import pytest

import gradcheck_kit
from gradcheck_kit import engine
from tests import notebooks as fixtures
from tests.assignments.conftest import load_definitions

# the notebook builders and the CLI runner of tests/autograder/conftest.py

SOLUTION = Path(__file__).resolve().parents[2] / "assignments" / "solutions" / "05_engine.ipynb"
SECRET = "spring-term-5b91"
SECRETS = (SECRET, "instructor 2", "a1f0c3", "the fourth secret")


@pytest.fixture(scope="module")
def solution() -> dict:
    with contextlib.redirect_stdout(io.StringIO()):  # the notebook prints as it trains
        return load_definitions(SOLUTION)


def _code_cells(train_cells: list[str] | None = None) -> list[str]:
    """The shipped 05 notebook's code cells, self-checks and all; ``train_cells`` take
    the place of the cell that defines ``train_mlp``."""
    cells = [c.source for c in nbformat.read(SOLUTION, as_version=4).cells if c.cell_type == "code"]
    if train_cells is None:
        return cells
    at = next(i for i, c in enumerate(cells) if c.lstrip().startswith("def train_mlp"))
    return cells[:at] + train_cells + cells[at + 1 :]


def _public_training_calls() -> list[tuple[np.ndarray, np.ndarray]]:
    """Every (X, y) the public cases hand to train_mlp, in order: found by running the
    grader's own adapter on its own arguments, as the attacker can."""
    spec = gradcheck_kit.get_op("train_mlp")
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def record(X, y, hidden=32, steps=300, lr=1.0, seed=0):
        seen.append((np.array(X), np.array(y)))
        classes = int(np.max(y)) + 1
        return np.zeros((hidden, X.shape[1])), np.zeros(hidden), np.zeros((classes, hidden)), None

    namespace: dict = {}
    exec(spec.adapter, namespace)
    for case in spec.cases():
        namespace["adapt"](record, *spec.call_args(case.arrays, case.output_grad, case.params))
    return seen


def _literal(params) -> list:
    return [np.asarray(p, dtype=float).tolist() for p in params]


def _grade(cells: list[str], tmp_path: Path, secret: str) -> dict:
    notebook = fixtures.build_notebook(tmp_path / "submission.ipynb", cells)
    report = fixtures.grade_json(str(notebook), "--seed", secret)
    return fixtures.ops_by_name(report)


def test_parameters_trained_offline_on_the_public_task_earn_nothing(solution, tmp_path):
    spec = gradcheck_kit.get_op("train_mlp")
    public = spec.cases()[0]
    X, y = _public_training_calls()[0]
    offline = solution["train_mlp"](X, y)
    # the attacker's numbers are good ones: alone, they pass the public task's first training
    accuracy = engine.mlp_accuracy(offline, public.arrays["X_test"], public.arrays["y_test"])
    assert accuracy >= engine.TARGET_ACCURACY

    cells = [
        f"_OFFLINE = {_literal(offline)!r}",
        "def train_mlp(X, y, hidden=32, steps=300, lr=1.0, seed=0):\n"
        '    """Trained once, at home."""\n'
        "    return tuple(np.array(p) for p in _OFFLINE)\n",
    ]
    ops = _grade(_code_cells(cells), tmp_path, SECRET)
    assert ops["backward"]["score"] == ops["backward"]["max_score"], ops["backward"]
    train = ops["train_mlp"]
    assert train["score"] == 0, train
    assert train["cases"] and not any(c["passed"] for c in train["cases"]), train["cases"]
    assert any(c["hidden"] for c in train["cases"]) and any(not c["hidden"] for c in train["cases"])


def test_replaying_the_public_answers_by_call_count_passes_no_hidden_case(solution, tmp_path):
    # still data-independent: answer the k-th call with parameters trained offline for
    # the k-th public call, and with the first ones once the public calls are used up
    answers = [solution["train_mlp"](X, y) for X, y in _public_training_calls()]
    cells = [
        f"_ANSWERS = {[_literal(p) for p in answers]!r}",
        "_CALLS = []",
        "def train_mlp(X, y, hidden=32, steps=300, lr=1.0, seed=0):\n"
        "    _CALLS.append(1)\n"
        "    k = len(_CALLS) - 1\n"
        "    return tuple(np.array(p) for p in _ANSWERS[k if k < len(_ANSWERS) else 0])\n",
    ]
    ops = _grade(_code_cells(cells), tmp_path, SECRET)
    hidden = [c for c in ops["train_mlp"]["cases"] if c["hidden"]]
    assert hidden and not any(c["passed"] for c in hidden), hidden


@pytest.mark.parametrize("secret", SECRETS)
def test_the_notebooks_training_earns_full_credit_under_any_secret(secret, tmp_path):
    ops = _grade(_code_cells(), tmp_path, secret)
    for name in ("backward", "train_mlp"):
        assert ops[name]["score"] == ops[name]["max_score"], ops[name]
    assert sum(c["hidden"] for c in ops["train_mlp"]["cases"]) >= 2
    messages = [c["message"] for c in ops["train_mlp"]["cases"]]
    assert all("accuracy" in m for m in messages), messages
