"""Property tests: the broadcasting case generator and unbroadcasting."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradcheck_kit
from gradcheck_kit import get_op
from gradcheck_kit._broadcast import unbroadcast
from gradcheck_kit.layouts import (
    BROADCAST_PAIRS,
    broadcast_layouts,
    random_broadcast_partner,
    shape_text,
)

shapes = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)


@settings(max_examples=200, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_partner_shapes_broadcast_back_to_the_shape(shape, seed):
    partner = random_broadcast_partner(np.random.default_rng(seed), shape)
    assert np.broadcast_shapes(shape, partner) == shape
    assert len(partner) <= len(shape)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), count=st.sampled_from([2, 3]))
def test_generated_layouts_always_broadcast_and_name_their_shapes(seed, count):
    layouts = broadcast_layouts(count)(np.random.default_rng(seed), True)
    for _family, label, shapes_by_input, _params in layouts:
        in_shapes = list(shapes_by_input.values())
        np.broadcast_shapes(*in_shapes)  # raises if not broadcastable
        for shape in in_shapes:
            assert shape_text(shape) in label


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_unbroadcast_is_the_adjoint_of_broadcast_to(data):
    out_shape = data.draw(shapes)
    shape = random_broadcast_partner(
        np.random.default_rng(data.draw(st.integers(0, 99))), out_shape
    )
    x = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-10, 10)))
    grad = data.draw(hnp.arrays(np.float64, out_shape, elements=st.floats(-10, 10)))
    summed = unbroadcast(grad, shape)
    assert summed.shape == shape
    # <broadcast_to(x), grad> == <x, unbroadcast(grad)>: unbroadcast is broadcasting's adjoint
    left = float(np.sum(np.broadcast_to(x, out_shape) * grad))
    right = float(np.sum(x * summed))
    assert abs(left - right) <= 1e-9 * (1 + np.sum(np.abs(grad)) * (1 + np.abs(x).max(initial=0)))


def test_every_named_broadcast_pattern_is_tried():
    names = [c.name for c in get_op("add_backward").cases()]
    for expected in [
        "broadcast (4,3) with (3,)",
        "broadcast (1,5,6) with (2,1,6)",
        "broadcast (3,4,5,6,7) with (6,7)",
        "broadcast (3,4) with ()",
        "shapes () with ()",
    ]:
        assert expected in names
    assert len(BROADCAST_PAIRS) >= 10


def test_unbroadcast_rejects_shapes_that_do_not_broadcast():
    import pytest

    with pytest.raises(ValueError):
        unbroadcast(np.ones((3, 4)), (2, 4))
    with pytest.raises(ValueError):
        unbroadcast(np.ones(4), (2, 4))


def test_unbroadcast_is_not_offered_to_students():
    assert not hasattr(gradcheck_kit, "unbroadcast")
    assert "unbroadcast" not in gradcheck_kit.__all__
