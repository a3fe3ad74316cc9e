"""Hypothesis strategies: malformed notebooks and arbitrary student return values."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
from hypothesis import strategies as st

from .helpers import notebook_dict

BASE = notebook_dict(["neg_backward", "add_backward"])

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
versions = st.sampled_from([None, -1, 0, 1, 2, 3, 4, 5, 99, "4", 4.0, 4.5, 2**70, [4], {}])
garbage_source = st.one_of(
    st.text(max_size=200),
    st.lists(st.text(max_size=40), max_size=6),
    st.sampled_from(
        [
            "def neg_backward(input, output_grad):\n    return -output_grad\n",
            "%matplotlib inline\n!pip install torch\ndef neg_backward(x, g): return -g",
            "x = " + "(" * 300 + ")" * 300,
            "y = " + "-" * 5000 + "1",
            "a = 1; neg_backward = " + "not " * 2000 + "1",
            "def f(:\n",
            "\x00",
            "raise SystemExit(0)",
        ]
    ),
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (sequence of keys/indices) into a JSON document."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _parent(document: Any, path: tuple) -> tuple[Any, Any]:
    node = document
    for key in path[:-1]:
        node = node[key]
    return node, path[-1]


@st.composite
def mutated_documents(draw) -> Any:
    """The base notebook with a few structural mutations."""
    document = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(document) if p]
        kind = draw(
            st.sampled_from(
                ["delete", "retype", "duplicate", "cell_type", "source", "version", "huge", "deep"]
            )
        )
        if kind in ("delete", "retype", "duplicate") and paths:
            parent, key = _parent(document, draw(st.sampled_from(paths)))
            if kind == "delete":
                del parent[key]
            elif kind == "retype":
                parent[key] = draw(json_values)
            elif isinstance(parent, list):
                parent.insert(key, copy.deepcopy(parent[key]))
            else:
                parent[key] = [parent[key], copy.deepcopy(parent[key])]
            continue
        cells = document.get("cells") if isinstance(document, dict) else None
        cell = draw(st.sampled_from(cells)) if isinstance(cells, list) and cells else None
        if kind == "cell_type" and isinstance(cell, dict):
            cell["cell_type"] = draw(
                st.one_of(
                    st.sampled_from(["code", "markdown", "raw", "heading", "", "CODE"]), json_values
                )
            )
        elif kind == "source" and isinstance(cell, dict):
            cell["source"] = draw(garbage_source)
        elif kind == "version" and isinstance(document, dict):
            document[draw(st.sampled_from(["nbformat", "nbformat_minor"]))] = draw(versions)
        elif kind == "huge" and isinstance(cells, list):
            line = draw(st.sampled_from(["x = 1\n", "# comment\n", "print('a' * 100)\n"]))
            cells.append(
                {
                    "cell_type": "code",
                    "metadata": {},
                    "source": line * 20_000,
                    "outputs": [],
                    "execution_count": None,
                    "id": "huge",
                }
            )
        elif kind == "deep" and isinstance(document, dict):
            depth = draw(st.sampled_from([50, 900, 5000, 100_000]))
            document["metadata"] = {"x": "[" * depth + "]" * depth}  # placeholder, see encode
    if draw(st.booleans()) and not isinstance(document, dict):
        return document
    if draw(st.integers(0, 20)) == 0:  # a non-dict top level
        return draw(st.one_of(json_values, st.just([document])))
    return document


@st.composite
def notebook_bytes(draw) -> bytes:
    """Bytes of a file handed to the grader as a notebook."""
    document = draw(mutated_documents())
    text = json.dumps(document, allow_nan=True)
    # turn the "deep" placeholder into real nesting in the JSON itself
    text = text.replace('"[', "[").replace(']"', "]") if '"[[' in text else text
    data = text.encode("utf-8", "surrogatepass")
    damage = draw(st.sampled_from(["none"] * 6 + ["truncate", "bom", "bytes", "empty", "v3"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    elif damage == "bom":
        data = draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"])) + data
    elif damage == "bytes":
        at = draw(st.integers(0, len(data)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\x80\x80"]))
        data = data[:at] + junk + data[at:]
    elif damage == "empty":
        data = draw(st.sampled_from([b"", b" ", b"\n", b"null", b"{}", b"[]", b"0"]))
    elif damage == "v3":
        data = json.dumps(draw(v3_documents())).encode()
    return data


@st.composite
def v3_documents(draw) -> dict:
    """nbformat 3 notebooks (worksheets, ``input`` instead of ``source``), some broken."""
    source = draw(
        st.one_of(
            st.just("def neg_backward(input, output_grad):\n    return -output_grad\n"),
            garbage_source,
        )
    )
    cell = {
        "cell_type": "code",
        "input": source,
        "language": "python",
        "outputs": [],
        "metadata": {},
        "collapsed": False,
    }
    document = {
        "nbformat": 3,
        "nbformat_minor": draw(st.integers(-1, 3)),
        "metadata": {"name": ""},
        "worksheets": [{"cells": [cell], "metadata": {}}],
    }
    if draw(st.booleans()):
        paths = [p for p in _paths(document) if p]
        parent, key = _parent(document, draw(st.sampled_from(paths)))
        parent[key] = draw(json_values)
    return document


# --- values a student's function may return -------------------------------------------

_dtypes = [
    np.float64,
    np.float32,
    np.float16,
    np.longdouble,
    np.int8,
    np.int64,
    np.uint8,
    np.uint64,
    np.bool_,
    np.complex64,
    np.complex128,
    object,
    "datetime64[s]",
    "timedelta64[ms]",
    "U3",
    "S2",
    [("a", np.float64), ("b", np.int32)],
    "V8",
]


@st.composite
def arrays(draw, shape: tuple | None = None) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(_dtypes)))
    if shape is None:
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    size = int(np.prod(shape))
    if dtype.kind in "fc":
        values = draw(
            st.lists(
                st.floats(allow_nan=True, allow_infinity=True, width=32),
                min_size=size,
                max_size=size,
            )
        )
        array = np.array(values, dtype=np.float64).astype(dtype).reshape(shape)
    elif dtype.kind in "iub":
        array = np.arange(size).astype(dtype).reshape(shape)
    elif dtype.kind == "O":
        array = np.empty(shape, dtype=object)
        for index in np.ndindex(*shape):
            array[index] = draw(st.sampled_from([1.0, None, "x", [1.0]]))
    else:
        array = np.zeros(shape, dtype=dtype)
    view = draw(st.sampled_from(["plain", "readonly", "transposed", "broadcast", "huge"]))
    if view == "readonly":
        array.flags.writeable = False
    elif view == "transposed":
        array = array.T
    elif view == "broadcast" and array.ndim:
        array = np.broadcast_to(array, (2, *array.shape))
    elif view == "huge":
        array = np.broadcast_to(np.zeros((), dtype=dtype), (10**6, 10**6))
    return array


class _LyingLen:
    def __len__(self):
        return 3

    def __getitem__(self, index):
        raise IndexError(index)


class _ExplodingArray:
    def __array__(self, *args, **kwargs):
        raise RuntimeError("no")

    def __len__(self):
        raise RuntimeError("no")


class _FakeArray:
    shape = (3, 4)
    dtype = np.dtype(np.float64)

    def __array__(self, *args, **kwargs):
        return np.ones((2, 2))


class _SubArray(np.ndarray):
    pass


class _SneakyFloat(float):
    def __float__(self):
        raise RuntimeError("no")

    def __format__(self, spec):
        raise RuntimeError("no")


def _generator():
    yield np.zeros(3)


def odd_objects() -> st.SearchStrategy:
    return st.sampled_from(
        [
            _LyingLen(),
            _ExplodingArray(),
            _FakeArray(),
            _SneakyFloat(1.5),
            _generator(),
            range(3),
            b"\x00\x01",
            bytearray(b"ab"),
            memoryview(b"abcd"),
            object(),
            Ellipsis,
            slice(1, 2),
            np.float64,
            np.matrix([[1.0, 2.0]]),
            np.ma.masked_array([1.0, 2.0]),
            np.zeros(3).view(_SubArray),
            {1: 2},
            {"a": np.zeros(2)},
            frozenset({1}),
            complex(1, 2),
            True,
            np.bool_(True),
            np.datetime64("2020-01-01"),
            np.float16(1.0),
            np.longdouble(1.0),
            np.int64(2**62),
            10**400,
            -(10**30),
            "\ud800",
            float("nan"),
            float("-inf"),
            1e308,
            5e-324,
        ]
    )


def student_values(shape: tuple) -> st.SearchStrategy:
    """Anything a function might return for an input of ``shape``."""
    leaves = st.one_of(
        json_scalars,
        st.binary(max_size=8),
        arrays(),
        arrays(shape=shape),
        odd_objects(),
        st.just(np.zeros(shape)),
        st.just(np.full(shape, np.nan)),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.lists(inner, max_size=3).map(tuple),
            st.dictionaries(st.text(max_size=3), inner, max_size=2),
        ),
        max_leaves=6,
    )
