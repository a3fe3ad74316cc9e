"""Same submission and secret, same bytes; another secret, other hidden inputs only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import run_cli, solution_cells

import gradcheck_kit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "submission.ipynb"


def test_json_report_is_byte_identical_across_runs():
    outputs = []
    for _ in range(3):
        result = run_cli(str(EXAMPLE), "--format", "json", "--seed", "term-1")
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout.encode())
    assert outputs[0] == outputs[1] == outputs[2]
    report = json.loads(outputs[0])
    # the bundled example has failing cases, so hints and messages are compared too
    assert report["score"] < report["max_score"]
    assert any(c["hidden"] and not c["passed"] for op in report["ops"] for c in op["cases"])


def test_every_format_is_byte_identical_with_the_secret_from_the_environment():
    for fmt in ("junit", "gradescope", "markdown"):
        runs = [
            run_cli(str(EXAMPLE), "--format", fmt, env={"GRADCHECK_SECRET": "env-secret"}).stdout
            for _ in range(2)
        ]
        assert runs[0] == runs[1] and runs[0], fmt


def _batch(tmp_path: Path, submissions: Path, name: str) -> tuple[bytes, dict[str, bytes]]:
    out = tmp_path / name
    result = run_cli(
        str(submissions), "--jobs", "2", "--csv", str(out / "grades.csv"), "--seed", "batch-secret"
    )
    assert result.returncode == 0, result.stderr
    feedback = {p.name: p.read_bytes() for p in sorted((out / "feedback").iterdir())}
    return (out / "grades.csv").read_bytes(), feedback


def test_batch_csv_and_feedback_are_identical_across_runs(tmp_path, make_notebook):
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    sources = solution_cells("01_elementwise")
    buggy = solution_cells(
        "01_elementwise",
        {"sin_backward": "def sin_backward(input, output_grad):\n    return output_grad\n"},
    )
    for name, cells in [("a", sources), ("b", buggy), ("c", sources[:3]), ("d", buggy)]:
        make_notebook(cells, name=f"submissions/{name}.ipynb")
    (submissions / "broken.ipynb").write_text("{not json")
    first_csv, first_feedback = _batch(tmp_path, submissions, "run1")
    second_csv, second_feedback = _batch(tmp_path, submissions, "run2")
    assert first_csv.replace(b"run1", b"") == second_csv.replace(b"run2", b"")
    assert first_feedback == second_feedback
    rows = first_csv.decode().splitlines()
    assert len(rows) == 6 and "broken.ipynb" in rows[3]  # sorted, bad input kept as a row


def _cases(report: dict, hidden: bool) -> dict[str, list]:
    return {op["name"]: [c for c in op["cases"] if c["hidden"] == hidden] for op in report["ops"]}


def test_another_secret_changes_hidden_cases_and_keeps_public_ones():
    reports = {}
    for seed in ("alpha", "beta"):
        result = run_cli(str(EXAMPLE), "--format", "json", "--seed", seed)
        assert result.returncode == 0, result.stderr
        reports[seed] = json.loads(result.stdout)
    alpha, beta = reports["alpha"], reports["beta"]
    assert _cases(alpha, hidden=False) == _cases(beta, hidden=False)
    hidden_a, hidden_b = _cases(alpha, hidden=True), _cases(beta, hidden=True)
    assert hidden_a.keys() == hidden_b.keys()
    changed = [name for name in hidden_a if hidden_a[name] != hidden_b[name]]
    # the names or messages of hidden cases show the drawn shapes and values
    assert len(changed) >= len(hidden_a) // 2, changed


def test_another_secret_draws_other_hidden_inputs_for_every_op():
    for op in gradcheck_kit.all_ops():
        if not hasattr(op, "grad_names"):
            continue  # 05_engine's checks have no array cases
        public = [c.arrays for c in op.cases()]
        assert _same_arrays(public, [c.arrays for c in op.cases()]), op.name
        first = op.cases(hidden=True, secret="alpha")
        again = op.cases(hidden=True, secret="alpha")
        other = op.cases(hidden=True, secret="beta")
        assert _same_arrays([c.arrays for c in first], [c.arrays for c in again]), op.name
        assert not _same_arrays([c.arrays for c in first], [c.arrays for c in other]), op.name


def _same_arrays(a: list[dict], b: list[dict]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x.keys() != y.keys():
            return False
        for key in x:
            left, right = x[key], y[key]
            lefts = left if isinstance(left, list) else [left]
            rights = right if isinstance(right, list) else [right]
            if len(lefts) != len(rights) or not all(
                (p is None and q is None)
                or (
                    p is not None
                    and q is not None
                    and np.shape(p) == np.shape(q)
                    and np.array_equal(p, q)
                )
                for p, q in zip(lefts, rights)
            ):
                return False
    return True
