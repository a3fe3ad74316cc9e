"""Deliberate, realistic bugs: each is caught on the right op with the right hint."""

from collections import Counter

import numpy as np
import pytest

from . import solutions as s
from .conftest import grade


def _keep(g, x, dim, keepdim):
    return s._keep(g, x, dim, keepdim)


# --- each bug is what a student plausibly writes -------------------------------------


def add_forgets_to_unbroadcast(input1, input2, output_grad):
    return output_grad, output_grad


def add_always_sums_axis_zero(input1, input2, output_grad):
    g = output_grad.sum(axis=0) if output_grad.ndim else output_grad
    return g, g


def mul_forgets_to_unbroadcast(input1, input2, output_grad):
    return output_grad * input2, output_grad * input1


def unbroadcast_drops_size_one_axes(grad, shape):
    lead = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(lead))) if lead else grad
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes) if axes else grad  # keepdims forgotten


def sin_backward_negated(input, output_grad):
    return -np.cos(input) * output_grad


def sin_backward_ignores_upstream(input, output_grad):
    return np.cos(input)


def cos_backward_sign(input, output_grad):
    return np.sin(input) * output_grad


def exp_backward_ignores_upstream(input, output_grad):
    return np.exp(input)


def log_backward_sign(input, output_grad):
    return -output_grad / input


def tanh_backward_wrong_formula(input, output_grad):
    return (1 - np.tanh(input)) * output_grad


def sigmoid_backward_ignores_upstream(input, output_grad):
    sig = 1 / (1 + np.exp(-input))
    return sig * (1 - sig)


def relu_backward_in_place(input, output_grad):
    output_grad[input <= 0] = 0
    return output_grad


def relu_backward_ignores_upstream(input, output_grad):
    return (input > 0).astype(input.dtype)


def sub_backward_forgets_minus(input1, input2, output_grad):
    return s.unbroadcast(output_grad, input1.shape), s.unbroadcast(output_grad, input2.shape)


def div_backward_forgets_minus(input1, input2, output_grad):
    g1, g2 = s.div_backward(input1, input2, output_grad)
    return g1, -g2


def pow_backward_forgets_log(input1, input2, output_grad):
    g1, _ = s.pow_backward(input1, input2, output_grad)
    return g1, s.unbroadcast(output_grad * input1**input2, input2.shape)


def maximum_ties_to_both(input1, input2, output_grad):
    return (
        s.unbroadcast(output_grad * (input1 >= input2), input1.shape),
        s.unbroadcast(output_grad * (input2 >= input1), input2.shape),
    )


def where_forgets_to_unbroadcast(condition, input1, input2, output_grad):
    return np.where(condition, output_grad, 0), np.where(condition, 0, output_grad)


def mean_backward_forgets_to_divide(input, output_grad, dim=None, keepdim=False):
    return s.sum_backward(input, output_grad, dim, keepdim)


def sum_backward_ignores_keepdim(input, output_grad, dim=None, keepdim=False):
    return np.broadcast_to(output_grad, input.shape).copy()


def var_backward_ignores_correction(input, output_grad, dim=None, keepdim=False, correction=1):
    return s.var_backward(input, output_grad, dim, keepdim, correction=0)


def var_backward_forgets_the_two(input, output_grad, dim=None, keepdim=False, correction=1):
    return s.var_backward(input, output_grad, dim, keepdim, correction) / 2


def max_backward_all_ties_get_everything(input, output_grad, dim=None, keepdim=False):
    top = np.max(input, axis=dim, keepdims=True)
    return (input == top) * _keep(output_grad, input, dim, keepdim)


def prod_backward_divides(input, output_grad, dim=None, keepdim=False):
    with np.errstate(divide="ignore", invalid="ignore"):
        whole = np.prod(input, axis=dim, keepdims=True)
        return whole / input * _keep(output_grad, input, dim, keepdim)


def prod_backward_zero_where_zero(input, output_grad, dim=None, keepdim=False):
    with np.errstate(divide="ignore", invalid="ignore"):
        whole = np.prod(input, axis=dim, keepdims=True)
        others = np.where(input == 0, 0.0, whole / np.where(input == 0, 1.0, input))
    return others * _keep(output_grad, input, dim, keepdim)


def permute_backward_same_permutation(input, output_grad, dims):
    return np.transpose(output_grad, dims)


def expand_backward_returns_output_grad(input, output_grad):
    return output_grad


def cumsum_backward_forward_scan(input, output_grad, dim):
    return np.cumsum(output_grad, axis=dim)


def getitem_backward_assigns_instead_of_adding(input, output_grad, index):
    grad = np.zeros_like(input)
    grad[index] = output_grad
    return grad


def matmul_backward_forgets_transposes(input1, input2, output_grad):
    if input1.ndim == 2 and input2.ndim == 2:
        return output_grad @ input2, input1 @ output_grad
    return s.matmul_backward(input1, input2, output_grad)


def matmul_backward_keeps_batch_axes(input1, input2, output_grad):
    a = input1[None, :] if input1.ndim == 1 else input1
    b = input2[:, None] if input2.ndim == 1 else input2
    g = output_grad
    if input2.ndim == 1:
        g = g[..., None]
    if input1.ndim == 1:
        g = g[..., None, :]
    grad_a, grad_b = g @ np.swapaxes(b, -1, -2), np.swapaxes(a, -1, -2) @ g
    return (
        grad_a.reshape(input1.shape) if grad_a.size == input1.size else grad_a,
        grad_b.reshape(input2.shape) if grad_b.size == input2.size else grad_b,
    )


def linear_backward_transposed_weight(input, weight, bias, output_grad):
    grad_input, grad_weight, grad_bias = s.linear_backward(input, weight, bias, output_grad)
    x = input.reshape(-1, input.shape[-1])
    return grad_input, x.T @ output_grad.reshape(-1, weight.shape[0]), grad_bias


def linear_backward_bias_not_summed(input, weight, bias, output_grad):
    grad_input, grad_weight, grad_bias = s.linear_backward(input, weight, bias, output_grad)
    return grad_input, grad_weight, None if bias is None else output_grad


def softmax_backward_diagonal_only(input, output_grad, dim=-1):
    e = np.exp(input - input.max(axis=dim, keepdims=True))
    sm = e / e.sum(axis=dim, keepdims=True)
    return sm * (1 - sm) * output_grad


def softmax_backward_unstable(input, output_grad, dim=-1):
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(input)
        sm = e / e.sum(axis=dim, keepdims=True)
    return sm * (output_grad - np.sum(output_grad * sm, axis=dim, keepdims=True))


def cross_entropy_forgets_the_mean(input, target, output_grad):
    return s.cross_entropy_backward(input, target, output_grad) * len(target)


def cross_entropy_ignores_upstream(input, target, output_grad):
    return s.cross_entropy_backward(input, target, 1.0)


def mse_target_gradient_sign(input, target, output_grad):
    grad, _ = s.mse_loss_backward(input, target, output_grad)
    return grad, grad


def avg_pool_forgets_window_size(input, output_grad, kernel_size, stride=None):
    return s.avg_pool2d_backward(input, output_grad, kernel_size, stride) * np.prod(
        s._pair(kernel_size)
    )


def max_pool_ties_to_all(input, output_grad, kernel_size, stride=None):
    kh, kw, sh, sw, out_h, out_w = s._pool_positions(input, kernel_size, stride)
    grad = np.zeros_like(input)
    for i in range(out_h):
        for j in range(out_w):
            window = input[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
            top = window.max(axis=(2, 3), keepdims=True)
            grad[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw] += (window == top) * output_grad[
                :, :, i, j
            ][:, :, None, None]
    return grad


def conv2d_grad_weight_sign(input, weight, bias, output_grad, stride=1, padding=0, dilation=1):
    gx, gw, gb = s.conv2d_backward(input, weight, bias, output_grad, stride, padding, dilation)
    return gx, -gw, gb


def batch_norm_forgets_mean_terms(input, weight, bias, output_grad, eps=1e-5):
    _, grad_weight, grad_bias = s.batch_norm_backward(input, weight, bias, output_grad, eps)
    axes = (0,) + tuple(range(2, input.ndim))
    shape = (1, -1) + (1,) * (input.ndim - 2)
    inv_std = 1 / np.sqrt(input.var(axis=axes, keepdims=True) + eps)
    return output_grad * weight.reshape(shape) * inv_std, grad_weight, grad_bias


def cat_backward_splits_along_axis_zero(inputs, output_grad, dim=0):
    sizes = np.cumsum([x.shape[0] for x in inputs])[:-1]
    return np.split(output_grad, sizes, axis=0)


def reshape_backward_returns_output_grad(input, output_grad):
    return output_grad


def exp_backward_python_loop(input, output_grad):
    grad = np.zeros(input.shape, dtype=input.dtype)
    for index in np.ndindex(input.shape):
        grad[index] = np.exp(input[index]) * output_grad[index]
    return grad


def sum_backward_numerically(input, output_grad, dim=None, keepdim=False):
    """Central differences of the forward inside the backward: right, and far too slow."""

    def loss(x):
        return np.sum(output_grad * np.sum(x, axis=dim, keepdims=keepdim))

    grad = np.zeros(input.shape)
    point = np.array(input, dtype=np.float64)
    for index in np.ndindex(input.shape):
        original = point[index]
        point[index] = original + 0.5
        up = loss(point)
        point[index] = original - 0.5
        grad[index] = up - loss(point)  # the sum is linear: any step is exact
        point[index] = original
    return grad.astype(input.dtype)


BUGS = [
    ("add_backward", add_forgets_to_unbroadcast, "unbroadcast"),
    ("add_backward", add_always_sums_axis_zero, "unbroadcast"),
    ("mul_backward", mul_forgets_to_unbroadcast, "unbroadcast"),
    ("unbroadcast", unbroadcast_drops_size_one_axes, "unbroadcast"),
    ("sin_backward", sin_backward_negated, "sign"),
    ("sin_backward", sin_backward_ignores_upstream, "upstream"),
    ("cos_backward", cos_backward_sign, "sign"),
    ("exp_backward", exp_backward_ignores_upstream, "upstream"),
    ("log_backward", log_backward_sign, "sign"),
    ("tanh_backward", tanh_backward_wrong_formula, "wrong-value"),
    ("sigmoid_backward", sigmoid_backward_ignores_upstream, "upstream"),
    ("relu_backward", relu_backward_in_place, "mutated-input"),
    ("relu_backward", relu_backward_ignores_upstream, "upstream"),
    ("sub_backward", sub_backward_forgets_minus, "sign"),
    ("div_backward", div_backward_forgets_minus, "sign"),
    ("pow_backward", pow_backward_forgets_log, "wrong-value"),
    ("maximum_backward", maximum_ties_to_both, "ties"),
    ("where_backward", where_forgets_to_unbroadcast, "unbroadcast"),
    ("mean_backward", mean_backward_forgets_to_divide, "scale"),
    ("sum_backward", sum_backward_ignores_keepdim, "exception"),
    ("var_backward", var_backward_ignores_correction, "scale"),
    ("var_backward", var_backward_forgets_the_two, "scale"),
    ("max_backward", max_backward_all_ties_get_everything, "ties"),
    ("prod_backward", prod_backward_divides, "zeros"),
    ("prod_backward", prod_backward_zero_where_zero, "zeros"),
    ("permute_backward", permute_backward_same_permutation, "transpose"),
    ("expand_backward", expand_backward_returns_output_grad, "unbroadcast"),
    ("cumsum_backward", cumsum_backward_forward_scan, "wrong-value"),
    ("getitem_backward", getitem_backward_assigns_instead_of_adding, "wrong-value"),
    ("matmul_backward", matmul_backward_forgets_transposes, "transpose"),
    ("matmul_backward", matmul_backward_keeps_batch_axes, "unbroadcast"),
    ("linear_backward", linear_backward_transposed_weight, "transpose"),
    ("linear_backward", linear_backward_bias_not_summed, "unbroadcast"),
    ("softmax_backward", softmax_backward_diagonal_only, "wrong-value"),
    ("softmax_backward", softmax_backward_unstable, "nonfinite"),
    ("cross_entropy_backward", cross_entropy_forgets_the_mean, "scale"),
    ("cross_entropy_backward", cross_entropy_ignores_upstream, "upstream"),
    ("mse_loss_backward", mse_target_gradient_sign, "sign"),
    ("avg_pool2d_backward", avg_pool_forgets_window_size, "scale"),
    ("max_pool2d_backward", max_pool_ties_to_all, "ties"),
    ("conv2d_backward", conv2d_grad_weight_sign, "sign"),
    ("batch_norm_backward", batch_norm_forgets_mean_terms, "wrong-value"),
    ("cat_backward", cat_backward_splits_along_axis_zero, "shape"),
    ("reshape_backward", reshape_backward_returns_output_grad, "shape"),
    ("exp_backward", exp_backward_python_loop, "not-vectorized"),
    ("sum_backward", sum_backward_numerically, "not-vectorized"),
]


@pytest.mark.parametrize("name, bug, hint", BUGS, ids=[bug.__name__ for _, bug, _ in BUGS])
def test_bug_is_caught_on_its_op_with_the_right_hint(name, bug, hint):
    result = grade(name, bug)
    failed = [c for c in result.cases if not c.passed]
    assert failed, f"{bug.__name__} was not caught"
    assert result.score < 1.0
    hints = Counter(c.hint for c in failed)
    if bug is matmul_backward_forgets_transposes:
        # on non-square matrices the same slip raises inside matmul; only square ones
        # get far enough to be recognised as transposed
        assert hints["transpose"] and set(hints) == {"transpose", "exception"}, hints
    else:
        assert hints.most_common(1)[0][0] == hint, hints


def test_the_catalogue_is_large_and_covers_every_hint_code():
    from gradcheck_kit.hints import HINT_CODES

    assert len(BUGS) >= 30
    covered = {hint for _, _, hint in BUGS}
    # ``exception`` and ``mutated-input`` come from how a call fails, not from values
    assert set(HINT_CODES) - covered == set()


def test_hints_say_which_input_and_what_to_do():
    result = grade("sub_backward", sub_backward_forgets_minus)
    message = next(c.message for c in result.cases if not c.passed)
    assert message.startswith("gradient of input2:") and "sign" in message
    mean = grade("mean_backward", mean_backward_forgets_to_divide)
    assert any("60 times" in c.message for c in mean.cases)  # (3,4,5) summed over all axes


def test_exception_hint_shows_the_students_own_frames():
    def sum_backward(input, output_grad, dim=None, keepdim=False):
        return undefined_helper(input)  # noqa: F821

    result = grade("sum_backward", sum_backward)
    message = result.cases[0].message
    assert result.cases[0].hint == "exception"
    assert message.startswith("NameError") and "in sum_backward" in message
    assert "gradcheck_kit" not in message
