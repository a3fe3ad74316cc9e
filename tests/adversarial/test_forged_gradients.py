"""Forged gradients: right along the directions a judge is known to draw, wrong elsewhere.

The forger has read every line of the project but does not know the instructor's secret.
For each call it guesses the directions the public source would draw: ``check()``'s fixed
seed, and the grader's ``verdict_rng`` under each guessed secret for the cases it
recognises by their inputs (the public cases, the efficiency cases and the hidden cases
the guessed secret would make: a table built at home from the public source). It
measures the directional derivatives of ``<output_grad, forward(x)>`` along every guessed
direction with the public forward and returns the minimum-norm gradient matching them
all. Wherever the gradient has more elements than the forger matched directions, that
vector is wrong in nearly every element; with at most that many it is the right
gradient, solved for, and earns its case like any right answer.

The notebooks are real (nbformat) and graded through the real command line.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from autograder.grade import DEFAULT_SECRET
from gradcheck_kit import all_ops, get_op, verdict
from gradcheck_kit.efficiency import efficiency_case
from gradcheck_kit.numerical import leaves_of
from gradcheck_kit.ops import conv
from gradcheck_kit.registry import OpSpec
from tests import notebooks as fixtures
from tests.core import solutions

SECRET = "forgers-never-see-this-9b2e"
#: secrets a forger would try: the one the grader uses without --seed
GUESSED_SECRETS = (DEFAULT_SECRET,)
#: directions per generator, as the judge draws them
DIRECTIONS = verdict.DIRECTIONS

FORGER = '''
def _fingerprint(op, args):
    """Recognises a call by its float arrays (a case's inputs and output_grad)."""
    digest = hashlib.sha256(op.encode())
    for arg in args:
        if isinstance(arg, (np.ndarray, np.generic)) and arg.dtype.kind == "f":
            value = np.ascontiguousarray(arg)
            digest.update(f"{value.dtype.str}{value.shape}".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def _guessed_generators(op, args):
    """check()'s fixed seed, and the grader's generator under every guessed secret for
    every case these inputs could be."""
    generators = [np.random.default_rng(0)]
    for name in _KNOWN_CASES.get(_fingerprint(op, args), ()):
        for secret in _GUESSED_SECRETS:
            key = f"verdict\\0{secret}\\0{op}\\0{name}".encode()
            seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "little")
            generators.append(np.random.default_rng(seed))
    return generators


def _forge(op, forward, leaves, output_grad, args, generators=None):
    """The minimum-norm gradient whose projections on every guessed direction equal the
    directional derivatives of <output_grad, forward(*leaves)>."""
    values = [np.asarray(v, dtype=np.float64) for v in leaves]
    flat = np.concatenate([v.reshape(-1) for v in values])
    if flat.size == 0:
        return [np.zeros(v.shape) for v in values]
    splits = np.cumsum([v.size for v in values])[:-1]
    upstream = np.asarray(output_grad, dtype=np.float64)

    def loss(point):
        parts = [p.reshape(v.shape) for p, v in zip(np.split(point, splits), values)]
        return float(np.sum(upstream * forward(*parts)))

    # the judge's own step, so that both measure the same difference quotient
    spread = float(np.std(flat)) if flat.size > 1 else float(np.abs(flat).max())
    step = 6e-6 * min(max(1.0, spread), 10.0)
    rows = []
    for generator in _guessed_generators(op, args) if generators is None else generators:
        for _ in range(3):
            rows.append(
                np.concatenate([np.ravel(generator.standard_normal(v.shape)) for v in values])
            )
    directions = np.array(rows)
    slopes = [(loss(flat + step * d) - loss(flat - step * d)) / (2 * step) for d in directions]
    forged = np.linalg.lstsq(directions, np.array(slopes), rcond=None)[0]
    return [p.reshape(v.shape) for p, v in zip(np.split(forged, splits), values)]
'''

UNARY = {
    "neg_backward": "-x",
    "exp_backward": "np.exp(x)",
    "log_backward": "np.log(x)",
    "sin_backward": "np.sin(x)",
    "cos_backward": "np.cos(x)",
    "tanh_backward": "np.tanh(x)",
    "sigmoid_backward": "1.0 / (1.0 + np.exp(-x))",
    "relu_backward": "np.maximum(x, 0.0)",
    "abs_backward": "np.abs(x)",
}
BINARY = {
    "add_backward": "a + b",
    "sub_backward": "a - b",
    "mul_backward": "a * b",
    "div_backward": "a / b",
    "pow_backward": "a ** b",
    "maximum_backward": "np.maximum(a, b)",
}


def _elementwise_cells() -> list[str]:
    cells = [
        "def unbroadcast(grad, shape):\n"
        "    point = np.zeros(tuple(shape))\n"
        "    forward = lambda x: np.broadcast_to(x, grad.shape)\n"
        "    return _forge('unbroadcast', forward, [point], grad, (grad, shape))[0]\n",
        "def where_backward(condition, input1, input2, output_grad):\n"
        "    forward = lambda a, b: np.where(condition, a, b)\n"
        "    args = (condition, input1, input2, output_grad)\n"
        "    leaves = [input1, input2]\n"
        "    return tuple(_forge('where_backward', forward, leaves, output_grad, args))\n",
    ]
    for name, expression in UNARY.items():
        cells.append(
            f"def {name}(input, output_grad):\n"
            f"    forward = lambda x: {expression}\n"
            f"    return _forge({name!r}, forward, [input], output_grad, (input, output_grad))[0]\n"
        )
    for name, expression in BINARY.items():
        cells.append(
            f"def {name}(input1, input2, output_grad):\n"
            f"    forward = lambda a, b: {expression}\n"
            f"    leaves, args = [input1, input2], (input1, input2, output_grad)\n"
            f"    return tuple(_forge({name!r}, forward, leaves, output_grad, args))\n"
        )
    return cells


def _conv_cells() -> list[str]:
    # the reference forwards, as a student copies them from the public source
    cells = [inspect.getsource(fn) for fn in (conv.pair, conv.conv2d, conv.windows)]
    cells.append(inspect.getsource(conv.batch_norm))
    cells.append(
        "def conv2d_backward(input, weight, bias, output_grad, stride=1, padding=0, "
        "dilation=1):\n"
        "    args = (input, weight, bias, output_grad)\n"
        "    if bias is None:\n"
        "        forward = lambda x, w: conv2d(x, w, None, stride, padding, dilation)\n"
        "        gx, gw = _forge('conv2d_backward', forward, [input, weight], output_grad, args)\n"
        "        return gx, gw, None\n"
        "    forward = lambda x, w, b: conv2d(x, w, b, stride, padding, dilation)\n"
        "    leaves = [input, weight, bias]\n"
        "    return tuple(_forge('conv2d_backward', forward, leaves, output_grad, args))\n"
    )
    for name, reduce in (("max_pool2d_backward", "max"), ("avg_pool2d_backward", "mean")):
        cells.append(
            f"def {name}(input, output_grad, kernel_size, stride=None):\n"
            f"    forward = lambda x: windows(x, kernel_size, stride).{reduce}(axis=(-2, -1))\n"
            f"    args = (input, output_grad)\n"
            f"    return _forge({name!r}, forward, [input], output_grad, args)[0]\n"
        )
    cells.append(
        "def batch_norm_backward(input, weight, bias, output_grad, eps=1e-5):\n"
        "    forward = lambda x, w, b: batch_norm(x, w, b, eps)\n"
        "    args = (input, weight, bias, output_grad)\n"
        "    leaves = [input, weight, bias]\n"
        "    return tuple(_forge('batch_norm_backward', forward, leaves, output_grad, args))\n"
    )
    return cells


OP_CELLS = {"01_elementwise": _elementwise_cells, "04_conv": _conv_cells}


def forger_namespace(table: dict[str, list[str]] | None = None) -> dict:
    """The forger's helpers, run here as they run in the notebook."""
    namespace = {"_KNOWN_CASES": table or {}, "_GUESSED_SECRETS": GUESSED_SECRETS}
    exec("import hashlib\nimport numpy as np\n" + FORGER, namespace)
    return namespace


def known_cases(assignment: str) -> dict[str, list[str]]:
    """What a student can compute at home from the public source: every case whose inputs
    do not depend on the real secret, by the fingerprint of its inputs."""
    fingerprint = forger_namespace()["_fingerprint"]
    table: dict[str, list[str]] = {}
    for op in all_ops(assignment):
        cases = op.cases() + [efficiency_case(op)]
        cases += [c for secret in GUESSED_SECRETS for c in op.cases(hidden=True, secret=secret)]
        for case in cases:
            key = fingerprint(op.name, op.call_args(case.arrays, case.output_grad, case.params))
            names = table.setdefault(key, [])
            if case.name not in names:
                names.append(case.name)
    return table


def forged_notebook(path: Path, assignment: str) -> Path:
    table = known_cases(assignment)
    cells = [
        "import hashlib\n\nimport numpy as np\n"
        "from numpy.lib.stride_tricks import sliding_window_view\n",
        f"_GUESSED_SECRETS = {GUESSED_SECRETS!r}\n",
        f"_KNOWN_CASES = {table!r}\n",
        FORGER,
        *OP_CELLS[assignment](),
    ]
    return fixtures.build_notebook(path, cells)


def zero_gradient(spec: OpSpec, case) -> bool:
    """Whether the right answer is all zeros (zero output_grad, or softmax over one
    class), which the forger, like many wrong functions, gets right."""
    if not np.any(case.output_grad):
        return True
    args = spec.call_args(case.arrays, case.output_grad, case.params)
    right = getattr(solutions, spec.name)(*copy.deepcopy(args))
    right = right if isinstance(right, (tuple, list)) else [right]
    return all(g is None or np.allclose(g, 0.0, rtol=0.0, atol=1e-12) for g in right)


def elements(spec: OpSpec, case) -> int:
    return sum(
        int(np.size(leaf.get(case.arrays))) for leaf in leaves_of(spec.grad_names, case.arrays)
    )


def graded_cases(assignment: str, secret: str) -> dict[tuple[str, str], tuple]:
    """(op, case name) -> (case, gradient elements, directions the forger matches), for
    every case the grader judges with ``secret``."""
    namespace = forger_namespace(known_cases(assignment))
    found = {}
    for op in all_ops(assignment):
        cases = op.cases() + op.cases(hidden=True, secret=secret) + [efficiency_case(op)]
        for case in cases:
            args = op.call_args(case.arrays, case.output_grad, case.params)
            matched = DIRECTIONS * len(namespace["_guessed_generators"](op.name, args))
            found[op.name, case.name] = (case, elements(op, case), matched)
    return found


def grade(notebook: Path, *args: str) -> dict:
    result = fixtures.run_cli(str(notebook), "--format", "json", *args, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def unsolved(report: dict, cases: dict, only=lambda case: True) -> tuple[list, list]:
    """(passed, failed) report cases where the forger's answer is wrong: a right gradient
    that is not zero, with more elements than the forger matched directions."""
    passed, failed = [], []
    for op in report["ops"]:
        for verdict_row in op["cases"]:
            case, size, matched = cases[op["name"], verdict_row["name"]]
            if size > matched and only(case) and not zero_gradient(get_op(op["name"]), case):
                (passed if verdict_row["passed"] else failed).append((op["name"], case.name))
    return passed, failed


@pytest.mark.parametrize("assignment", ["01_elementwise", "04_conv"])
def test_a_forger_without_the_secret_fails_every_case_it_cannot_solve(assignment, tmp_path):
    report = grade(forged_notebook(tmp_path / "forged.ipynb", assignment), "--seed", SECRET)
    assert report["secret"] == "--seed"
    cases = graded_cases(assignment, SECRET)
    assert {(op["name"], c["name"]) for op in report["ops"] for c in op["cases"]} == set(cases)
    passed, failed = unsolved(report, cases)
    assert passed == []
    assert len(failed) >= len(cases) / 2
    # what it still earns, it earns on cases so small that it solved for the right gradient
    assert report["score"] < 0.25 * report["max_score"]


def test_a_forger_who_guesses_the_default_secret_fails_every_case_compared_elementwise(
    tmp_path,
):
    """Graded without --seed, every direction is public: only the elementwise comparison
    (every case but the largest) stands between the forger and the points."""
    assignment = "01_elementwise"
    report = grade(forged_notebook(tmp_path / "forged.ipynb", assignment))
    assert report["secret"] == "default"
    cases = graded_cases(assignment, DEFAULT_SECRET)
    passed, failed = unsolved(
        report, cases, only=lambda case: verdict.compares_elementwise(get_op(case.op), case)
    )
    assert passed == []
    assert len(failed) >= len(cases) / 2


# --- the judge in process -------------------------------------------------------------


CURRICULUM = [
    op
    for op in all_ops()
    if isinstance(op, OpSpec) and op.assignment[:2] in {"01", "02", "03", "04"}
]


def given_rng(secret: str, case) -> np.random.Generator:
    """A generator the forger does not know, one per case (as the grader gives)."""
    digest = hashlib.sha256(f"{secret}\0{case.op}\0{case.name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def forge_for(spec: OpSpec, case, generators: list[np.random.Generator]):
    """The forged result for ``case``, in the structure the op returns, built on the
    reference forward and the given generators' directions."""
    leaves = leaves_of(spec.grad_names, case.arrays)
    values = [np.asarray(leaf.get(case.arrays), dtype=np.float64) for leaf in leaves]

    def forward(*parts):
        arrays = dict(case.arrays)
        for leaf, part in zip(leaves, parts):
            arrays = leaf.replaced(arrays, part)
        return spec.evaluate(arrays, case.params)

    forge = forger_namespace()["_forge"]
    forged = dict(zip((leaf.label for leaf in leaves), forge(
        spec.name, forward, values, case.output_grad, (), generators
    )))  # fmt: skip
    if spec.returns_list:
        return [forged[leaf.label] for leaf in leaves]
    grads = tuple(None if case.arrays[name] is None else forged[name] for name in spec.grad_names)
    return grads if len(grads) > 1 else grads[0]


def forgeable(spec: OpSpec, case) -> bool:
    """A non-zero right gradient with more elements than the judge draws directions."""
    return not zero_gradient(spec, case) and elements(spec, case) > DIRECTIONS


@pytest.mark.parametrize("spec", CURRICULUM, ids=lambda spec: spec.name)
def test_knowing_the_exact_directions_is_not_enough_where_the_gradient_is_compared(
    spec, monkeypatch
):
    """The forger is handed a copy of the judge's own generator: it matches every
    projection, so projections alone pass it, and the elementwise comparison fails it."""
    cases = [c for c in spec.cases() if forgeable(spec, c) and not c.at_kink]
    cases = [c for c in cases if verdict.compares_elementwise(spec, c)]
    assert cases
    forged = []
    for case in cases:
        rng = given_rng(SECRET, case)
        forged.append((case, forge_for(spec, case, [copy.deepcopy(rng)]), rng))
    judged = [spec.judge(case, result, rng=rng) for case, result, rng in forged]
    assert [v.name for v in judged if v.passed] == []
    monkeypatch.setattr(verdict, "ELEMENTWISE_MAX_EVALS", 0)
    fooled = [spec.judge(case, result, rng=given_rng(SECRET, case)) for case, result, _ in forged]
    assert [v.name for v in fooled if not v.passed] == []


@pytest.mark.parametrize(
    "name",
    ["sin_backward", "add_backward", "sum_backward", "matmul_backward", "max_pool2d_backward"],
)
def test_on_a_case_too_large_to_compare_the_directions_come_from_the_given_rng(name):
    """The efficiency case is judged by projections alone. A forger matching check()'s
    fixed directions fools check(), which grants nothing; given a generator, the judge
    draws its directions from it and fails the forgery, as it fails one made for another
    generator."""
    spec = get_op(name)
    case = efficiency_case(spec)
    assert not verdict.compares_elementwise(spec, case)
    fixed = forge_for(spec, case, [np.random.default_rng(verdict.CHECK_SEED)])
    assert spec.judge(case, fixed).passed
    result = spec.judge(case, fixed, rng=given_rng(SECRET, case))
    assert not result.passed
    assert result.hint == "wrong-value"
    other = forge_for(spec, case, [given_rng("another secret", case)])
    assert spec.judge(case, other, rng=given_rng("another secret", case)).passed
    assert not spec.judge(case, other, rng=given_rng(SECRET, case)).passed


@pytest.mark.parametrize("spec", CURRICULUM, ids=lambda spec: spec.name)
@pytest.mark.parametrize("value", [1e160, 1e200, 1e300, 1.7e308])
def test_a_gradient_too_large_to_sum_passes_nothing(spec, value):
    """Values whose products with a direction overflow would make the tolerance, which
    grows with the result, infinite: such a result must fail like any other wrong one,
    on the small cases and on the efficiency case alike."""
    # explaining a failing efficiency case can take seconds (conv2d): one value does
    large = [efficiency_case(spec)] if value == 1e200 else []
    cases = [c for c in spec.cases() + large if forgeable(spec, c)]
    passed = []
    for case in cases:
        if spec.returns_list:
            result = [np.full(np.shape(a), value) for a in case.arrays[spec.grad_names[0]]]
        else:
            grads = [
                None if case.arrays[name] is None else np.full(np.shape(case.arrays[name]), value)
                for name in spec.grad_names
            ]
            result = tuple(grads) if len(grads) > 1 else grads[0]
        if spec.judge(case, result, rng=given_rng(SECRET, case)).passed:
            passed.append(case.name)
    assert passed == []
