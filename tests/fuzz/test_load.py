"""The load benchmark as a test: a small batch in CI, the full 300 with ``-m slow``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "load_batch.py"


def _load_batch():
    spec = importlib.util.spec_from_file_location("load_batch", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _check(result: dict, count: int) -> None:
    assert result["completed"], result["stderr_tail"]
    assert result["rows"] == count
    assert result["alone_mismatches"] == []
    assert result["left_processes"] == [] and result["left_directories"] == []
    for kind, figures in result["kinds"].items():
        # every submission graded; a bad or hostile function costs only itself
        assert figures["graded"] == figures["others intact"] == figures["count"], kind
    assert result["kinds"]["correct"]["full marks"] == result["kinds"]["correct"]["count"]
    assert result["ok"]


def test_small_batch_with_hostile_submissions():
    module = _load_batch()
    args = module.parser().parse_args(["--count", "20", "--sample", "4", "--limit", "120"])
    result = module.run(args)
    _check(result, 20)
    assert {"hostile: infinite loop", "hostile: memory bomb"} <= set(result["kinds"])


@pytest.mark.slow
def test_full_batch_of_300():
    module = _load_batch()
    args = module.parser().parse_args(["--count", "300", "--sample", "20"])
    result = module.run(args)
    _check(result, 300)
    assert len([k for k in result["kinds"] if k.startswith("hostile")]) == 8
