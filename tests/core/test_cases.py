"""Case generation: stable, named, split into public and hidden, covering every family."""

import numpy as np
import pytest

from gradcheck_kit import all_ops, get_op


def _canonical(value):
    """A comparable form of plain case data: arrays by dtype, shape and bytes."""
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_canonical(v) for v in value)
    return value


def _fingerprint(cases):
    return [
        (c.name, _canonical(c.arrays), _canonical(c.params), _canonical(c.output_grad))
        for c in cases
    ]


@pytest.mark.parametrize("op", all_ops(), ids=lambda op: op.name)
def test_cases_are_deterministic_and_uniquely_named(op):
    first, again = op.cases(), op.cases()
    assert _fingerprint(first) == _fingerprint(again)
    names = [c.name for c in first]
    assert len(names) == len(set(names))
    assert not any(c.hidden for c in first)


def test_hidden_cases_depend_on_the_secret():
    op = get_op("mul_backward")
    one, same, other = (op.cases(hidden=True, secret=s) for s in ("s1", "s1", "s2"))
    assert _fingerprint(one) == _fingerprint(same)
    assert _fingerprint(one) != _fingerprint(other)
    assert all(c.hidden for c in one)
    assert len(one) > len(op.cases())  # more draws than the public set


def test_every_op_has_float32_view_and_upstream_families():
    for op in all_ops():
        if not op.assignment[:2].isdigit() or op.assignment >= "05":
            continue
        families = {c.family for c in op.cases()}
        assert {"float32", "upstream"} <= families, op.name
        assert "views" in families or op.name in {"mse_loss_backward"}, op.name


def test_views_family_really_is_non_contiguous():
    views = [c for c in get_op("matmul_backward").cases() if c.family == "views"]
    assert views and all(not a.flags.c_contiguous for a in views[0].arrays.values())


def test_upstream_family_has_a_zero_and_a_scaled_output_grad():
    upstream = [c for c in get_op("exp_backward").cases() if c.family == "upstream"]
    assert any(not np.any(c.output_grad) for c in upstream)
    assert any(np.abs(c.output_grad).max() > 100 for c in upstream)


def test_ties_and_zeros_are_really_there():
    ties = [c for c in get_op("max_backward").cases() if c.family == "ties"]
    assert ties
    for case in ties:
        x, dim = case.arrays["input"], case.params["dim"]
        top = np.max(x, axis=dim, keepdims=True)
        assert np.any(np.sum(x == top, axis=dim) > 1)
    zeros = [c for c in get_op("prod_backward").cases() if c.family == "zeros"]
    assert zeros and all(np.any(c.arrays["input"] == 0) for c in zeros)
    relu = [c for c in get_op("relu_backward").cases() if c.family == "ties"]
    assert relu and all(np.any(c.arrays["input"] == 0) for c in relu)


def test_smooth_cases_stay_away_from_kinks():
    for name in ("relu_backward", "abs_backward"):
        for case in get_op(name).cases():
            if case.family != "ties" and case.arrays["input"].size:
                assert np.abs(case.arrays["input"]).min() >= 0.05


def test_degenerate_shapes_are_covered():
    names = [c.name for c in get_op("sum_backward").cases()]
    assert "shape (), dim=None" in names
    assert any("(0,4)" in n for n in names) and any("(3,1,4)" in n for n in names)
    dims = {repr(c.params["dim"]) for c in get_op("sum_backward").cases()}
    assert {"None", "1", "-1", "(0, 2)"} <= dims


def test_cases_carry_inputs_only_never_expected_answers():
    case = get_op("sin_backward").cases()[0]
    assert set(vars(case)) == {
        "op",
        "name",
        "family",
        "arrays",
        "params",
        "output_grad",
        "hidden",
        "at_kink",
        "has_zeros",
        "weight",
        "tags",
        "time_bound",
    }


@pytest.mark.parametrize("op", all_ops(), ids=lambda op: op.name)
def test_public_and_hidden_case_names_never_collide(op):
    names = [c.name for c in op.cases() + op.cases(hidden=True, secret="x")]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", ["prod_backward", "cumprod_backward"])
def test_zeros_family_has_a_lone_zero_and_a_slice_with_two(name):
    zero_counts = set()
    for case in get_op(name).cases():
        if case.family == "zeros":
            x, dim = case.arrays["input"], case.params["dim"]
            per_slice = np.sum(x == 0, axis=dim)
            zero_counts |= {int(n) for n in np.ravel(per_slice) if n}
    assert {1, 2} <= zero_counts
