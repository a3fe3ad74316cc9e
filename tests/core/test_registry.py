"""Declaring a new op: a forward and a domain are enough."""

import numpy as np
import pytest

from gradcheck_kit import Positive, all_ops, check, declare_op, get_op
from gradcheck_kit.registry import _REGISTRY


@pytest.fixture
def softplus():
    spec = declare_op(
        "softplus_backward", lambda input: np.log1p(np.exp(input)), assignment="extra"
    )
    yield spec
    del _REGISTRY["softplus_backward"]


def test_a_declared_op_gets_cases_checks_and_hints(softplus):
    assert get_op("softplus_backward") is softplus
    assert len(softplus.cases()) >= 8

    def softplus_backward(input, output_grad):
        return output_grad / (1 + np.exp(-input))

    assert check(softplus_backward, show=False).passed

    def ignores_upstream(input, output_grad):
        return 1 / (1 + np.exp(-input))

    result = check(ignores_upstream, name="softplus_backward", show=False)
    assert {c.hint for c in result.cases if not c.passed} == {"upstream"}


def test_binary_ops_broadcast_by_default():
    spec = declare_op(
        "hypot_backward", np.hypot, inputs={"input1": Positive(), "input2": Positive()}
    )
    try:
        assert spec.broadcasting
        assert "broadcast (4,3) with (3,)" in [c.name for c in spec.cases()]

        def hypot_backward(input1, input2, output_grad):
            h = np.hypot(input1, input2)
            return output_grad * input1 / h, output_grad * input2 / h

        result = check(hypot_backward, show=False)
        assert {c.hint for c in result.cases if not c.passed} == {"unbroadcast"}
    finally:
        del _REGISTRY["hypot_backward"]


def test_signatures_follow_the_curriculum():
    assert get_op("sum_backward").signature() == (
        "sum_backward(input, output_grad, dim=None, keepdim=False)"
    )
    assert get_op("where_backward").signature() == (
        "where_backward(condition, input1, input2, output_grad)"
    )
    assert get_op("linear_backward").signature() == (
        "linear_backward(input, weight, bias, output_grad)"
    )
    assert len([op for op in all_ops() if op.assignment == "01_elementwise"]) == 17
