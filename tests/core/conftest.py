import numpy as np
import pytest

from gradcheck_kit import get_op
from gradcheck_kit.check import run_cases
from gradcheck_kit.efficiency import efficiency_case


def grade(name: str, fn, secret: str = "tests"):
    """Run ``fn`` on the public, hidden and efficiency cases of op ``name``."""
    spec = get_op(name)
    large = [c for c in [efficiency_case(spec)] if c is not None]
    return run_cases(fn, spec, spec.cases() + spec.cases(hidden=True, secret=secret) + large)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
