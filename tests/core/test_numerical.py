"""The numerical engine against derivatives known in closed form."""

import numpy as np
import pytest

from gradcheck_kit import get_op, numerical_gradient
from gradcheck_kit.numerical import Leaf, directional_derivative, full_gradient, step_size


@pytest.mark.parametrize(
    "forward, derivative",
    [
        (np.sin, np.cos),
        (np.exp, np.exp),
        (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
        (lambda x: x**3, lambda x: 3 * x**2),
        (lambda x: np.log(1 + x**2), lambda x: 2 * x / (1 + x**2)),
    ],
)
def test_elementwise_gradients_match_closed_forms(forward, derivative, rng):
    x = rng.uniform(-2, 2, size=(4, 5))
    (grad,) = numerical_gradient(forward, x)
    np.testing.assert_allclose(grad, derivative(x), rtol=1e-8, atol=1e-9)


def test_output_grad_weights_the_vector_jacobian_product(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    upstream = rng.standard_normal((3, 2))
    grad_a, grad_b = numerical_gradient(np.matmul, a, b, output_grad=upstream)
    np.testing.assert_allclose(grad_a, upstream @ b.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(grad_b, a.T @ upstream, rtol=1e-8, atol=1e-10)


def test_broadcast_input_gets_its_own_shape(rng):
    x, y = rng.standard_normal((4, 3)), rng.standard_normal(3)
    grad_x, grad_y = numerical_gradient(lambda a, b: a * b, x, y)
    assert grad_y.shape == (3,)
    np.testing.assert_allclose(grad_y, x.sum(axis=0), rtol=1e-8)
    np.testing.assert_allclose(grad_x, np.broadcast_to(y, (4, 3)), rtol=1e-8)


def test_scalar_forward_and_zero_d_input():
    (grad,) = numerical_gradient(lambda x: x**2, np.array(3.0))
    assert grad.shape == ()
    assert abs(float(grad) - 6.0) < 1e-7


def test_directional_derivative_equals_gradient_dot_direction(rng):
    x = rng.uniform(-1, 1, size=(6,))
    direction = rng.standard_normal(6)
    arrays = {"x": x}

    def loss(values):
        return float(np.sum(np.sin(values["x"]) * values["x"]))

    expected = float(np.dot(np.sin(x) + x * np.cos(x), direction))
    got = directional_derivative(loss, arrays, [Leaf("x")], [direction], step_size([x]))
    assert abs(got - expected) < 1e-8 * max(1.0, abs(expected))


def test_full_gradient_of_list_inputs(rng):
    parts = [rng.standard_normal((2, 3)), rng.standard_normal((1, 3))]
    upstream = rng.standard_normal((3, 3))

    def loss(values):
        return float(np.sum(upstream * np.concatenate(values["inputs"])))

    grads = full_gradient(loss, {"inputs": parts}, [Leaf("inputs", 0), Leaf("inputs", 1)])
    np.testing.assert_allclose(grads["inputs[0]"], upstream[:2], rtol=1e-8)
    np.testing.assert_allclose(grads["inputs[1]"], upstream[2:], rtol=1e-8)


def test_step_follows_the_spread_not_the_offset():
    near_zero = step_size([np.linspace(-1, 1, 10)])
    near_800 = step_size([np.linspace(799, 801, 10)])
    assert near_800 == pytest.approx(near_zero)
    # wide inputs get a coarser step, up to 10x: beyond that they are spread out only to
    # keep ties apart (max, max-pool), and a coarse step would cross the gaps
    assert step_size([np.linspace(-10, 10, 10)]) > 5 * near_zero
    assert step_size([np.linspace(-1000, 1000, 10)]) == pytest.approx(10 * near_zero)


def test_reference_forwards_are_float64_even_for_float32_inputs(rng):
    spec = get_op("sin_backward")
    out = spec.evaluate({"input": rng.standard_normal(3).astype(np.float32)}, {})
    assert out.dtype == np.float64


def test_non_contiguous_inputs_give_the_same_gradient(rng):
    x = rng.uniform(-2, 2, size=(5, 4))
    view = np.ascontiguousarray(x.T).T  # same values, Fortran order
    assert not view.flags.c_contiguous
    (grad,) = numerical_gradient(np.sin, view)
    np.testing.assert_allclose(grad, np.cos(x), rtol=1e-8, atol=1e-9)
