"""What a job's runner and its pipeline stages share (no algorithm, no protocol): the
job failure type, where model parts live and how a stored one is loaded, a part's
unbound digest, this side's aligned rows and column selection.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from federation.config import NodeConfig
from federation.data import Dataset
from parties.common.artifact import ModelPart


class JobFailed(Exception):
    """The job cannot continue; the message is the reason shown to the operator.
    ``peer_message``: what the peer's operator is told, when it must not be the full
    reason (it may name this party's columns); empty: the reason itself."""

    def __init__(self, message: str, peer_message: str = ""):
        super().__init__(message)
        self.peer_message = peer_message

    def __reduce__(self):   # keeps peer_message across the job process's pipe
        return type(self), (str(self), self.peer_message)


def models_dir(node: NodeConfig) -> Path:
    return Path(node.data_dir) / "models"


def model_path(node: NodeConfig, model_id: str) -> Path:
    return models_dir(node) / f"{model_id}.json"


@dataclass
class Rows:
    """This side's aligned rows of a training job: training, validation and test."""

    train: Dataset
    valid: Dataset
    test: Dataset


def load_model(node: NodeConfig, model_id: str) -> ModelPart:
    if not model_id or "/" in model_id or model_id.startswith("."):
        raise JobFailed(f"invalid model id {model_id!r}")
    path = model_path(node, model_id)
    if not path.exists():
        raise JobFailed(f"no model {model_id!r} on {node.name} (see `fedjoint model list`)")
    try:
        return ModelPart.load(path)
    except ValueError as exc:
        raise JobFailed(str(exc)) from None


def select_columns(data: Dataset, names: list[str], ds: str) -> Dataset:
    missing = [c for c in names if c not in data.feature_names]
    if missing:
        raise JobFailed(f"dataset {ds!r} lacks column(s) {missing} the model was trained on")
    idx = [data.feature_names.index(c) for c in names]
    return Dataset(data.name, data.ids, data.X[:, idx], list(names), data.y,
                   categories={c: v for c, v in data.categories.items() if c in names},
                   unseen={c: v for c, v in data.unseen.items() if c in names})


def unbound_digest(model: ModelPart) -> str:
    """Digest of a part before it was bound to its peer part (``peer_part_digest``
    empty): what the other part records as ``peer_part_digest``."""
    return replace(model, peer_part_digest="").digest()
