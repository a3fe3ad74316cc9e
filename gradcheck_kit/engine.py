"""05_engine: the graph traversal ``backward(loss)`` and training with it (``train_mlp``).

Neither check needs a reference implementation of what the student writes:

* ``backward`` is run on small graphs described as plain data. The adapter (run next
  to the student's code, with only NumPy) builds the graph with the notebook's ``Node``
  class, calls ``backward(loss)`` and returns the leaves' ``.grad``. The judge compares
  them with central differences of the graph's forward.
* ``train_mlp`` is trained twice on a training set, the second time with the classes
  renamed; the judge computes the test accuracy of both returned parameter sets with its
  own forward pass.

A graph description is ``{"nodes": [...], "loss": index, "leaves": [indices]}``; each
node record is one of

* ``{"kind": "leaf", "value": array}``
* ``{"kind": "linear", "parents": [i, ...], "matrices": [A, ...]}``: ``sum_k A_k @ parent_k``
* ``{"kind": "mul", "parents": [i, j]}``: ``parent_i * parent_j`` (``i == j`` allowed)
* ``{"kind": "dot", "parents": [i], "weights": w}``: ``w @ parent_i``, a 0-d loss
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .cases import Case, case_rng
from .numerical import Leaf, full_gradient
from .registry import register
from .verdict import CaseResult

A = "05_engine"

_GRAPH_ADAPTER = '''
import numpy as _np


def adapt(fn, graph):
    """Build ``graph`` with the notebook's Node class, run fn(loss), return the leaves' grads."""
    nodes = []
    for index, record in enumerate(graph["nodes"]):
        kind = record["kind"]
        if kind == "leaf":
            nodes.append(Node(_np.array(record["value"], dtype=float), name=f"x{index}"))
            continue
        parents = [nodes[i] for i in record["parents"]]
        if kind == "linear":
            mats = [_np.array(m, dtype=float) for m in record["matrices"]]
            value = sum(m @ p.value for m, p in zip(mats, parents))
            vjp = (lambda mats: lambda g: [m.T @ g for m in mats])(mats)
        elif kind == "mul":
            left, right = parents[0].value.copy(), parents[1].value.copy()
            value = left * right
            vjp = (lambda left, right: lambda g: [g * right, g * left])(left, right)
        else:  # "dot": the scalar loss
            weights = _np.array(record["weights"], dtype=float)
            value = _np.asarray(weights @ parents[0].value)
            vjp = (lambda weights: lambda g: [g * weights])(weights)
        nodes.append(Node(value, parents=parents, vjp=vjp, name=f"n{index}"))
    fn(nodes[graph["loss"]])
    grads = []
    for i in graph["leaves"]:
        grad = nodes[i].grad
        value = nodes[i].value
        grads.append(_np.zeros_like(value) if grad is None else _np.asarray(grad, dtype=float))
    return grads
'''


def graph_forward(graph: dict, leaf_values: dict[int, np.ndarray]) -> float:
    """The loss of ``graph`` with the given leaf values (the judge's own forward)."""
    values: dict[int, np.ndarray] = {}
    for index, record in enumerate(graph["nodes"]):
        kind = record["kind"]
        if kind == "leaf":
            values[index] = np.asarray(leaf_values.get(index, record["value"]), dtype=float)
        elif kind == "linear":
            values[index] = sum(
                np.asarray(m) @ values[p] for m, p in zip(record["matrices"], record["parents"])
            )
        elif kind == "mul":
            first, second = record["parents"]
            values[index] = values[first] * values[second]
        elif kind == "dot":
            values[index] = np.asarray(np.asarray(record["weights"]) @ values[record["parents"][0]])
        else:
            raise ValueError(f"unknown node kind {kind!r}")
        if index == graph["loss"]:
            return float(values[index])
    raise ValueError("the loss index is past the last node")


class _GraphBuilder:
    """Helps write graphs by hand: each method appends a node and returns its index."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.nodes, self.sizes = rng, [], []

    def leaf(self, size: int) -> int:
        self.nodes.append({"kind": "leaf", "value": self.rng.standard_normal(size)})
        self.sizes.append(size)
        return len(self.nodes) - 1

    def linear(self, *parents: int, size: int | None = None) -> int:
        size = size or int(self.rng.integers(1, 5))
        matrices = [
            self.rng.standard_normal((size, self.sizes[p])) / np.sqrt(self.sizes[p])
            for p in parents
        ]
        self.nodes.append({"kind": "linear", "parents": list(parents), "matrices": matrices})
        self.sizes.append(size)
        return len(self.nodes) - 1

    def mul(self, first: int, second: int) -> int:
        if self.sizes[first] != self.sizes[second]:
            second = self.linear(second, size=self.sizes[first])
        self.nodes.append({"kind": "mul", "parents": [first, second]})
        self.sizes.append(self.sizes[first])
        return len(self.nodes) - 1

    def loss(self, parent: int) -> int:
        weights = self.rng.standard_normal(self.sizes[parent])
        self.nodes.append({"kind": "dot", "parents": [parent], "weights": weights})
        self.sizes.append(0)
        return len(self.nodes) - 1

    def graph(self, loss: int) -> dict:
        leaves = [i for i, n in enumerate(self.nodes) if n["kind"] == "leaf"]
        return {"nodes": self.nodes, "loss": loss, "leaves": leaves}


def _chain(b: _GraphBuilder) -> int:
    x = b.leaf(3)
    return b.loss(b.linear(b.linear(x)))


def _same_parent_twice(b: _GraphBuilder) -> int:
    x = b.leaf(3)
    return b.loss(b.mul(x, x))


def _diamond(b: _GraphBuilder) -> int:
    x = b.leaf(3)
    left, right = b.linear(x, size=2), b.linear(x, size=2)
    return b.loss(b.mul(left, right))


def _unequal_depth(b: _GraphBuilder) -> int:
    x = b.leaf(2)
    h = b.linear(x, size=3)
    deep = h
    for _ in range(5):
        deep = b.linear(deep)
    # h reaches the loss directly and through five nodes: its gradient is complete only
    # after the long path is done
    return b.loss(b.linear(deep, h))


def _shared_intermediate(b: _GraphBuilder) -> int:
    x, y = b.leaf(3), b.leaf(2)
    h = b.linear(x, y, size=3)
    a, c = b.mul(h, x), b.linear(h)
    return b.loss(b.linear(a, c, h))


def _unused_consumers(b: _GraphBuilder) -> int:
    x, z = b.leaf(3), b.leaf(2)
    h = b.linear(x)
    b.linear(h, z)  # consumes h and z, but the loss does not use it
    b.mul(x, x)  # consumes x, unused
    loss = b.loss(b.linear(h))
    b.linear(h)  # a consumer created after the loss
    return loss


def _random_graph(b: _GraphBuilder) -> int:
    rng = b.rng
    for _ in range(int(rng.integers(2, 4))):
        b.leaf(int(rng.integers(1, 5)))
    for _ in range(int(rng.integers(5, 10))):
        count = len(b.nodes)
        if rng.random() < 0.3:
            b.mul(_pick(rng, count), _pick(rng, count))
        else:
            parents = sorted({_pick(rng, count) for _ in range(int(rng.integers(1, 4)))})
            b.linear(*parents)
    last = len(b.nodes) - 1
    return b.loss(b.linear(last, int(rng.integers(0, last))))


def _pick(rng: np.random.Generator, count: int) -> int:
    """A node index, favouring recent nodes (long paths) but reusing old ones (sharing)."""
    return int(count - 1 - min(int(rng.geometric(0.35)) - 1, count - 1))


_STRUCTURES = [
    ("chain", _chain),
    ("same parent twice (x * x)", _same_parent_twice),
    ("diamond", _diamond),
    ("paths of unequal depth", _unequal_depth),
    ("shared intermediate node", _shared_intermediate),
    ("unused consumers and a leaf off the path", _unused_consumers),
]


@dataclass
class GraphCheck:
    """The check of ``backward(loss)``: leaf gradients on small graphs."""

    name: str = "backward"
    assignment: str = A
    points: float = 6.0
    adapter: str | None = _GRAPH_ADAPTER
    description: str = "backward(loss): reverse-mode traversal of a graph of Node objects"

    def cases(self, hidden: bool = False, secret: str | None = None) -> list[Case]:
        rng = case_rng(self.name, hidden, secret)
        plan = list(_STRUCTURES) + [("random graph", _random_graph)] * (6 if hidden else 3)
        cases = []
        for number, (label, make) in enumerate(plan, start=1):
            builder = _GraphBuilder(rng)
            graph = builder.graph(make(builder))
            family = "random" if make is _random_graph else "structure"
            name = label if family == "structure" else f"{label} #{number - len(_STRUCTURES)}"
            name = f"hidden: {name}" if hidden else name
            cases.append(
                Case(self.name, name, family, {"graph": graph}, {}, np.ones(()), hidden=hidden)
            )
        return cases

    def call_args(self, arrays: dict, output_grad: Any, params: dict) -> tuple:
        return (arrays["graph"],)

    def judge(self, case: Case, result: Any, error: str | None = None, mutated: bool = False,
              **details: Any) -> CaseResult:  # fmt: skip
        def verdict(passed: bool, hint: str | None = None, message: str = "", err=None):
            return CaseResult.of(case, passed, hint, message, err)

        if error is not None:
            return verdict(False, "exception", error)
        graph = case.arrays["graph"]
        leaves = graph["leaves"]
        if not isinstance(result, (list, tuple)) or len(result) != len(leaves):
            return verdict(False, "shape", "expected one gradient per leaf")
        arrays = {f"x{i}": np.asarray(graph["nodes"][i]["value"], dtype=float) for i in leaves}
        grads = []
        for i, item in zip(leaves, result):
            try:
                grad = np.asarray(item, dtype=float)
            except (TypeError, ValueError):
                return verdict(False, "shape", f"the .grad of leaf x{i} is not an array")
            if grad.shape != arrays[f"x{i}"].shape:
                return verdict(
                    False,
                    "shape",
                    f"leaf x{i} has shape {arrays[f'x{i}'].shape} but its .grad has shape "
                    f"{grad.shape}; a node's gradient has the shape of its value",
                )
            if not np.all(np.isfinite(grad)):
                return verdict(False, "nonfinite", f"the .grad of leaf x{i} is not finite")
            grads.append(grad)

        def loss(point: dict) -> float:
            return graph_forward(graph, {i: point[f"x{i}"] for i in leaves})

        numeric = full_gradient(loss, arrays, [Leaf(f"x{i}") for i in leaves])
        worst, wrong = 0.0, []
        for i, grad in zip(leaves, grads):
            expected = numeric[f"x{i}"]
            scale = 1e-5 * (np.abs(expected) + np.abs(grad)) + 1e-7
            ratio = float(np.max(np.abs(grad - expected) / scale, initial=0.0))
            worst = max(worst, ratio)
            if ratio > 1.0:
                wrong.append(f"x{i}")
        if not wrong:
            return verdict(True, err=worst * 1e-5)
        return verdict(False, "graph", _graph_hint(case, wrong), worst * 1e-5)


def _graph_hint(case: Case, wrong: list[str]) -> str:
    what = f"wrong gradient for leaf {', '.join(wrong)}. "
    if case.name.startswith("unused"):
        return what + (
            "Only nodes on a path to the loss get gradient; nodes that consume a value but "
            "do not lead to the loss must not send anything back."
        )
    return what + (
        "Check that a node used by several consumers gets the SUM of their gradients, and "
        "that a node passes its gradient to its parents only after every consumer has "
        "added its share (reverse topological order), exactly once."
    )


# --- training -------------------------------------------------------------------------------

#: What the notebook states: ``train_mlp`` with these settings reaches this test accuracy.
TRAIN_SETTINGS = {"hidden": 32, "steps": 300, "lr": 1.0}
TARGET_ACCURACY = 0.9
CLASSES = 3

_TRAIN_ADAPTER = '''
import numpy as _np


def adapt(fn, X, y, renamed, hidden, steps, lr, seed):
    """Train twice on the same points, with labels y and then with the classes renamed;
    return both parameter lists [W1, b1, W2, b2]."""
    return [
        _parameter_list(fn(X, labels, hidden=hidden, steps=steps, lr=lr, seed=seed))
        for labels in (y, renamed)
    ]


def _parameter_list(params):
    if isinstance(params, dict):
        params = [params.get(key) for key in ("W1", "b1", "W2", "b2")]
    return [None if p is None else _np.array(p, dtype=float) for p in params]
'''


def make_spirals(n_per_class: int = 100, classes: int = 3, noise: float = 0.15, seed: int = 0):
    """Points on ``classes`` interleaved spiral arms in 2-D: (X (n, 2), y (n,) ints)."""
    rng = np.random.default_rng(seed)
    radius = np.tile(np.linspace(0.15, 1.0, n_per_class), classes)
    label = np.repeat(np.arange(classes), n_per_class)
    angle = 2 * np.pi * label / classes + 1.75 * np.pi * radius
    angle = angle + noise * rng.standard_normal(radius.size)
    X = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return X, label


@dataclass(frozen=True)
class SpiralTask:
    """The notebook's spirals seen another way: mirrored (second coordinate negated) if
    ``mirrored``, then turned by ``degrees`` about the origin, arm ``k`` labelled
    ``labels[k]``, and ``renamed[k]`` in the second training of the same points.

    Turning and mirroring keep every distance, and the notebook's initialization is the
    same in every direction and for every class, so the task is exactly as hard as the
    notebook's own; but it changes with the secret, so parameters trained in advance
    cannot be ready for it. ``renamed`` differs from ``labels`` on every arm: on the same
    points, no single set of parameters can be right about both labellings.
    """

    degrees: float
    mirrored: bool
    labels: tuple[int, ...]
    renamed: tuple[int, ...]

    @classmethod
    def draw(cls, rng: np.random.Generator) -> SpiralTask:
        labels = rng.permutation(CLASSES)
        shift = int(rng.integers(1, CLASSES))  # a cyclic shift moves every class
        return cls(
            degrees=float(rng.uniform(0.0, 360.0)),
            mirrored=bool(rng.random() < 0.5),
            labels=tuple(int(k) for k in labels),
            renamed=tuple(int(k) for k in (labels + shift) % CLASSES),
        )

    def points(self, n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X, labels, renamed labels) of ``make_spirals(n_per_class, seed=seed)``."""
        X, arm = make_spirals(n_per_class, CLASSES, seed=seed)
        if self.mirrored:
            X = X * np.array([1.0, -1.0])
        turn = np.radians(self.degrees)
        rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
        return X @ rotation.T, np.array(self.labels)[arm], np.array(self.renamed)[arm]

    def describe(self) -> str:
        return f"turned {self.degrees:.0f} degrees" + (", mirrored" if self.mirrored else "")


def mlp_accuracy(params: list, X: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of ``relu(X @ W1.T + b1) @ W2.T + b2`` (the grader's own forward)."""
    W1, b1, W2, b2 = (np.asarray(p, dtype=float) for p in params)
    logits = np.maximum(X @ W1.T + b1, 0.0) @ W2.T + b2
    return float(np.mean(np.argmax(logits, axis=1) == y))


_TRAININGS = ("", " with the classes renamed")


@dataclass
class TrainingCheck:
    """The check of ``train_mlp``: the returned parameters classify held-out points.

    Each case is one :class:`SpiralTask` (drawn from the secret for hidden cases), and
    ``train_mlp`` is trained on it twice: with its labels, then on the same points with
    every class renamed. The case passes when both networks reach the target accuracy
    on held-out points labelled the same way. A function that returns the same
    parameters whatever it is given is right about at most one labelling of each test
    point, so it fails every case, public or hidden, under every secret.
    """

    name: str = "train_mlp"
    assignment: str = A
    points: float = 4.0
    adapter: str | None = _TRAIN_ADAPTER
    description: str = (
        f"train_mlp(X, y, hidden, steps, lr, seed) reaches {TARGET_ACCURACY:.0%} test accuracy"
    )

    def cases(self, hidden: bool = False, secret: str | None = None) -> list[Case]:
        rng = case_rng(self.name, hidden, secret)
        # the public case trains on the notebook's own points (seed 0), seen another way
        seeds = [int(s) for s in rng.integers(1, 2**31, size=2)] if hidden else [0]
        cases = []
        for seed in seeds:
            task = SpiralTask.draw(rng)
            X, y, renamed = task.points(100, seed)
            X_test, y_test, renamed_test = task.points(200, seed + 1)
            arrays = {
                "X": X,
                "y": y,
                "renamed": renamed,
                "X_test": X_test,
                "y_test": y_test,
                "renamed_test": renamed_test,
            }
            params = {**TRAIN_SETTINGS, "seed": seed % 1000, "task": asdict(task)}
            name = f"{'hidden: ' if hidden else ''}spirals {task.describe()}, data seed {seed}"
            cases.append(Case(self.name, name, "training", arrays, params, np.ones(()), hidden))
        return cases

    def call_args(self, arrays: dict, output_grad: Any, params: dict) -> tuple:
        p = {**TRAIN_SETTINGS, "seed": 0, **params}
        return (
            arrays["X"],
            arrays["y"],
            arrays["renamed"],
            p["hidden"],
            p["steps"],
            p["lr"],
            p["seed"],
        )

    def judge(self, case: Case, result: Any, error: str | None = None, mutated: bool = False,
              **details: Any) -> CaseResult:  # fmt: skip
        def verdict(passed: bool, hint: str | None = None, message: str = "", err=None):
            return CaseResult.of(case, passed, hint, message, err)

        if error is not None:
            return verdict(False, "exception", error)
        if mutated:
            return verdict(False, "mutated-input", "train_mlp modified X or y in place")
        if not isinstance(result, (list, tuple)) or len(result) != len(_TRAININGS):
            return verdict(False, "shape", "expected the parameters of both trainings")
        hidden, features = case.params["hidden"], case.arrays["X"].shape[1]
        shapes = [(hidden, features), (hidden,), (CLASSES, hidden), (CLASSES,)]
        for params, training in zip(result, _TRAININGS):
            if not isinstance(params, (list, tuple)) or len(params) != 4:
                return verdict(False, "shape", "return (W1, b1, W2, b2) or a dict with those keys")
            for label, item, shape in zip(("W1", "b1", "W2", "b2"), params, shapes):
                got = np.shape(item) if item is not None else None
                if got != shape:
                    return verdict(
                        False, "shape", f"{label} should have shape {shape}, got {got}{training}"
                    )
                if not np.all(np.isfinite(np.asarray(item, dtype=float))):
                    return verdict(
                        False, "nonfinite", f"{label} is not finite{training} (lr too large?)"
                    )
        X_test = case.arrays["X_test"]
        accuracies = [
            mlp_accuracy(list(params), X_test, case.arrays[labels])
            for params, labels in zip(result, ("y_test", "renamed_test"))
        ]
        message = (
            f"test accuracy {accuracies[0]:.1%}, and {accuracies[1]:.1%} with the classes "
            f"renamed (needs {TARGET_ACCURACY:.0%} on both)"
        )
        reached = [a >= TARGET_ACCURACY for a in accuracies]
        if all(reached):
            return verdict(True, message=message)
        if any(reached) and sum(accuracies) <= 1.0:
            # the bound for parameters that do not depend on the labels: right about at
            # most one of the two labels of each test point
            return verdict(
                False,
                "ignores-data",
                message + "; train_mlp must learn from the X and y it is given: the same "
                "points with other class numbers need other parameters",
            )
        return verdict(
            False,
            "accuracy",
            message + "; check the gradient sign, the 1/N of the mean loss, the initialization "
            "(weights too small train slowly) and that every parameter is updated",
        )


register(GraphCheck())
register(TrainingCheck())
