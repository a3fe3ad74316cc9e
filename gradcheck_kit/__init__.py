"""gradcheck-kit: check hand-written backward functions against numerical gradients.

Public API:

- :func:`check` -- run the public cases of a student's backward function, show a table.
- :func:`declare_op`, :class:`OpSpec`, :func:`register`, :func:`get_op`, :func:`all_ops`
  -- the op registry (declare a new op with its forward and input domain).
- :func:`numerical_gradient` -- float64 central-difference gradients of any NumPy forward.
- :func:`generate_cases`, :func:`judge` -- the pieces the autograder is built from.
"""

from .cases import Case, generate_cases
from .check import CheckResult, check
from .domains import Distinct, Domain, Interleaved, Mask, Positive, Real
from .numerical import numerical_gradient
from .registry import OpSpec, all_ops, assignments, declare_op, get_op, register
from .verdict import CaseResult, judge

__all__ = [
    "Case",
    "CaseResult",
    "CheckResult",
    "Distinct",
    "Domain",
    "Interleaved",
    "Mask",
    "OpSpec",
    "Positive",
    "Real",
    "all_ops",
    "assignments",
    "check",
    "declare_op",
    "generate_cases",
    "get_op",
    "judge",
    "numerical_gradient",
    "register",
]
__version__ = "0.1.0"
