"""In-process tests of the wire format, extraction and the worker's isolation."""

from __future__ import annotations

import io

import numpy as np
import pytest

from autograder import channel
from autograder.extract import extract
from autograder.sandbox import WORKER_PATH, Sandbox, SandboxOptions


def roundtrip(value):
    tree, buffers = channel.encode(value)
    stream = io.BytesIO()
    channel.write_message(stream, {"v": tree}, buffers)
    stream.seek(0)
    header, received = channel.read_message(stream)
    return channel.decode(header["v"], received)


def test_channel_round_trips_every_allowed_type():
    view = np.arange(12.0).reshape(3, 4).T
    value = {
        "none": None,
        "flags": [True, False],
        "numbers": (1, -(2**70), 2.5, float("nan"), float("inf")),
        "text": "héllo",
        "index": (slice(1, None, 2), Ellipsis, None, np.array([0, 0, 2]), np.array([True, False])),
        "arrays": [np.float32(1.5), np.zeros((0, 3)), np.array(3.0), view],
        "ints": np.arange(6, dtype=np.uint8).reshape(2, 3),
    }
    back = roundtrip(value)
    assert back["none"] is None and back["flags"] == [True, False]
    assert back["numbers"][:3] == (1, -(2**70), 2.5) and np.isnan(back["numbers"][3])
    assert back["text"] == "héllo"
    index = back["index"]
    assert index[0] == slice(1, None, 2) and index[1] is Ellipsis and index[2] is None
    assert index[3].dtype.kind == "i" and index[4].dtype == np.bool_
    scalar, empty, zero_d, transposed = back["arrays"]
    assert isinstance(scalar, np.float32) and scalar == 1.5
    assert empty.shape == (0, 3) and zero_d.shape == () and zero_d.ndim == 0
    assert np.array_equal(transposed, view) and not transposed.flags.c_contiguous
    assert back["ints"].dtype == np.uint8 and back["ints"].shape == (2, 3)


@pytest.mark.parametrize(
    "value",
    [
        np.array([object()], dtype=object),
        np.zeros(2, dtype=[("a", "f8")]),
        np.array(["a"]),
        np.zeros(2, dtype=complex),
        object(),
        {1: 2},
        np.ma.masked_array([1.0]).astype(object),
    ],
)
def test_channel_marks_unsupported_values(value):
    assert isinstance(roundtrip(value), channel.Unsupported)


def test_channel_converts_subclasses_and_caps_size():
    back = roundtrip(np.ma.masked_array([1.0, 2.0]))
    assert type(back) is np.ndarray
    huge = np.broadcast_to(np.zeros(1), (channel.MAX_ARRAY_BYTES // 8 + 1,))
    assert isinstance(roundtrip(huge), channel.Unsupported)


@pytest.mark.parametrize(
    "tree",
    [
        {"t": "nd", "i": 0, "dtype": "|O", "shape": [1]},
        {"t": "nd", "i": 0, "dtype": "<f8", "shape": [1000]},
        {"t": "nd", "i": 5, "dtype": "<f8", "shape": [1]},
        {"t": "pickle", "v": "..."},
        [1, 2],
    ],
)
def test_decode_rejects_malformed_messages(tree):
    with pytest.raises(channel.ChannelError):
        channel.decode(tree, [np.zeros(1).tobytes()])


def test_extract_parses_every_cell_as_a_kernel_would_run_it():
    cells = [
        "import numpy as np\nimport matplotlib.pyplot as plt\nLR = 0.1\n",
        "%timeit 1\n!ls\nplt.plot([1])\nprint('hi')\nfor i in range(3):\n    pass\n",
        "relu_backward = make(lambda x: x > 0)\nW = np.ones(3)\n",
        "%%time\ndef make(f):\n    return lambda x, g: g * f(x) * W\n",
        "def broken(:\n",
        "try:\n    import tqdm\nexcept ImportError:\n    tqdm = None\nimport os\n",
    ]
    result = extract(cells)
    assert [chunk.cell for chunk in result.chunks] == [0, 1, 2, 3, 5]
    assert {"np", "plt", "LR", "i", "relu_backward", "W", "tqdm", "os"} <= result.defined
    sources = [chunk.source for chunk in result.chunks]
    assert "get_ipython().run_line_magic('timeit', '1')" in sources[1]
    assert "get_ipython().system('ls')" in sources[1] and "for i in range(3)" in sources[1]
    assert sources[3].startswith("get_ipython().run_cell_magic('time', ''")
    assert result.chunks[-1].guarded == {2}  # the student handles that import's failure
    assert [cell for cell, _ in result.syntax_errors] == [5]
    assert result.chunks[0].to_json()["filename"] == "<cell 1>"


def test_worker_runs_cells_in_order_as_a_kernel_does():
    sandbox = Sandbox(SandboxOptions(timeout=5, cell_timeout=1, notebook_timeout=20))
    try:
        cells = [
            "import numpy as np\nfrom gradcheck_kit import check\n",
            "TABLE = {}\nfor k in range(3):\n    TABLE[k] = 2.0 * k\nTABLE[1] *= 10\n",
            "def uses_table(x):\n    return TABLE[1] * x\ncheck(uses_table)\n",
            "x = 1\n1 / 0\ndef lost(x):\n    return x\n",
            "%%time\ndef timed(x):\n    return x\n",
            "import no_such_module_here as helpers\nhelpers.setup()\n"
            "def uses_helpers(x):\n    return helpers.f(x)\n",
            "def shown(x):\n    display(x)\n    return get_ipython() is not None\n",
            "answer = input()\ndef after_input(x):\n    return x\n",
            "def spins(x):\n    return x\nwhile True:\n    pass\n"
            "def after_spin(x):\n    return x\n",
        ]
        wanted = ["uses_table", "lost", "timed", "uses_helpers", "shown", "after_input",
                  "spins", "after_spin"]  # fmt: skip
        loaded = sandbox.load(cells, wanted)
        assert loaded["callable"] == ["shown", "spins", "timed", "uses_helpers", "uses_table"]
        errors = {(e["cell"], e["line"]): e["error"].splitlines()[0] for e in loaded["errors"]}
        assert errors == {
            (3, 2): "ZeroDivisionError: division by zero",
            (7, 1): "EOFError: input() is not available while grading: nobody can type an answer",
        }
        notes = "\n".join(loaded["notes"])
        assert "cell 6: module no_such_module_here is not installed" in notes
        assert "cell 9 stopped after 1 s" in notes
        reply, buffers = sandbox.run("uses_table", None, [(1.0,)])
        assert channel.decode(reply["results"][0]["value"], buffers) == 20.0
        reply, buffers = sandbox.run("shown", None, [(1.0,)])
        assert channel.decode(reply["results"][0]["value"], buffers) is True
        reply, _ = sandbox.run("uses_helpers", None, [(1.0,)])
        assert "no_such_module_here is not installed" in reply["results"][0]["error"]
    finally:
        sandbox.close()


def test_worker_blocks_grader_imports_and_keeps_stdout_clean():
    sandbox = Sandbox(SandboxOptions(timeout=5))
    try:
        cells = [
            "import numpy as np\n",
            "print('noise')\nimport os\n",
            (
                "def probe(x):\n"
                "    out = {}\n"
                "    for name in ('torch', 'jax', 'gradcheck_kit', 'autograder', 'json'):\n"
                "        try:\n"
                "            __import__(name)\n"
                "            out[name] = 'ok'\n"
                "        except ImportError:\n"
                "            out[name] = 'blocked'\n"
                "    print('x' * 10000)\n"
                "    out['cwd_is_tmp'] = os.getcwd().startswith(('/tmp', '/var'))\n"
                "    out['env'] = sorted(os.environ)\n"
                "    return out\n"
            ),
        ]
        loaded = sandbox.load(cells, ["probe"])
        assert loaded["callable"] == ["probe"]
        reply, buffers = sandbox.run("probe", None, [(1,)])
        result = channel.decode(reply["results"][0]["value"], buffers)
        assert result["json"] == "ok"
        assert {result[n] for n in ("torch", "jax", "gradcheck_kit", "autograder")} == {"blocked"}
        assert not any("SECRET" in name for name in result["env"])
        assert "xxxx" in reply["output"] and len(reply["output"]) < 5000
    finally:
        sandbox.close()


def test_worker_script_imports_only_stdlib_and_numpy():
    import ast

    tree = ast.parse(open(WORKER_PATH).read())
    # the reference forwards (for timing efficiency cases) are the one exception: taken
    # from the grader's package in one function that runs before any student code
    reference = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_load_reference"
    )
    inside = {id(n) for n in ast.walk(reference)}
    nodes = [n for n in ast.walk(tree) if id(n) not in inside]
    imported = {a.name for n in nodes if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in nodes if isinstance(n, ast.ImportFrom)}
    # ctypes: the isolation (mount, capset, prctl), standard library all the same
    allowed = {"ast", "io", "os", "resource", "runpy", "signal", "sys", "time", "traceback"}
    allowed |= {"numpy"}
    allowed |= {"ctypes"}
    assert imported <= allowed, imported - allowed
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    lines = {
        c.func.id: c.lineno
        for c in ast.walk(main)
        if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
    }
    # the reference package comes in (cold, or in the zygote it was forked from) before
    # the worker that runs student code exists
    assert lines["_load_reference"] < lines["Worker"]
    assert lines["_forked_from_zygote"] < lines["Worker"]
    zygote = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_forked_from_zygote"
    )
    assert any(
        isinstance(c, ast.Call) and getattr(c.func, "id", "") == "_load_reference"
        for c in ast.walk(zygote)
    )
    # and it runs in isolated mode, where the project is not on sys.path by cwd
    assert "-I" in open(WORKER_PATH.replace("worker.py", "sandbox.py")).read()
