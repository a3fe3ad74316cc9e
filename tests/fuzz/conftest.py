"""Hypothesis settings for the fuzz suite.

Two registered profiles: ``fuzz-ci`` (the default, bounded so the whole suite stays
under a minute) and ``fuzz-large`` (``GRADCHECK_FUZZ=large pytest tests/fuzz``, or the
``slow`` tests with ``pytest -m slow``). They are applied per test, never loaded
globally, so the rest of the suite keeps its own Hypothesis settings.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("fuzz-ci", max_examples=40, **_COMMON)
settings.register_profile("fuzz-large", max_examples=1000, **_COMMON)

LARGE = os.environ.get("GRADCHECK_FUZZ", "").lower() == "large"
#: in-process properties
FUZZ = settings.get_profile("fuzz-large" if LARGE else "fuzz-ci")
#: end-to-end properties: each example is a real ``gradcheck-grade`` run (about a second)
E2E = settings(FUZZ, max_examples=200 if LARGE else 8)
#: the slow-marked end-to-end run
E2E_SLOW = settings(FUZZ, max_examples=200)
