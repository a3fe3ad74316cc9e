"""Test-only correct backward functions for every op of notebooks 01 to 04.

Each function is self-contained (it uses only ``np`` and the helpers defined in this
file) so that tests can also paste their source into notebook cells.
"""

import numpy as np


def unbroadcast(grad, shape):
    lead = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(lead))) if lead else grad
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad


def neg_backward(input, output_grad):
    return -output_grad


def exp_backward(input, output_grad):
    return np.exp(input) * output_grad


def log_backward(input, output_grad):
    return output_grad / input


def sin_backward(input, output_grad):
    return np.cos(input) * output_grad


def cos_backward(input, output_grad):
    return -np.sin(input) * output_grad


def tanh_backward(input, output_grad):
    return (1 - np.tanh(input) ** 2) * output_grad


def sigmoid_backward(input, output_grad):
    s = 1 / (1 + np.exp(-input))
    return s * (1 - s) * output_grad


def relu_backward(input, output_grad):
    return output_grad * (input > 0)


def abs_backward(input, output_grad):
    return output_grad * np.sign(input)


def add_backward(input1, input2, output_grad):
    return unbroadcast(output_grad, input1.shape), unbroadcast(output_grad, input2.shape)


def sub_backward(input1, input2, output_grad):
    return unbroadcast(output_grad, input1.shape), unbroadcast(-output_grad, input2.shape)


def mul_backward(input1, input2, output_grad):
    return (
        unbroadcast(output_grad * input2, input1.shape),
        unbroadcast(output_grad * input1, input2.shape),
    )


def div_backward(input1, input2, output_grad):
    return (
        unbroadcast(output_grad / input2, input1.shape),
        unbroadcast(-output_grad * input1 / input2**2, input2.shape),
    )


def pow_backward(input1, input2, output_grad):
    out = input1**input2
    return (
        unbroadcast(output_grad * input2 * input1 ** (input2 - 1), input1.shape),
        unbroadcast(output_grad * out * np.log(input1), input2.shape),
    )


def maximum_backward(input1, input2, output_grad):
    first = input1 >= input2  # ties go to the first input: a valid subgradient
    return (
        unbroadcast(output_grad * first, input1.shape),
        unbroadcast(output_grad * ~first, input2.shape),
    )


def where_backward(condition, input1, input2, output_grad):
    return (
        unbroadcast(np.where(condition, output_grad, 0), input1.shape),
        unbroadcast(np.where(condition, 0, output_grad), input2.shape),
    )


def _axes(dim, ndim):
    if dim is None:
        return tuple(range(ndim))
    dims = dim if isinstance(dim, tuple) else (dim,)
    return tuple(d % ndim for d in dims)


def _keep(output_grad, input, dim, keepdim):
    """output_grad with the reduced axes back as size-1 axes."""
    if keepdim or input.ndim == 0:
        return output_grad
    return np.expand_dims(output_grad, _axes(dim, input.ndim))


def sum_backward(input, output_grad, dim=None, keepdim=False):
    return np.broadcast_to(_keep(output_grad, input, dim, keepdim), input.shape).copy()


def mean_backward(input, output_grad, dim=None, keepdim=False):
    count = np.prod([input.shape[a] for a in _axes(dim, input.ndim)])
    return sum_backward(input, output_grad, dim, keepdim) / count


def prod_backward(input, output_grad, dim=None, keepdim=False):
    axes = _axes(dim, input.ndim)
    g = _keep(output_grad, input, dim, keepdim)
    if input.ndim == 0:
        return g * np.ones_like(input)
    if input.size == 0:
        return np.zeros_like(input)
    # product of the other elements: move the reduced axes last, flatten them, and use
    # prefix and suffix products so that zeros need no division
    kept = [a for a in range(input.ndim) if a not in axes]
    moved = np.transpose(input, kept + list(axes))
    flat = moved.reshape(moved.shape[: len(kept)] + (-1,))
    ones = np.ones(flat.shape[:-1] + (1,), dtype=flat.dtype)
    before = np.cumprod(np.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
    after = np.cumprod(np.concatenate([ones, flat[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    others = (before * after).reshape(moved.shape)
    others = np.transpose(others, np.argsort(kept + list(axes)))
    return others * g


def max_backward(input, output_grad, dim=None, keepdim=False):
    axes = _axes(dim, input.ndim)
    top = np.max(input, axis=axes, keepdims=True)
    mask = input == top
    count = mask.sum(axis=axes, keepdims=True)
    return mask * _keep(output_grad, input, dim, keepdim) / count


def var_backward(input, output_grad, dim=None, keepdim=False, correction=1):
    axes = _axes(dim, input.ndim)
    count = np.prod([input.shape[a] for a in axes])
    centered = input - input.mean(axis=axes, keepdims=True)
    return 2 * centered / (count - correction) * _keep(output_grad, input, dim, keepdim)


def reshape_backward(input, output_grad):
    return output_grad.reshape(input.shape)


def permute_backward(input, output_grad, dims):
    return np.transpose(output_grad, np.argsort(dims))


def expand_backward(input, output_grad):
    return unbroadcast(output_grad, input.shape)


def getitem_backward(input, output_grad, index):
    grad = np.zeros_like(input)
    np.add.at(grad, index, output_grad)
    return grad


def cat_backward(inputs, output_grad, dim=0):
    sizes = np.cumsum([x.shape[dim] for x in inputs])[:-1]
    return np.split(output_grad, sizes, axis=dim)


def cumsum_backward(input, output_grad, dim):
    return np.flip(np.cumsum(np.flip(output_grad, dim), axis=dim), dim)


def cumprod_backward(input, output_grad, dim):
    # d out_j / d x_i = prod_{k <= j, k != i} x_k for j >= i; built without division
    x = np.moveaxis(input, dim, -1)
    g = np.moveaxis(output_grad, dim, -1)
    n = x.shape[-1]
    grad = np.zeros_like(x)
    for i in range(n):
        others = x.copy()
        others[..., i] = 1
        partial = np.cumprod(others, axis=-1)[..., i:]
        grad[..., i] = np.sum(partial * g[..., i:], axis=-1)
    return np.moveaxis(grad, -1, dim)


def matmul_backward(input1, input2, output_grad):
    a = input1[None, :] if input1.ndim == 1 else input1
    b = input2[:, None] if input2.ndim == 1 else input2
    g = output_grad
    if input2.ndim == 1:
        g = g[..., None]
    if input1.ndim == 1:
        g = g[..., None, :]
    grad_a = g @ np.swapaxes(b, -1, -2)
    grad_b = np.swapaxes(a, -1, -2) @ g
    grad_a = unbroadcast(grad_a, a.shape).reshape(input1.shape)
    grad_b = unbroadcast(grad_b, b.shape).reshape(input2.shape)
    return grad_a, grad_b


def linear_backward(input, weight, bias, output_grad):
    x = input.reshape(-1, input.shape[-1])
    g = output_grad.reshape(-1, weight.shape[0])
    grad_bias = None if bias is None else g.sum(axis=0)
    return (output_grad @ weight).reshape(input.shape), g.T @ x, grad_bias


def softmax_backward(input, output_grad, dim=-1):
    e = np.exp(input - input.max(axis=dim, keepdims=True))
    s = e / e.sum(axis=dim, keepdims=True)
    return s * (output_grad - np.sum(output_grad * s, axis=dim, keepdims=True))


def log_softmax_backward(input, output_grad, dim=-1):
    e = np.exp(input - input.max(axis=dim, keepdims=True))
    s = e / e.sum(axis=dim, keepdims=True)
    return output_grad - s * np.sum(output_grad, axis=dim, keepdims=True)


def cross_entropy_backward(input, target, output_grad):
    e = np.exp(input - input.max(axis=1, keepdims=True))
    s = e / e.sum(axis=1, keepdims=True)
    s[np.arange(len(target)), target] -= 1
    return s * output_grad / len(target)


def mse_loss_backward(input, target, output_grad):
    grad = 2 * (input - target) / max(input.size, 1) * output_grad
    return grad, -grad


def _pair(v):
    return (v, v) if np.ndim(v) == 0 else tuple(v)


def conv2d_backward(input, weight, bias, output_grad, stride=1, padding=0, dilation=1):
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    x = np.pad(input, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    grad_x = np.zeros_like(x)
    grad_w = np.zeros_like(weight)
    kh, kw = weight.shape[2:]
    out_h, out_w = output_grad.shape[2:]
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (out_h - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (out_w - 1) + 1, sw)
            grad_w[:, :, i, j] = np.einsum("nohw,nchw->oc", output_grad, x[:, :, rows, cols])
            grad_x[:, :, rows, cols] += np.einsum("nohw,oc->nchw", output_grad, weight[:, :, i, j])
    grad_x = grad_x[:, :, ph : ph + input.shape[2], pw : pw + input.shape[3]]
    grad_b = None if bias is None else output_grad.sum(axis=(0, 2, 3))
    return grad_x, grad_w, grad_b


def _pool_positions(input, kernel_size, stride):
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    out_h = (input.shape[2] - kh) // sh + 1
    out_w = (input.shape[3] - kw) // sw + 1
    return kh, kw, sh, sw, out_h, out_w


def max_pool2d_backward(input, output_grad, kernel_size, stride=None):
    kh, kw, sh, sw, out_h, out_w = _pool_positions(input, kernel_size, stride)
    grad = np.zeros_like(input)
    for i in range(out_h):
        for j in range(out_w):
            window = input[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
            flat = window.reshape(window.shape[:2] + (-1,))
            first = flat.argmax(axis=-1)  # the first maximum takes the whole gradient
            r, c = np.unravel_index(first, (kh, kw))
            n, ch = np.indices(first.shape)
            np.add.at(grad, (n, ch, i * sh + r, j * sw + c), output_grad[:, :, i, j])
    return grad


def avg_pool2d_backward(input, output_grad, kernel_size, stride=None):
    kh, kw, sh, sw, out_h, out_w = _pool_positions(input, kernel_size, stride)
    grad = np.zeros_like(input)
    for i in range(out_h):
        for j in range(out_w):
            share = output_grad[:, :, i, j][:, :, None, None] / (kh * kw)
            grad[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw] += share
    return grad


def batch_norm_backward(input, weight, bias, output_grad, eps=1e-5):
    axes = (0,) + tuple(range(2, input.ndim))
    shape = (1, -1) + (1,) * (input.ndim - 2)
    mean = input.mean(axis=axes, keepdims=True)
    inv_std = 1 / np.sqrt(input.var(axis=axes, keepdims=True) + eps)
    x_hat = (input - mean) * inv_std
    grad_weight = np.sum(output_grad * x_hat, axis=axes)
    grad_bias = np.sum(output_grad, axis=axes)
    g = output_grad * weight.reshape(shape)
    grad_input = inv_std * (
        g - g.mean(axis=axes, keepdims=True) - x_hat * np.mean(g * x_hat, axis=axes, keepdims=True)
    )
    return grad_input, grad_weight, grad_bias
