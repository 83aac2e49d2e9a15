"""Shared test harness. Support modules live in ``tests/support`` (never collected);
test folders mirror the packages (federation/, parties/, psi/, secure_agg/, fedjoint/)."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # `import support.x` from any test folder
    sys.path.insert(0, str(TESTS))
