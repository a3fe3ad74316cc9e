"""Small cases are compared element by element with the full central-difference gradient,
besides the random projections, with the same tolerance model; larger ones by projections
alone, at a cost independent of their size."""

import dataclasses

import numpy as np
import pytest

from gradcheck_kit import get_op, verdict
from gradcheck_kit.cases import Case


def sin_case(shape: tuple[int, ...], seed: int = 7) -> tuple[Case, np.ndarray]:
    """A case of sin_backward and its right answer."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=shape)
    upstream = rng.standard_normal(shape)
    case = Case("sin_backward", f"shape {shape}", "basic", {"input": x}, {}, upstream)
    return case, np.cos(x) * upstream


def test_one_element_slightly_off_fails_though_projections_would_pass_it(monkeypatch):
    spec = get_op("sin_backward")
    case, grad = sin_case((20, 25))
    # an element of middling size: its share of a projection is small
    grad.flat[int(np.argsort(np.abs(grad), axis=None)[grad.size // 2])] *= 1 + 1e-5
    result = spec.judge(case, grad)
    assert not result.passed
    assert result.hint == "wrong-value"
    assert "close to the right gradient, but not within tolerance" in result.message
    monkeypatch.setattr(verdict, "ELEMENTWISE_MAX_EVALS", 0)
    assert spec.judge(case, grad).passed


def test_rounding_of_a_float32_result_passes_element_by_element():
    spec = get_op("sin_backward")
    case, grad = sin_case((20, 25))
    case = dataclasses.replace(
        case,
        arrays={"input": case.arrays["input"].astype(np.float32)},
        output_grad=case.output_grad.astype(np.float32),
    )
    x, upstream = case.arrays["input"], case.output_grad
    assert verdict.compares_elementwise(spec, case)
    assert spec.judge(case, np.cos(x) * upstream).passed


@pytest.mark.parametrize("shape, compared", [((20, 25), True), ((30, 20), False)])
def test_the_full_gradient_costs_two_evaluations_per_element_up_to_the_threshold(shape, compared):
    spec = get_op("sin_backward")
    calls = [0]

    def forward(*args, **kwargs):
        calls[0] += 1
        return spec.forward(*args, **kwargs)

    counted = dataclasses.replace(spec, forward=forward)
    case, grad = sin_case(shape)
    size = int(np.prod(shape))
    assert verdict.compares_elementwise(counted, case) is compared
    assert (2 * size <= verdict.ELEMENTWISE_MAX_EVALS) is compared
    assert counted.judge(case, grad).passed
    if compared:
        assert 2 * size < calls[0] <= 2 * size + 2 * verdict.DIRECTIONS + 2
    else:
        assert calls[0] <= 2 * verdict.DIRECTIONS + 2
