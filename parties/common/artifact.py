"""Model parts: what each party stores after training.

A model part is one party's share of a jointly trained model: JSON-serialisable
``body`` (weights, its own thresholds, standardisation...) plus identifying metadata.
Neither part alone predicts. Its digest (SHA-256 of the canonical JSON) is what the
transcript's final record binds and what the peer's part records as a fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

FORMAT = "fedjoint-model-part-v1"


@dataclass
class ModelPart:
    algorithm: str          # "secureboost" | "logistic_regression"
    party: str              # "bank" | "platform"
    job_id: str
    params: dict
    body: dict
    feature_names: list[str] = field(default_factory=list)
    peer_part_digest: str = ""  # filled once both parts exist

    def categories(self) -> dict[str, list]:
        """The levels of this part's categorical features (``body["categories"]``, as the
        loader mapped them at training): scoring maps new rows with the same lists."""
        return dict(self.body.get("categories") or {})

    def canonical(self) -> bytes:
        return json.dumps({"format": FORMAT, **asdict(self)}, sort_keys=True,
                          separators=(",", ":"), allow_nan=False).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def save(self, path: str | Path) -> str:
        """Write the part (mode 0600) and return its digest."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.canonical())
        return self.digest()

    @classmethod
    def load(cls, path: str | Path) -> ModelPart:
        path = Path(path)
        try:
            obj = json.loads(path.read_bytes())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable model part ({exc})") from None
        if obj.pop("format", None) != FORMAT:
            raise ValueError(f"{path}: unknown model format (expected {FORMAT})")
        try:
            return cls(**obj)
        except TypeError as exc:
            raise ValueError(f"{path}: malformed model part ({exc})") from None


@dataclass
class TrainOutcome:
    """What a training role returns to the job runner."""

    model: ModelPart
    metrics: dict = field(default_factory=dict)   # final metrics (bank only has labels)
    history: list[dict] = field(default_factory=list)  # per epoch / per tree
    timings: dict = field(default_factory=dict)   # seconds per phase
