"""The wire format between the grader and its worker: JSON plus raw array bytes.

Nothing here ever unpickles: a message is a length-prefixed JSON header followed by
raw buffers, and arrays are rebuilt with ``np.frombuffer`` from a whitelisted dtype.
Values that cannot be represented this way become an explicit "unsupported" marker,
so a hostile result can at worst fail its own case.

This module must import only the standard library and NumPy: the worker loads it by
path (it may not import the ``autograder`` package).
"""

from __future__ import annotations

import json
import math
import os
import re
import runpy
import struct
from typing import Any, BinaryIO

import numpy as np

#: Largest array (in bytes) and total message payload accepted in either direction.
MAX_ARRAY_BYTES = 64 * 1024 * 1024
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
MAX_HEADER_BYTES = 32 * 1024 * 1024
MAX_DEPTH = 32
MAX_ITEMS = 100_000

_DTYPE = re.compile(r"^[<>|]([biu][1248]|f[248])$")
_LENGTH = struct.Struct(">Q")


class ChannelError(Exception):
    """The peer sent something that is not a well-formed message."""


class Unsupported:
    """A value that cannot cross the channel; ``what`` says why, for the student."""

    def __init__(self, what: str):
        self.what = what

    def __repr__(self) -> str:
        return f"Unsupported({self.what!r})"


def describe(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins.")


# rebuilding a view the way the cases make them: one definition, in the calling module,
# loaded by path because this module may not import packages (the worker loads it too)
_CALLING = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "gradcheck_kit")
non_contiguous = runpy.run_path(os.path.join(_CALLING, "calling.py"))["non_contiguous"]


class _Encoder:
    def __init__(self) -> None:
        self.buffers: list[bytes] = []
        self.total = 0
        self.items = 0

    def encode(self, value: Any, depth: int = 0) -> Any:
        self.items += 1
        if depth > MAX_DEPTH or self.items > MAX_ITEMS:
            raise _TooBig("a structure nested too deeply or with too many items")
        # exact type checks: a subclass of int/str could carry arbitrary behaviour
        kind = type(value)
        if value is None or kind is bool or kind is str:
            return value
        if kind is int:
            return value if abs(value) < 2**63 else {"t": "bigint", "v": str(value)}
        if kind is float:
            return value if math.isfinite(value) else {"t": "float", "v": repr(value)}
        if kind is list or kind is tuple:
            items = [self.encode(v, depth + 1) for v in value]
            return {"t": "list" if kind is list else "tuple", "v": items}
        if kind is dict:
            if not all(type(k) is str for k in value):
                return _unsupported("a dict with non-string keys")
            return {"t": "dict", "v": {k: self.encode(v, depth + 1) for k, v in value.items()}}
        if kind is slice:
            parts = [self.encode(p, depth + 1) for p in (value.start, value.stop, value.step)]
            return {"t": "slice", "v": parts}
        if value is Ellipsis:
            return {"t": "ellipsis"}
        if isinstance(value, np.generic):
            return self.array(np.asarray(value), scalar=True)
        if isinstance(value, np.ndarray):
            return self.array(value, scalar=False)
        return _unsupported(f"an object of type {describe(value)}")

    def array(self, value: np.ndarray, scalar: bool) -> Any:
        base = np.asarray(value)  # drops ndarray subclasses (np.matrix, masked arrays...)
        if type(base) is not np.ndarray:
            base = np.array(base, subok=False)
        dtype = base.dtype
        if dtype.fields is not None or dtype.kind not in "biuf":
            return _unsupported(f"an array of dtype {dtype}")
        if dtype.kind == "f" and dtype.itemsize > 8:
            base = base.astype(np.float64)
        if base.nbytes > MAX_ARRAY_BYTES or self.total + base.nbytes > MAX_MESSAGE_BYTES:
            return _unsupported(f"an array of {base.nbytes} bytes (too large)")
        # not np.ascontiguousarray: it turns 0-d arrays into 1-d ones
        data = base if base.flags.c_contiguous else base.copy(order="C")
        self.buffers.append(data.tobytes())
        self.total += data.nbytes
        header = {
            "t": "nd",
            "i": len(self.buffers) - 1,
            "dtype": data.dtype.str,
            "shape": list(data.shape),
        }
        if scalar:
            header["scalar"] = True
        if not base.flags.c_contiguous and base.ndim >= 1 and base.size > 1:
            header["view"] = True
        return header


class _TooBig(Exception):
    pass


def _unsupported(what: str) -> dict:
    return {"t": "unsupported", "what": what}


def encode(value: Any) -> tuple[Any, list[bytes]]:
    """``value`` as a JSON-able tree plus the raw buffers its arrays refer to."""
    encoder = _Encoder()
    try:
        tree = encoder.encode(value)
    except _TooBig as error:
        return _unsupported(str(error)), []
    except RecursionError:
        return _unsupported("a structure nested too deeply"), []
    return tree, encoder.buffers


def decode(tree: Any, buffers: list[bytes], depth: int = 0) -> Any:
    """Rebuild a value from :func:`encode`'s output; raises ChannelError on anything odd."""
    if depth > MAX_DEPTH + 2:
        raise ChannelError("message nested too deeply")
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    if isinstance(tree, list):  # only appears inside tagged containers
        raise ChannelError("untagged list in message")
    if not isinstance(tree, dict):
        raise ChannelError(f"unexpected {type(tree).__name__} in message")
    tag = tree.get("t")
    if tag in ("list", "tuple"):
        items = [decode(v, buffers, depth + 1) for v in _expect(tree, "v", list)]
        return items if tag == "list" else tuple(items)
    if tag == "dict":
        return {str(k): decode(v, buffers, depth + 1) for k, v in _expect(tree, "v", dict).items()}
    if tag == "slice":
        parts = [decode(p, buffers, depth + 1) for p in _expect(tree, "v", list)]
        if len(parts) != 3:
            raise ChannelError("bad slice")
        return slice(*parts)
    if tag == "ellipsis":
        return Ellipsis
    if tag in ("float", "bigint"):
        text = _expect(tree, "v", str)
        try:
            return float(text) if tag == "float" else int(text)
        except ValueError:
            raise ChannelError(f"bad {tag} {text[:40]!r}") from None
    if tag == "unsupported":
        return Unsupported(str(tree.get("what", "an unsupported value"))[:200])
    if tag == "nd":
        return _decode_array(tree, buffers)
    raise ChannelError(f"unknown tag {tag!r}")


def _expect(tree: dict, key: str, kind: type) -> Any:
    value = tree.get(key)
    if not isinstance(value, kind):
        raise ChannelError(f"bad field {key!r}")
    return value


def _decode_array(tree: dict, buffers: list[bytes]) -> Any:
    dtype_text = _expect(tree, "dtype", str)
    if not _DTYPE.fullmatch(dtype_text):
        raise ChannelError(f"dtype {dtype_text!r} not allowed")
    shape = _expect(tree, "shape", list)
    if not all(type(n) is int and n >= 0 for n in shape) or len(shape) > 32:
        raise ChannelError("bad shape")
    index = _expect(tree, "i", int)
    if not 0 <= index < len(buffers):
        raise ChannelError("bad buffer index")
    dtype = np.dtype(dtype_text)
    raw = buffers[index]
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise ChannelError("buffer size does not match shape")
    try:
        array = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    except ValueError:  # e.g. a zero-size array with an absurd dimension
        raise ChannelError("bad shape") from None
    if tree.get("view"):
        array = non_contiguous(array)
    if tree.get("scalar"):
        return array[()]
    return array


def frame(header: dict, buffers: list[bytes] = ()) -> bytes:
    """Frame: 8-byte JSON length, JSON, then for each buffer an 8-byte length and bytes."""
    header = dict(header, nbuf=len(buffers))
    text = json.dumps(header, allow_nan=False, separators=(",", ":")).encode()
    parts = [_LENGTH.pack(len(text)), text]
    for buffer in buffers:
        parts += [_LENGTH.pack(len(buffer)), buffer]
    return b"".join(parts)


def write_message(stream: BinaryIO, header: dict, buffers: list[bytes] = ()) -> None:
    stream.write(frame(header, buffers))
    stream.flush()


def read_message(stream: BinaryIO) -> tuple[dict, list[bytes]]:
    """Read one framed message; EOFError if the peer closed, ChannelError if malformed."""
    size = _LENGTH.unpack(_read_exact(stream, _LENGTH.size))[0]
    if size > MAX_HEADER_BYTES:
        raise ChannelError("header too large")
    try:
        header = json.loads(_read_exact(stream, size))
    except ValueError as error:
        raise ChannelError(f"bad JSON header: {error}") from None
    except RecursionError:
        raise ChannelError("JSON header nested too deeply") from None
    if not isinstance(header, dict):
        raise ChannelError("header is not an object")
    count = header.get("nbuf", 0)
    if type(count) is not int or not 0 <= count <= MAX_ITEMS:
        raise ChannelError("bad buffer count")
    buffers, total = [], 0
    for _ in range(count):
        length = _LENGTH.unpack(_read_exact(stream, _LENGTH.size))[0]
        total += length
        if total > MAX_MESSAGE_BYTES + MAX_ARRAY_BYTES:
            raise ChannelError("message too large")
        buffers.append(_read_exact(stream, length))
    return header, buffers


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            raise EOFError("channel closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
