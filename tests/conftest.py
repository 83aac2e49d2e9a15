"""Shared test harness. Support modules live in ``tests/support`` (never collected);
test folders mirror the packages (federation/, parties/, psi/, secure_agg/, fedjoint/)."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # `import support.x` from any test folder
    sys.path.insert(0, str(TESTS))

# Hypothesis: a short default run inside `make test`; `make fuzz` selects the long
# profile (HYPOTHESIS_PROFILE=long). docs/fuzzing.md lists the fuzzed decoders.
import os  # noqa: E402

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("fast", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))
