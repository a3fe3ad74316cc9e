import numpy as np
import pytest

from gradcheck_kit import get_op
from gradcheck_kit.check import run_cases


def grade(name: str, fn, secret: str = "tests"):
    """Run ``fn`` on the public and hidden cases of op ``name``."""
    spec = get_op(name)
    return run_cases(fn, spec, spec.cases() + spec.cases(hidden=True, secret=secret))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
