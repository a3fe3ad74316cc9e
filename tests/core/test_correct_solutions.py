"""Correct implementations get every case right, including correct alternatives."""

import numpy as np
import pytest

from gradcheck_kit import all_ops

from . import solutions
from .conftest import grade

CURRICULUM_OPS = [op.name for op in all_ops() if op.assignment[:2] in {"01", "02", "03", "04"}]


def test_the_registry_holds_the_whole_curriculum():
    expected = {name for name in dir(solutions) if not name.startswith("_")} - {"np"}
    assert expected == set(CURRICULUM_OPS)


@pytest.mark.parametrize("name", CURRICULUM_OPS)
def test_correct_solution_passes_every_public_and_hidden_case(name):
    result = grade(name, getattr(solutions, name))
    failures = [(c.name, c.hint, c.message) for c in result.cases if not c.passed]
    assert failures == []
    assert result.score == 1.0


@pytest.mark.parametrize("secret", ["a", "b", "another secret"])
def test_correct_solutions_pass_under_any_hidden_seed(secret):
    for name in ("add_backward", "sum_backward", "matmul_backward", "conv2d_backward"):
        assert grade(name, getattr(solutions, name), secret=secret).score == 1.0


def einsum_matmul_backward(input1, input2, output_grad):
    if input1.ndim == 2 and input2.ndim == 2:
        return (
            np.einsum("ik,jk->ij", output_grad, input2),
            np.einsum("ik,ij->kj", input1, output_grad),
        )
    return solutions.matmul_backward(input1, input2, output_grad)


def loop_conv2d_backward(input, weight, bias, output_grad, stride=1, padding=0, dilation=1):
    """A loop over output positions, vectorized over batch and channels: a common, fair
    student solution."""
    (sh, sw), (ph, pw), (dh, dw) = (solutions._pair(v) for v in (stride, padding, dilation))
    x = np.pad(input, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    grad_x, grad_w = np.zeros_like(x), np.zeros_like(weight)
    kh, kw = weight.shape[2:]
    for i, j in np.ndindex(output_grad.shape[2:]):
        rows = slice(i * sh, i * sh + dh * (kh - 1) + 1, dh)
        cols = slice(j * sw, j * sw + dw * (kw - 1) + 1, dw)
        g = output_grad[:, :, i, j]
        grad_w += np.einsum("no,nckl->ockl", g, x[:, :, rows, cols])
        grad_x[:, :, rows, cols] += np.einsum("no,ockl->nckl", g, weight)
    grad_x = grad_x[:, :, ph : ph + input.shape[2], pw : pw + input.shape[3]]
    return grad_x, grad_w, None if bias is None else output_grad.sum(axis=(0, 2, 3))


def element_loop_conv2d_backward(input, weight, bias, output_grad, stride=1, padding=0, dilation=1):
    """A Python loop over every output element: right values, far from vectorized."""
    (sh, sw), (ph, pw), (dh, dw) = (solutions._pair(v) for v in (stride, padding, dilation))
    x = np.pad(input, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    grad_x, grad_w = np.zeros_like(x), np.zeros_like(weight)
    kh, kw = weight.shape[2:]
    for n, o, i, j in np.ndindex(output_grad.shape):
        rows = slice(i * sh, i * sh + dh * (kh - 1) + 1, dh)
        cols = slice(j * sw, j * sw + dw * (kw - 1) + 1, dw)
        grad_w[o] += output_grad[n, o, i, j] * x[n, :, rows, cols]
        grad_x[n, :, rows, cols] += output_grad[n, o, i, j] * weight[o]
    grad_x = grad_x[:, :, ph : ph + input.shape[2], pw : pw + input.shape[3]]
    return grad_x, grad_w, None if bias is None else output_grad.sum(axis=(0, 2, 3))


def test_a_loop_over_every_element_is_right_but_not_vectorized():
    result = grade("conv2d_backward", element_loop_conv2d_backward)
    failed = [(c.family, c.hint) for c in result.cases if not c.passed]
    assert failed == [("efficiency", "not-vectorized")]


def relu_at_zero_takes_slope_one(input, output_grad):
    return output_grad * (input >= 0)


def relu_at_zero_takes_half(input, output_grad):
    return output_grad * np.where(input == 0, 0.5, input > 0)


def abs_at_zero_takes_slope_one(input, output_grad):
    return output_grad * np.where(input >= 0, 1.0, -1.0)


def max_to_the_last_maximum(input, output_grad, dim=None, keepdim=False):
    """Ties: the whole gradient goes to the last tied element (a valid subgradient)."""
    if input.size == 0:
        return np.zeros_like(input)
    axes = solutions._axes(dim, input.ndim)
    reduced = list(range(input.ndim - len(axes), input.ndim))
    moved = np.moveaxis(input, axes, reduced)
    flat = moved.reshape(moved.shape[: moved.ndim - len(axes)] + (-1,))
    last = flat.shape[-1] - 1 - np.argmax(flat[..., ::-1], axis=-1)
    choice = np.zeros(flat.shape)
    np.put_along_axis(choice, last[..., None], 1.0, axis=-1)
    choice = np.moveaxis(choice.reshape(moved.shape), reduced, axes)
    return choice * solutions._keep(output_grad, input, dim, keepdim)


def maximum_ties_split_evenly(input1, input2, output_grad):
    share = np.where(input1 == input2, 0.5, input1 > input2)
    return (
        solutions.unbroadcast(output_grad * share, input1.shape),
        solutions.unbroadcast(output_grad * (1 - share), input2.shape),
    )


def float32_sin_backward(input, output_grad):
    return (np.cos(input) * output_grad).astype(input.dtype)


def sum_backward_returning_a_broadcast_view(input, output_grad, dim=None, keepdim=False):
    return np.broadcast_to(solutions._keep(output_grad, input, dim, keepdim), input.shape)


def mse_returning_a_list(input, target, output_grad):
    return list(solutions.mse_loss_backward(input, target, output_grad))


def zero_d_as_numpy_scalar(input, output_grad):
    return (
        np.float64(np.cos(input) * output_grad)
        if np.ndim(input) == 0
        else np.cos(input) * output_grad
    )


@pytest.mark.parametrize(
    "name, fn",
    [
        ("matmul_backward", einsum_matmul_backward),
        ("conv2d_backward", loop_conv2d_backward),
        ("relu_backward", relu_at_zero_takes_slope_one),
        ("relu_backward", relu_at_zero_takes_half),
        ("abs_backward", abs_at_zero_takes_slope_one),
        ("max_backward", max_to_the_last_maximum),
        ("maximum_backward", maximum_ties_split_evenly),
        ("sin_backward", float32_sin_backward),
        ("sum_backward", sum_backward_returning_a_broadcast_view),
        ("mse_loss_backward", mse_returning_a_list),
        ("sin_backward", zero_d_as_numpy_scalar),
    ],
)
def test_correct_alternatives_are_not_penalised(name, fn):
    result = grade(name, fn)
    assert [(c.name, c.hint, c.message) for c in result.cases if not c.passed] == []


def test_float32_inputs_keep_float32_and_pass():
    spec = next(op for op in all_ops() if op.name == "tanh_backward")
    float32_cases = [c for c in spec.cases() if c.family == "float32"]
    assert float32_cases and all(c.dtype == np.float32 for c in float32_cases)
    assert grade("tanh_backward", solutions.tanh_backward).score == 1.0
