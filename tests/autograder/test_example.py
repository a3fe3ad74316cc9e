"""The bundled example the README grades: two deliberate bugs, caught with their hints."""

from pathlib import Path

from conftest import grade_json, ops_by_name

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "submission.ipynb"


def test_bundled_example_loses_points_only_on_its_two_bugs():
    report = grade_json(str(EXAMPLE), "--seed", "readme")
    ops = ops_by_name(report)
    assert report["assignment"] == "01_elementwise"
    wrong = {name for name, op in ops.items() if op["score"] < op["max_score"]}
    assert wrong == {"sin_backward", "add_backward"}
    # ignoring output_grad is wrong on every case that is not trivially zero: no credit
    assert ops["sin_backward"]["score"] == 0 and ops["sin_backward"]["status"] == "failed"
    assert {c["hint"] for c in ops["sin_backward"]["cases"] if not c["passed"]} == {"upstream"}
    add_hints = {c["hint"] for c in ops["add_backward"]["cases"] if not c["passed"]}
    assert add_hints == {"unbroadcast"} and ops["add_backward"]["status"] == "partial"
