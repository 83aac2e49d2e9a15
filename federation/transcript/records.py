"""Transcript format constants, canonical encoding, hashing and signatures.

Everything both the writer and the auditor must compute identically lives here: the
canonical JSON of a record, the bytes each record and outcome statement is signed
over, the running root over a direction's envelopes, and the checks of an outcome
statement. No I/O beyond naming the sidecar file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from federation.link import Envelope, declare_disclosures

FORMAT = "fedjoint-transcript"
VERSION = 2  # v2: outcome statements sign the disclosures each party received
ZERO_HASH = "0" * 64
RECORD_DOMAIN = b"fedjoint-transcript-v1\n"
STATEMENT_DOMAIN = b"fedjoint-outcome-v1\n"
OUTCOME_KIND = "job.outcome"
#: the first message of a resumed run, each side's confirmation of the checkpoint both
#: roll back to (federation.job_protocol)
RESUME_KIND = "job.resume"
#: Message kinds exchanged by the node around the per-party pipeline (the outcome
#: statements, the resume confirmations). They are recorded and verified like any other
#: message, but replay does not feed or expect them: everything else in the transcript
#: is the pipeline's.
NOT_REPLAYED = frozenset({OUTCOME_KIND, RESUME_KIND})
SIDECAR_SUFFIX = ".recv"
DIRECTIONS = ("sent", "received")


class TranscriptError(Exception):
    """A transcript could not be written or read as asked."""


# --------------------------------------------------------------------------- helpers


def canonical(obj: Any) -> bytes:
    """The one JSON serialisation used for records, statements and specs."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def spec_digest(spec: dict) -> str:
    """Digest of a job spec given as a JSON-able dict (canonical JSON)."""
    return sha256_hex(canonical(spec))


def public_key_bytes(key: Ed25519PublicKey | Ed25519PrivateKey | bytes | str) -> bytes:
    """Raw 32-byte Ed25519 public key from a key object, raw bytes or hex."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    if isinstance(key, Ed25519PublicKey):
        return key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    if isinstance(key, str):
        try:
            key = bytes.fromhex(key)
        except ValueError:
            raise TranscriptError("public key must be 64 hex characters") from None
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return bytes(key)
    raise TranscriptError("an Ed25519 public key must be 32 raw bytes")


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey | bytes | str) -> str:
    """SHA-256 (hex) of the raw Ed25519 public key."""
    return sha256_hex(public_key_bytes(key))


def verify_sig(public_hex: str, sig_hex: str, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(
            bytes.fromhex(sig_hex), message)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def record_signing_bytes(record: dict) -> bytes:
    """What the writer signs for every record: all its fields but ``rsig``."""
    return RECORD_DOMAIN + canonical({k: v for k, v in record.items() if k != "rsig"})


def statement_signing_bytes(stmt: dict) -> bytes:
    return STATEMENT_DOMAIN + canonical({k: v for k, v in stmt.items() if k != "sig"})


def envelope_leaf(env: Envelope) -> bytes:
    return hashlib.sha256(env.signing_bytes() + env.signature).digest()


class RunningRoot:
    """Running digest over the envelopes of one direction: r_k = H(r_{k-1} || leaf_k)."""

    def __init__(self) -> None:
        self.n = 0
        self._h = bytes(32)

    def add(self, env: Envelope) -> None:
        self._h = hashlib.sha256(self._h + envelope_leaf(env)).digest()
        self.n += 1

    @property
    def root(self) -> str:
        return self._h.hex()


def counts_in_roots(kind: str) -> bool:
    """Outcome messages are exchanged after the statements are made: not in the roots."""
    return kind != OUTCOME_KIND


declare_disclosures({"job.outcome": ("model-part digest", lambda p: 1)})


def sidecar_path(transcript: str | Path) -> Path:
    transcript = Path(transcript)
    return transcript.with_name(transcript.name + SIDECAR_SUFFIX)


def check_statement(stmt: Any, *, job_id: str, party: str, key_hex: str) -> str | None:
    """None if ``stmt`` is a well-formed outcome statement of ``party`` for ``job_id``
    signed by ``key_hex``; otherwise what is wrong."""
    if not isinstance(stmt, dict):
        return "outcome statement is not an object"
    try:
        disclosed = stmt.get("disclosed")
        ok_shape = (set(stmt) == {"job_id", "party", "model_digest", "sent", "received",
                                  "disclosed", "sig"}
                    and isinstance(disclosed, dict)
                    and all(isinstance(k, str) and isinstance(v, int) and v >= 0
                            for k, v in disclosed.items())
                    and all(isinstance(stmt[d], dict) and set(stmt[d]) == {"n", "root"}
                            and isinstance(stmt[d]["n"], int) and isinstance(stmt[d]["root"], str)
                            for d in DIRECTIONS)
                    and isinstance(stmt["model_digest"], str) and isinstance(stmt["sig"], str))
    except TypeError:
        ok_shape = False
    if not ok_shape:
        return "outcome statement is malformed"
    if stmt["job_id"] != job_id:
        return f"outcome statement is for job {stmt['job_id']!r}, not {job_id!r}"
    if stmt["party"] != party:
        return f"outcome statement is from {stmt['party']!r}, expected {party!r}"
    if not verify_sig(key_hex, stmt["sig"], statement_signing_bytes(stmt)):
        return f"{party}'s signature on its outcome statement does not verify"
    return None
