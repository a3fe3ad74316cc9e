"""check(): what a student sees when they run it in a notebook or a terminal."""

import numpy as np
import pytest

from gradcheck_kit import CheckResult, check

from . import solutions


def test_correct_function_gets_full_marks_and_a_text_table(capsys):
    result = check(solutions.sin_backward)
    assert isinstance(result, CheckResult)
    assert result.passed and result.score == 1.0
    out = capsys.readouterr().out
    assert out.startswith("sin_backward: ")
    assert "PASS  shape (3,4)" in out and "FAIL" not in out


def test_wrong_answer_never_raises_and_shows_the_hint(capsys):
    def sin_backward(input, output_grad):
        return -np.cos(input) * output_grad

    result = check(sin_backward)
    assert not result.passed and result.score == 0.0
    out = capsys.readouterr().out
    assert "FAIL" in out and "[sign]" in out


def test_a_stub_is_reported_as_not_implemented(capsys):
    def relu_backward(input, output_grad):
        raise NotImplementedError("write relu_backward")

    result = check(relu_backward)
    assert result.status == "not implemented" and result.score == 0.0
    assert "not implemented" in capsys.readouterr().out


def test_exceptions_become_failed_cases_not_crashes():
    def add_backward(input1, input2, output_grad):
        return output_grad.reshape(input1.shape), output_grad.reshape(input2.shape)

    result = check(add_backward, show=False)
    failed = [c for c in result.cases if not c.passed]
    assert failed and any(c.hint == "exception" for c in failed)
    assert any(c.passed for c in result.cases)  # same-shape cases still pass


def test_lambdas_and_aliases_are_checked_by_name():
    assert check(lambda input, output_grad: -output_grad, name="neg_backward", show=False).passed
    my_alias = solutions.exp_backward
    assert check(my_alias, show=False).passed  # __name__ is still exp_backward


def test_unknown_names_get_a_clear_error():
    def softplus_backward(input, output_grad):
        return output_grad

    with pytest.raises(ValueError, match="does not know a function named 'softplus_backward'"):
        check(softplus_backward)


def test_html_table_for_jupyter():
    def mean_backward(input, output_grad, dim=None, keepdim=False):
        return solutions.sum_backward(input, output_grad, dim, keepdim)

    html = check(mean_backward, show=False)._repr_html_()
    assert html.count("<tr>") == 1 + len(check(mean_backward, show=False).cases)
    assert "<code>scale</code>" in html and "times the right one" in html


def test_the_students_arguments_are_left_alone():
    seen = []

    def tanh_backward(input, output_grad):
        seen.append((input, output_grad))
        return (1 - np.tanh(input) ** 2) * output_grad

    check(tanh_backward, show=False)
    views = [x for x, _ in seen if x.ndim >= 1 and not x.flags.c_contiguous]
    assert views, "non-contiguous inputs must reach the student's function as views"


def test_score_gives_no_credit_for_all_zero_answers_alone():
    from gradcheck_kit.verdict import CaseResult, score_cases

    wrong_but_trivially_right = [CaseResult("a", False), CaseResult("b", True, trivial=True)]
    assert score_cases(wrong_but_trivially_right) == 0.0
    half = [CaseResult("a", True), CaseResult("b", False), CaseResult("c", True, trivial=True)]
    assert score_cases(half) == pytest.approx((1 + 0.5) / 3)
    assert score_cases([CaseResult("a", True), CaseResult("z", True, trivial=True)]) == 1.0
