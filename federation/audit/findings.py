"""What every audit tool reports in: exit codes, findings, reports, "could not run".

Shared by :mod:`.verify`, :mod:`.replay` and the ``fedjoint audit`` commands, so a
finding names a transcript file and record the same way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_CANNOT_RUN = 0, 1, 2
MAX_ERRORS = 20
HEX64 = frozenset("0123456789abcdef")


class CannotRun(Exception):
    """The audit could not run (exit code 2): missing file, key, seed, sidecar..."""


@dataclass
class Finding:
    """One problem, tied to a transcript file and (when known) a record index."""

    where: str              # transcript file name (or "party dir", "pipeline")
    record: int | None
    message: str

    def __str__(self) -> str:
        at = f"{self.where} record {self.record}" if self.record is not None else self.where
        return f"{at}: {self.message}"


@dataclass
class Report:
    """What every audit tool returns: its verdict, exit code, findings and warnings
    (:class:`~federation.audit.verify.VerifyReport` and
    :class:`~federation.audit.replay.ReplayReport` add their own fields)."""

    ok: bool
    exit_code: int
    errors: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def first_bad(self) -> Finding | None:
        return self.errors[0] if self.errors else None

    def errors_json(self) -> list[dict]:
        return [{"where": e.where, "record": e.record, "message": e.message}
                for e in self.errors]


def is_hex(s: Any, n: int | None = None) -> bool:
    return (isinstance(s, str) and (n is None or len(s) == n) and len(s) % 2 == 0
            and set(s) <= HEX64)
