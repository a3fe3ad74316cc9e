"""The 05_engine checks: graph traversal judged by numerical gradients, training by accuracy."""

from __future__ import annotations

import numpy as np
import pytest

import gradcheck_kit
from gradcheck_kit import engine
from gradcheck_kit.check import call_on_case, run_cases

from .conftest import load_definitions, solution_path

#: Wrong traversals students write, each with a structure that must catch it.
WRONG = {
    "overwrite instead of add": (
        "diamond",
        """
def backward(loss):
    order, seen = [], set()
    def visit(node):
        if node not in seen:
            seen.add(node)
            for parent in node.parents:
                visit(parent)
            order.append(node)
    visit(loss)
    loss.grad = np.ones_like(loss.value)
    for node in reversed(order):
        if node.vjp is not None:
            for parent, grad in zip(node.parents, node.vjp(node.grad)):
                parent.grad = grad
""",
    ),
    "breadth-first order": (
        "paths of unequal depth",
        """
def backward(loss):
    loss.grad = np.ones_like(loss.value)
    queue, done = [loss], set()
    while queue:
        node = queue.pop(0)
        if node in done or node.vjp is None:
            continue
        done.add(node)
        for parent, grad in zip(node.parents, node.vjp(node.grad)):
            parent.grad = grad if parent.grad is None else parent.grad + grad
            queue.append(parent)
""",
    ),
    "one vjp call per path": (
        "shared intermediate node",
        """
def backward(loss):
    loss.grad = np.ones_like(loss.value)
    def push(node):
        if node.vjp is not None:
            for parent, grad in zip(node.parents, node.vjp(node.grad)):
                parent.grad = grad if parent.grad is None else parent.grad + grad
                push(parent)
    push(loss)
""",
    ),
}


@pytest.fixture(scope="module")
def notebook():
    return load_definitions(solution_path("05_engine"))


def test_ops_are_registered_for_05():
    assert {op.name for op in gradcheck_kit.all_ops("05_engine")} == {"backward", "train_mlp"}
    assert gradcheck_kit.get_op("backward").assignment == "05_engine"


@pytest.mark.parametrize("mistake", sorted(WRONG))
def test_wrong_traversals_fail_where_expected(notebook, mistake):
    structure, source = WRONG[mistake]
    namespace = dict(notebook)
    exec(source, namespace)
    spec = gradcheck_kit.get_op("backward")
    for hidden in (False, True):
        result = run_cases(namespace["backward"], spec, spec.cases(hidden, "s"))
        failed = {c.name: c for c in result.cases if not c.passed}
        name = f"hidden: {structure}" if hidden else structure
        assert name in failed, (mistake, sorted(failed))
        assert failed[name].hint == "graph"


def test_check_runs_the_adapter_with_the_notebook_globals(notebook):
    result = gradcheck_kit.check(notebook["backward"], show=False)
    assert result.passed and len(result.cases) >= 9


def test_a_missing_node_class_is_reported_not_raised():
    namespace: dict = {}
    exec("def backward(loss):\n    pass\n", namespace)
    result = gradcheck_kit.check(namespace["backward"], show=False)
    assert not result.passed and result.cases[0].hint == "exception"
    assert "Node" in result.cases[0].message


def test_leaf_off_the_path_must_get_no_gradient(notebook):
    spec = gradcheck_kit.get_op("backward")
    case = next(c for c in spec.cases() if c.name.startswith("unused"))
    result, error, _ = call_on_case(notebook["backward"], spec, case)
    assert error is None and np.all(result[-1] == 0)
    polluted = [g.copy() for g in result]
    polluted[-1] = polluted[-1] + 1.0
    assert not spec.judge(case, polluted).passed
    assert spec.judge(case, result).passed


def test_cases_are_plain_data_and_seeded():
    spec = gradcheck_kit.get_op("backward")
    first, again = spec.cases(True, "a"), spec.cases(True, "a")
    other = spec.cases(True, "b")

    def values(cases):
        return [n["value"] for c in cases for n in c.arrays["graph"]["nodes"] if "value" in n]

    assert all(np.array_equal(x, y) for x, y in zip(values(first), values(again)))
    assert not all(np.array_equal(x, y) for x, y in zip(values(first), values(other)))
    for case in first:
        graph = case.arrays["graph"]
        assert set(graph) == {"nodes", "loss", "leaves"}
        for node in graph["nodes"]:
            assert all(isinstance(k, str) for k in node)


def test_training_judge_uses_its_own_forward(notebook):
    spec = gradcheck_kit.get_op("train_mlp")
    case = spec.cases()[0]
    trained, error, _ = call_on_case(notebook["train_mlp"], spec, case)
    assert error is None and spec.judge(case, trained).passed
    zeros = [[np.zeros_like(p) for p in params] for params in trained]
    verdict = spec.judge(case, zeros)
    assert not verdict.passed and verdict.hint == "accuracy"
    first, renamed = trained
    wrong_shape = [[first[0].T, *first[1:]], renamed]
    assert spec.judge(case, wrong_shape).hint == "shape"
    assert spec.judge(case, [first, [renamed[0].T, *renamed[1:]]]).hint == "shape"
    # fresh points of the same task, never seen by the grader's cases
    X, y, y_renamed = task_of(case).points(200, seed=7)
    assert engine.mlp_accuracy(first, X, y) >= engine.TARGET_ACCURACY
    assert engine.mlp_accuracy(renamed, X, y_renamed) >= engine.TARGET_ACCURACY


def task_of(case) -> engine.SpiralTask:
    return engine.SpiralTask(**case.params["task"])


def test_training_accepts_a_dict_of_parameters(notebook):
    namespace = dict(notebook)
    exec(
        "_tuple_version = train_mlp\n"
        "def train_mlp(X, y, hidden=32, steps=300, lr=1.0, seed=0):\n"
        "    W1, b1, W2, b2 = _tuple_version(X, y, hidden, steps, lr, seed)\n"
        "    return {'W1': W1, 'b1': b1, 'W2': W2, 'b2': b2}\n",
        namespace,
    )
    result = gradcheck_kit.check(namespace["train_mlp"], show=False)
    assert result.passed


def test_notebook_data_matches_the_graders(notebook):
    for seed in (0, 5):
        X, y = notebook["make_spirals"](100, seed=seed)
        X2, y2 = engine.make_spirals(100, seed=seed)
        assert np.array_equal(X, X2) and np.array_equal(y, y2)


SECRETS = ("a", "b", "term 2", "0x5eed", "instructor", "another one")


def _training_cases() -> list:
    spec = gradcheck_kit.get_op("train_mlp")
    return spec.cases() + [c for s in SECRETS for c in spec.cases(True, s)]


def test_training_passes_every_task_and_fixed_parameters_pass_none(notebook):
    spec = gradcheck_kit.get_op("train_mlp")
    for case in _training_cases():
        trained, error, mutated = call_on_case(notebook["train_mlp"], spec, case)
        assert error is None and not mutated
        verdict = spec.judge(case, trained)
        assert verdict.passed, (case.name, verdict.message)
        # the best a function that ignores its data can do: return, both times, the
        # parameters trained on one of the two labellings
        for fixed in trained:
            verdict = spec.judge(case, [fixed, fixed])
            assert not verdict.passed and verdict.hint == "ignores-data", (case.name, verdict)


def test_an_undertrained_network_is_told_to_train_better_not_accused(notebook):
    spec = gradcheck_kit.get_op("train_mlp")
    case = spec.cases()[0]
    X, y, renamed = (case.arrays[k] for k in ("X", "y", "renamed"))
    short = notebook["train_mlp"](X, renamed, steps=40)
    assert (
        1 - engine.TARGET_ACCURACY
        < engine.mlp_accuracy(short, case.arrays["X_test"], case.arrays["renamed_test"])
        < engine.TARGET_ACCURACY
    )
    verdict = spec.judge(case, [notebook["train_mlp"](X, y), short])
    assert not verdict.passed and verdict.hint == "accuracy", verdict


def test_hidden_tasks_change_with_the_secret_and_the_public_one_does_not():
    spec = gradcheck_kit.get_op("train_mlp")
    public, again = spec.cases()[0], spec.cases()[0]
    assert public.name == again.name and np.array_equal(public.arrays["X"], again.arrays["X"])
    tasks = [task_of(c) for s in SECRETS for c in spec.cases(True, s)]
    assert tasks == [task_of(c) for s in SECRETS for c in spec.cases(True, s)]
    assert len({t.degrees for t in tasks}) == len(tasks)
    assert {t.mirrored for t in tasks} == {True, False}
    assert len({t.labels for t in tasks}) >= 3
    for task in tasks + [task_of(spec.cases()[0])]:
        assert sorted(task.labels) == sorted(task.renamed) == [0, 1, 2]
        assert all(a != b for a, b in zip(task.labels, task.renamed))


def test_a_task_is_the_notebooks_spirals_seen_another_way():
    X, arm = engine.make_spirals(100, seed=3)
    for case in _training_cases():
        task = task_of(case)
        turned, labels, renamed = task.points(100, seed=3)
        # every distance and every arm kept: the same learning problem
        assert np.allclose(np.linalg.norm(turned, axis=1), np.linalg.norm(X, axis=1))
        assert np.allclose(turned @ turned.T, X @ X.T)
        assert np.array_equal(labels, np.array(task.labels)[arm])
        assert np.array_equal(renamed, np.array(task.renamed)[arm])


def test_check_tells_a_student_that_pasted_parameters_fail(notebook):
    spec = gradcheck_kit.get_op("train_mlp")
    public = spec.cases()[0]
    for X, y in (engine.make_spirals(100, seed=0), (public.arrays["X"], public.arrays["y"])):
        namespace = dict(notebook)
        namespace["_PASTED"] = notebook["train_mlp"](X, y)
        exec(
            "def train_mlp(X, y, hidden=32, steps=300, lr=1.0, seed=0):\n    return _PASTED\n",
            namespace,
        )
        result = gradcheck_kit.check(namespace["train_mlp"], show=False)
        assert not result.passed and result.score == 0
        assert result.cases[0].hint in ("ignores-data", "accuracy"), result.cases[0]
        assert "renamed" in result.cases[0].message
