"""Scores: an op earns its points times the weighted fraction of its cases that pass
(``gradcheck_kit.verdict.score_cases``: cases whose right answer is all zeros count only
in proportion to the others)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: every status an op can end with
STATUSES = ("passed", "partial", "failed", "missing", "error", "timeout", "memory")


@dataclass
class OpGrade:
    name: str
    max_score: float
    score: float
    status: str
    cases: list[Any] = field(default_factory=list)  # gradcheck_kit CaseResult
    message: str = ""
    output: str = ""

    @classmethod
    def failed(cls, op: Any, status: str, message: str, output: str = "") -> OpGrade:
        """An op that earned nothing because it could not be run to the end."""
        return cls(op.name, float(op.points), 0.0, status, [], message, output)

    @property
    def first_failure(self) -> Any | None:
        return next((c for c in self.cases if not c.passed), None)


def score_op(op: Any, cases: list[Any], output: str = "") -> OpGrade:
    from gradcheck_kit.verdict import score_cases

    # rounded so that reports are stable across platforms' float summation
    score = round(float(op.points) * score_cases(cases), 4)
    if cases and all(c.passed for c in cases):
        status = "passed"
    elif score > 0:
        status = "partial"
    else:
        status = "failed"
    return OpGrade(op.name, float(op.points), score, status, list(cases), "", output)
