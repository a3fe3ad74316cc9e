"""Whatever a student's function returns, each case gets a clean verdict.

In process: the worker's encoding, the wire format and the grader's judging
(``autograder.grade._judge``) on arbitrary values, the library's ``spec.judge`` on raw
values (what ``check()`` does in a notebook), and the channel's decoder on garbage.
End to end: functions returning odd values and raising odd exceptions, graded by the
real command line, single and batch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gradcheck_kit
from autograder import channel
from autograder.grade import _judge
from gradcheck_kit.verdict import CaseResult

from .conftest import E2E, FUZZ
from .helpers import assert_valid_report, notebook_dict, run_cli
from .strategies import json_values, student_values

OPS = [gradcheck_kit.get_op(n) for n in ("neg_backward", "add_backward", "cat_backward")]
CASES = [(op, case) for op in OPS for case in op.cases()]


def first_shape(case) -> tuple:
    first = next(iter(case.arrays.values()))
    return np.shape(first[0] if isinstance(first, list) else first)


def over_the_wire(value):
    """What the worker sends for ``value`` and what the grader reads back."""
    try:
        tree, buffers = channel.encode(value)
    except BaseException as error:  # the worker turns this into an "unsupported" marker
        tree, buffers = {"t": "unsupported", "what": f"unencodable: {error}"[:200]}, []
    data = channel.frame({"status": "ran", "results": [{"value": tree}]}, buffers)
    header, received = channel.read_message(io.BytesIO(data))
    return header["results"][0], received


def assert_clean_verdict(result):
    assert isinstance(result, CaseResult)
    assert isinstance(result.passed, bool) and isinstance(result.message, str)
    result.message.encode("utf-8")  # writable to any report
    if not result.passed:
        assert result.hint


@FUZZ
@given(st.sampled_from(CASES), st.data())
def test_grader_judges_any_returned_value(op_case, data):
    op, case = op_case
    shape = first_shape(case)
    value = data.draw(student_values(shape))
    item, buffers = over_the_wire(value)
    result = _judge(op, case, item, buffers, "secret")
    assert_clean_verdict(result)


@FUZZ
@given(st.sampled_from(CASES), st.data())
def test_library_judges_any_raw_value(op_case, data):
    # check() in a notebook judges the raw value, without the wire format in between
    op, case = op_case
    shape = first_shape(case)
    value = data.draw(student_values(shape))
    assert_clean_verdict(op.judge(case, value))


@FUZZ
@given(st.sampled_from([c for c in CASES if c[0].name == "neg_backward"]), st.data())
def test_right_answer_passes_in_every_accepted_form(op_case, data):
    op, case = op_case
    right = -np.asarray(case.output_grad, dtype=np.float64)
    form = data.draw(st.sampled_from(["plain", "tuple", "readonly", "fortran", "view"]))
    value = {
        "plain": right,
        "tuple": (right,),
        "readonly": np.require(right, requirements="C").copy(),
        "fortran": np.asfortranarray(right) if right.ndim else right,  # it makes 0-d 1-d
        "view": right[...],
    }[form]
    if form == "readonly":
        value.flags.writeable = False
    item, buffers = over_the_wire(value)
    result = _judge(op, case, item, buffers, "secret")
    assert result.passed, (form, result.hint, result.message)


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(a, np.generic):
        return (
            type(a) is type(b)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        )
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


wire_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=10),
        st.sampled_from(
            [np.float64, np.float32, np.float16, np.int8, np.int64, np.uint16, np.bool_]
        ).flatmap(
            lambda t: st.lists(st.integers(0, 100), max_size=12).map(
                lambda xs: np.array(xs, dtype=t)
            )
        ),
        st.just(np.float32(1.5)),
        st.just(np.zeros((0, 3))),
        st.just(np.array(2.0)),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=4), inner, max_size=3),
    ),
    max_leaves=10,
)


@FUZZ
@given(wire_values)
def test_channel_round_trip_keeps_types_dtypes_and_values(value):
    item, buffers = over_the_wire(value)
    assert _same(value, channel.decode(item["value"], buffers))


@FUZZ
@given(json_values, st.lists(st.binary(max_size=16), max_size=3))
def test_decoding_garbage_raises_only_channel_errors(tree, buffers):
    try:
        channel.decode(tree, buffers)
    except channel.ChannelError:
        pass


nd_headers = st.fixed_dictionaries(
    {
        "t": st.just("nd"),
        "dtype": st.one_of(
            st.sampled_from(["<f8", "|u1", "<i4", "<f8\n", "|O", "<c16"]), st.text(max_size=5)
        ),
        "shape": st.lists(st.one_of(st.integers(-2, 5), st.just(10**30)), max_size=4),
        "i": st.integers(-1, 2),
    },
    optional={"view": st.booleans(), "scalar": st.booleans()},
)
tagged = st.one_of(
    nd_headers,
    st.fixed_dictionaries(
        {
            "t": st.sampled_from(["float", "bigint", "slice", "list", "tuple", "dict", "x"]),
            "v": json_values,
        }
    ),
)


@FUZZ
@given(tagged, st.lists(st.binary(max_size=40), max_size=3))
def test_decoding_forged_headers_raises_only_channel_errors(tree, buffers):
    try:
        channel.decode(tree, buffers)
    except channel.ChannelError:
        pass


@FUZZ
@given(st.binary(max_size=200), st.booleans())
def test_reading_random_bytes_raises_only_channel_errors(data, with_length):
    if with_length:  # a plausible length prefix followed by garbage
        data = struct.pack(">Q", len(data)) + data
    try:
        channel.read_message(io.BytesIO(data))
    except (channel.ChannelError, EOFError):
        pass


@pytest.mark.parametrize(
    "tree",
    [
        {"t": "float", "v": "abc"},
        {"t": "bigint", "v": "9" * 5000},
        {"t": "nd", "dtype": "<f8\n", "shape": [1], "i": 0},
        {"t": "nd", "dtype": "<f8", "shape": [0, 10**30], "i": 0},
    ],
)
def test_forged_values_fail_their_case_not_the_grader(tree):
    op = gradcheck_kit.get_op("neg_backward")
    case = op.cases()[0]
    result = _judge(op, case, {"value": tree}, [b"\0" * 8], "secret")
    assert not result.passed and "cannot read" in result.message


def test_a_header_nested_too_deeply_is_a_channel_error():
    text = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(channel.ChannelError):
        channel.read_message(io.BytesIO(struct.pack(">Q", len(text)) + text))


# --- end to end ---------------------------------------------------------------------

RETURNS = [
    "1",
    "None",
    "'abc'",
    "b'xy'",
    "float('nan')",
    "[1.0, [2.0]]",
    "{'a': 1}",
    "10**400",
    "np.zeros(3, dtype=object)",
    "np.zeros(2, dtype=[('a', 'f8')])",
    "np.ones(3, complex)",
    "np.zeros(3, 'datetime64[s]')",
    "np.float16(1)",
    "np.broadcast_to(1.0, (10**6, 10**6))",
    "np.matrix([[1.0]])",
    "(x for x in [1])",
    "type('L', (), {'__len__': lambda s: 3})()",
    "np.array(output_grad, dtype=np.float16) * -1",
    "-output_grad.astype(np.float32)",
    "np.asfortranarray(-output_grad)",
    "-output_grad[...]",
    "Ellipsis",
]
RAISES = [
    "KeyboardInterrupt",
    "SystemExit(3)",
    "ValueError('\\ud800 bad \\udcff')",
    "RecursionError",
    "MemoryError",
    "StopIteration",
    "GeneratorExit",
    "ArithmeticError",
]


@E2E
@given(
    st.one_of(
        st.sampled_from(RETURNS).map(lambda r: f"return {r}"),
        st.sampled_from(RAISES).map(lambda r: f"raise {r}"),
    )
)
def test_cli_grades_any_return_or_exception(tmp_path_factory, body):
    directory = tmp_path_factory.mktemp("values")
    source = f"def neg_backward(input, output_grad):\n    {body}\n"
    path = directory / "submission.ipynb"
    path.write_text(json.dumps(notebook_dict([], extra_cells=[source])))
    result = run_cli(str(path), "--format", "json", "--public-only", "--timeout", "5")
    report = assert_valid_report(result)
    (neg,) = [op for op in report["ops"] if op["name"] == "neg_backward"]
    assert neg["status"] in {"passed", "partial", "failed", "missing", "error", "memory"}


def test_exception_text_with_lone_surrogates_reaches_every_report(tmp_path):
    source = "def neg_backward(input, output_grad):\n    raise ValueError('bad \\ud800 value')\n"
    path = tmp_path / "submission.ipynb"
    path.write_text(json.dumps(notebook_dict([], extra_cells=[source])))
    for fmt in ("text", "json", "junit", "gradescope", "markdown"):
        result = run_cli(str(path), "--format", fmt, "--public-only")
        assert result.returncode == 0, result.stderr.decode(errors="replace")[-500:]
        assert "bad ? value" in result.stdout.decode("utf-8")
    out = tmp_path / "report.json"
    assert run_cli(str(path), "--format", "json", "-o", str(out)).returncode == 0
    json.loads(out.read_text(encoding="utf-8"))


def test_batch_with_an_undecodable_file_name_still_writes_its_csv(tmp_path):
    submissions = tmp_path / "subs"
    submissions.mkdir()
    good = json.dumps(notebook_dict(["neg_backward"]))
    (submissions / "alice.ipynb").write_text(good)
    odd = bytes(submissions) + b"/st\xffud.ipynb"  # a name that is not UTF-8
    with open(odd, "w") as handle:
        handle.write(good)
    grades = tmp_path / "out" / "grades.csv"
    result = run_cli(str(submissions), "--csv", str(grades), "--public-only")
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-1000:]
    rows = list(csv.DictReader(grades.open(encoding="utf-8")))
    assert [row["file"].rsplit("/", 1)[1] for row in rows] == ["alice.ipynb", "st\ufffdud.ipynb"]
    assert rows[0]["total"] == rows[1]["total"] != "0"
    assert len(list((tmp_path / "out" / "feedback").iterdir())) == 2


@pytest.mark.parametrize("name", ["neg_backward", "add_backward"])
def test_library_refuses_a_huge_broadcast_view_without_copying_it(name):
    # 8 TB if copied; check() in a notebook must say "shape", not raise MemoryError
    op = gradcheck_kit.get_op(name)
    case = op.cases()[0]
    huge = np.broadcast_to(np.zeros(()), (10**6, 10**6))
    value = huge if len(op.grad_names) == 1 else (huge, huge)
    result = op.judge(case, value)
    assert not result.passed and result.hint == "shape"
    assert "(1000000, 1000000)" in result.message


FORGE = """import numpy as np
import json, os, struct


def _forge(header):
    body = json.dumps(dict(header, nbuf=0)).encode()
    for fd in range(3, 16):  # the protocol's descriptor is one of these
        try:
            os.write(fd, struct.pack(">Q", len(body)) + body)
        except OSError:
            pass


{body}
"""
FORGERIES = {
    "load reply with wrong types": (
        "_forge({'callable': 5, 'errors': [{'chunk': 'x', 'error': 7}, 3]})\n"
        "def _make():\n    return lambda input, output_grad: -output_grad\n"
        "neg_backward = _make()\n"
    ).replace("_forge(", "neg_backward = _forge(", 1),
    "run reply with garbage values": (
        "def neg_backward(input, output_grad):\n"
        "    _forge({'status': 'ran', 'results': [{'value': {'t': 'nd', 'dtype': '<f8',"
        " 'shape': [0, 10**30], 'i': 0}}, 5, {'value': {'t': 'float', 'v': 'x'}},"
        " {'error': None}, {'value': [1, 2]}] * 40, 'output': 3})\n"
        "    return -output_grad\n"
    ),
    "replies with numbers too large for a float": (
        "_forge({'callable': ['neg_backward'], 'errors': [{'cell': 10**400, 'line': 10**400,"
        " 'error': 'x'}], 'syntax_errors': [{'cell': 10**400, 'error': 10**400}]})\n"
        "def neg_backward(input, output_grad):\n"
        "    _forge({'status': 'ran', 'results': [{'value': 10**400, 'mutated': 10**400,"
        " 'seconds': [10**400, 1e308]}] * 40, 'output': 10**400, 'seconds': 10**400})\n"
        "    return -output_grad\n"
    ),
    # one result, as a request of one case (an efficiency run) expects, with a timing
    # no float can hold
    "one-result reply with a timing too large for a float": (
        "def neg_backward(input, output_grad):\n"
        "    if input.size > 10000:  # the efficiency case\n"
        "        _forge({'status': 'ran', 'results': [{'value': None, 'mutated': False,"
        " 'seconds': [10**400, 1.0]}], 'output': ''})\n"
        "    return -output_grad\n"
    ),
}


@pytest.mark.parametrize("name", list(FORGERIES))
def test_forged_worker_replies_cost_only_the_forger(tmp_path, name):
    # student code can write to the worker's protocol descriptor; whatever it writes,
    # the grader reports (exit 0) instead of failing with an internal error (exit 3)
    path = tmp_path / "submission.ipynb"
    source = FORGE.format(body=FORGERIES[name])
    path.write_text(json.dumps(notebook_dict([], extra_cells=[source])))
    result = run_cli(str(path), "--format", "json", "--public-only", "--timeout", "5")
    assert_valid_report(result)
