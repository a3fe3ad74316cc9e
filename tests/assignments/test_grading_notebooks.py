"""Graded in-process with the library, solution notebooks get full marks on every op of
their assignment (public and hidden cases) and student notebooks get "not implemented"."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import gradcheck_kit
from gradcheck_kit.check import call_on_case, run_cases

from .conftest import NAMES, load_definitions, solution_path, student_path

#: The curriculum's signatures (the contract): every one must be in its notebook as is.
CURRICULUM = {
    "01_elementwise": [
        "unbroadcast(grad, shape)",
        "neg_backward(input, output_grad)",
        "exp_backward(input, output_grad)",
        "log_backward(input, output_grad)",
        "sin_backward(input, output_grad)",
        "cos_backward(input, output_grad)",
        "tanh_backward(input, output_grad)",
        "sigmoid_backward(input, output_grad)",
        "relu_backward(input, output_grad)",
        "abs_backward(input, output_grad)",
        "add_backward(input1, input2, output_grad)",
        "sub_backward(input1, input2, output_grad)",
        "mul_backward(input1, input2, output_grad)",
        "div_backward(input1, input2, output_grad)",
        "pow_backward(input1, input2, output_grad)",
        "maximum_backward(input1, input2, output_grad)",
        "where_backward(condition, input1, input2, output_grad)",
    ],
    "02_reductions": [
        "sum_backward(input, output_grad, dim=None, keepdim=False)",
        "mean_backward(input, output_grad, dim=None, keepdim=False)",
        "prod_backward(input, output_grad, dim=None, keepdim=False)",
        "max_backward(input, output_grad, dim=None, keepdim=False)",
        "var_backward(input, output_grad, dim=None, keepdim=False, correction=1)",
        "reshape_backward(input, output_grad)",
        "permute_backward(input, output_grad, dims)",
        "expand_backward(input, output_grad)",
        "getitem_backward(input, output_grad, index)",
        "cat_backward(inputs, output_grad, dim=0)",
        "cumsum_backward(input, output_grad, dim)",
        "cumprod_backward(input, output_grad, dim)",
    ],
    "03_matmul": [
        "matmul_backward(input1, input2, output_grad)",
        "linear_backward(input, weight, bias, output_grad)",
        "softmax_backward(input, output_grad, dim=-1)",
        "log_softmax_backward(input, output_grad, dim=-1)",
        "cross_entropy_backward(input, target, output_grad)",
        "mse_loss_backward(input, target, output_grad)",
    ],
    "04_conv": [
        "conv2d_backward(input, weight, bias, output_grad, stride=1, padding=0, dilation=1)",
        "max_pool2d_backward(input, output_grad, kernel_size, stride=None)",
        "avg_pool2d_backward(input, output_grad, kernel_size, stride=None)",
        "batch_norm_backward(input, weight, bias, output_grad, eps=1e-05)",
    ],
    "05_engine": ["backward(loss)", "train_mlp(X, y, hidden=32, steps=300, lr=1.0, seed=0)"],
}
SECRET = "tests-assignments"


@pytest.fixture(scope="module")
def solutions():
    return {name: load_definitions(solution_path(name)) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_notebook_defines_every_function_with_the_curriculum_signature(name, solutions):
    namespace = solutions[name]
    for expected in CURRICULUM[name]:
        function = expected.split("(")[0]
        assert function in namespace, f"{name} does not define {function}"
        assert f"{function}{inspect.signature(namespace[function])}" == expected
    registered = {op.name for op in gradcheck_kit.all_ops(name)}
    assert registered == {s.split("(")[0] for s in CURRICULUM[name]}


@pytest.mark.parametrize("name", NAMES)
def test_solution_notebook_gets_full_marks(name, solutions):
    namespace = solutions[name]
    for spec in gradcheck_kit.all_ops(name):
        for hidden in (False, True):
            result = run_cases(namespace[spec.name], spec, spec.cases(hidden, SECRET))
            failed = [(c.name, c.hint, c.message) for c in result.cases if not c.passed]
            assert result.passed and result.score == 1.0, (spec.name, hidden, failed)


@pytest.mark.parametrize("name", ["01_elementwise", "02_reductions", "03_matmul", "04_conv"])
def test_solutions_keep_float32(name, solutions):
    namespace = solutions[name]
    for spec in gradcheck_kit.all_ops(name):
        for case in spec.cases(hidden=True, secret=SECRET):
            if case.family != "float32":
                continue
            result, error, _ = call_on_case(namespace[spec.name], spec, case)
            assert error is None
            items = result if isinstance(result, (list, tuple)) else [result]
            dtypes = {np.asarray(item).dtype for item in items if item is not None}
            assert dtypes == {np.dtype(np.float32)}, (spec.name, case.name, dtypes)


@pytest.mark.parametrize("name", NAMES)
def test_student_notebook_is_not_implemented_everywhere(name):
    namespace = load_definitions(student_path(name))
    for spec in gradcheck_kit.all_ops(name):
        for hidden in (False, True):
            result = run_cases(namespace[spec.name], spec, spec.cases(hidden, SECRET))
            assert result.status == "not implemented", (spec.name, result.summary())
