"""Reading a transcript back: parse and structure-check its lines, read its sidecar.

:func:`load` only parses (canonical form, format and version of record 0); the hash
chain, signatures and outcome are verified by :mod:`federation.audit`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from federation.transcript.records import FORMAT, VERSION, TranscriptError, canonical, sha256_hex


@dataclass
class Transcript:
    """A parsed transcript (structure only; :mod:`federation.audit` verifies it)."""

    path: Path
    lines: list[bytes]
    records: list[dict]
    #: trailing export records after the outcome (:mod:`.exports`), and their lines
    exports: list[dict] = field(default_factory=list)
    export_lines: list[bytes] = field(default_factory=list)

    @property
    def header(self) -> dict:
        return self.records[0]

    @property
    def job_id(self) -> str:
        return self.header["job_id"]

    @property
    def party(self) -> str:
        return self.header["party"]

    @property
    def peer(self) -> str:
        return self.header["peer"]

    def messages(self, direction: str | None = None) -> list[dict]:
        return [r for r in self.records if r.get("type") == "msg"
                and (direction is None or r.get("dir") == direction)]

    @property
    def closing(self) -> dict | None:
        last = self.records[-1]
        return last if last.get("type") in ("outcome", "abort") else None


class TranscriptUnreadable(TranscriptError):
    """The file cannot be read as a transcript at all (exit code 2)."""


class RecordMalformed(TranscriptError):
    """A line in the middle of the file is not a canonical record (exit code 1)."""

    def __init__(self, index: int, msg: str):
        super().__init__(f"record {index}: {msg}")
        self.index = index


def load(path: str | Path) -> Transcript:
    """Parse a transcript. Raises TranscriptUnreadable (missing, empty, truncated, not
    a transcript, unknown version) or RecordMalformed (a line was modified)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TranscriptUnreadable(f"{path}: cannot read transcript ({exc.strerror})") from None
    if not raw:
        raise TranscriptUnreadable(f"{path}: empty file, not a transcript")
    parts = raw.split(b"\n")
    tail = parts.pop()
    records: list[dict] = []
    for i, line in enumerate(parts):
        rec = _parse_line(path, i, line)
        if i == 0:
            _check_header_format(path, rec)
        records.append(rec)
    if tail:
        # the last line has no newline: the file was cut while being written (or the
        # final byte changed). Say which record is incomplete.
        raise TranscriptUnreadable(
            f"{path}: truncated: record {len(parts)} is incomplete (no end of line); "
            f"{len(parts)} complete record(s) before it")
    k = len(records)
    while k > 1 and records[k - 1].get("type") == "export":
        k -= 1
    return Transcript(path, parts[:k], records[:k], records[k:], parts[k:])


def _parse_line(path: Path, i: int, line: bytes) -> dict:
    try:
        rec = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: JSONDecodeError, or an integer beyond Python's digit limit;
        # RecursionError: a line nested thousands deep (both found by fuzzing)
        if i == 0:
            raise TranscriptUnreadable(f"{path}: record 0 is not JSON: not a fedjoint "
                                       "transcript, or its first line is damaged") from None
        raise RecordMalformed(i, f"not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(rec, dict):
        raise RecordMalformed(i, "not a JSON object")
    try:
        again = canonical(rec)
    except (ValueError, RecursionError):
        again = b""
    if again != line:
        raise RecordMalformed(i, "not in canonical form (the line was modified)")
    return rec


def _check_header_format(path: Path, rec: dict) -> None:
    if rec.get("format") != FORMAT or rec.get("type") != "job":
        raise TranscriptUnreadable(f"{path}: not a fedjoint transcript (record 0 has no "
                                   f"format {FORMAT!r})")
    if rec.get("v") != VERSION:
        raise TranscriptUnreadable(f"{path}: transcript format version {rec.get('v')!r} is "
                                   f"not supported (this fedjoint reads version {VERSION})")


class SidecarReader:
    """Reads received payloads back from a transcript's sidecar, checking digests."""

    def __init__(self, path: str | Path, keep: str | None = None):
        """``keep``: the job record's ``storage.keep`` (the writer's retention policy),
        named in the error when the sidecar is gone."""
        self.path = Path(path)
        try:
            self._fh = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            why = ""
            if keep:
                why = (f"; the node keeps received payloads under [transcript] "
                       f"keep_received = {keep!r}, so it was deleted when the job closed "
                       "or aged out")
            raise TranscriptUnreadable(
                f"{self.path}: received-payload sidecar not readable ({exc.strerror}){why}; "
                "replay needs the payloads this party received: its sidecar next to the "
                "transcript (`audit verify` needs no sidecar)") from None

    def read(self, rec: dict) -> bytes | None:
        """The payload of a received message record, or None if it is missing or does
        not match the recorded digest."""
        at, n = rec.get("at"), rec.get("len")
        if not isinstance(at, int) or not isinstance(n, int) or at < 0 or n < 0:
            return None
        self._fh.seek(at)
        data = self._fh.read(n)
        if len(data) != n or sha256_hex(data) != rec.get("sha256"):
            return None
        return data

    def close(self) -> None:
        self._fh.close()
