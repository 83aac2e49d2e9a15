"""The role contract: the one signature both roles of every algorithm implement.

The runner calls, for each party, the role module the registry names::

    train(ctx, data, params, cipher, policy) -> TrainOutcome      # kinds train, transform
    predict(ctx, model, X) -> np.ndarray | None                   # kinds train, score

* ``ctx`` - :class:`~federation.link.ProtocolContext` (link, per-job DRBG, workers, log,
  and ``ctx.checkpoint(step, state)``, which a training loop calls after each tree or
  epoch once that round's messages have all crossed, so the node can resume the job).
* ``data`` - :class:`PartyData`: this party's aligned training rows (``y`` only on the
  bank, and only when the algorithm needs labels) and its validation rows.
* ``params`` - the algorithm's typed params object, parsed once at the job boundary.
* ``cipher`` - this party's private cipher if the registry lists it as a key holder,
  else ``None``.
* ``policy`` - :class:`RolePolicy`: this node's key policy and data-use switches.

Bank returns probabilities (or values) from ``predict``; the platform answers the
bank's questions and returns ``None``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from parties.common.artifact import ModelPart
from secure_agg.keypolicy import KeyPolicy

#: required functions per algorithm kind, and their parameter names in order
ROLE_FUNCTIONS = {
    "train": ("train", "predict"),
    "transform": ("train",),
    "score": ("predict",),
}
SIGNATURES = {
    "train": ("ctx", "data", "params", "cipher", "policy"),
    "predict": ("ctx", "model", "X"),
}


@dataclass
class PartyData:
    """One party's rows as its role sees them (aligned to the peer's by PSI)."""

    X: np.ndarray
    feature_names: list[str]
    y: np.ndarray | None = None          # bank only, when the algorithm needs labels
    X_valid: np.ndarray | None = None    # validation rows (from the training rows)
    y_valid: np.ndarray | None = None
    #: multiclass labels: the class values in index order (y holds indices 0..K-1)
    classes: list | None = None
    #: categorical features: name -> sorted levels (X holds level indices, NaN missing);
    #: only for algorithms whose registry entry sets ``categorical``
    categories: dict[str, list] | None = None
    #: outputs of earlier stages this stage consumes (pipelines, or a job naming earlier
    #: jobs' outputs): input name (e.g. "binning", "selection") -> this party's ModelPart
    #: of that output; None when the stage takes no inputs
    inputs: dict[str, ModelPart] | None = None

    def __post_init__(self):
        if self.X_valid is not None and len(self.X_valid) == 0:
            self.X_valid, self.y_valid = None, None


@dataclass
class Scored:
    """What a bank ``predict`` may return instead of a bare array: ``p`` (the scores it
    would return) and ``columns``, more per-row outputs (name -> one JSON value per row,
    e.g. a scorecard's points and reason codes) that scoring results carry beside it."""

    p: np.ndarray
    columns: dict[str, list]


def scored_parts(result) -> tuple[np.ndarray | None, dict[str, list]]:
    """``(scores, extra columns)`` of a ``predict`` result (array, None or Scored)."""
    if isinstance(result, Scored):
        return result.p, dict(result.columns)
    return result, {}


@dataclass(frozen=True)
class RolePolicy:
    """This node's policy as protocol roles read it."""

    keys: KeyPolicy = field(default_factory=KeyPolicy)
    reveal_feature_names: bool = False   # platform: name its features to the bank
    share_importance: bool = True        # platform: per-feature importance to the bank
    refresh: str = "djn_full"            # platform: minimum SecureBoost refresh level
    max_classes: int = 64                # most classes a peer may announce (limits)
    categorical_tie_order: bool = True   # platform: order tied categorical levels


def insecure_test_policy() -> RolePolicy:
    """Plain cipher, OU and test keys allowed: for unit tests and benchmarks of one role
    pair, never a node's policy (a node's comes from its node.toml)."""
    return RolePolicy(keys=KeyPolicy(min_key_bits=256, max_key_bits=8192, allow_plain=True,
                                     allow_test_keys=True, allowed_ciphers=("paillier", "ou"),
                                     ou_min_key_bits=256, ou_max_key_bits=8192))


def check_role_module(module: ModuleType, kind: str, where: str) -> None:
    """Raise ``TypeError`` unless ``module`` has every function ``kind`` needs, with the
    contract's parameter names (checked once, at registration, not mid-job)."""
    for fn_name in ROLE_FUNCTIONS[kind]:
        fn = getattr(module, fn_name, None)
        if not callable(fn):
            raise TypeError(f"{where}: role module {module.__name__} has no function "
                            f"{fn_name}() (kind {kind!r} needs {ROLE_FUNCTIONS[kind]})")
        names = tuple(inspect.signature(fn).parameters)
        if names[:len(SIGNATURES[fn_name])] != SIGNATURES[fn_name] or \
                len(names) != len(SIGNATURES[fn_name]):
            raise TypeError(f"{where}: {module.__name__}.{fn_name}{names} does not match the "
                            f"role contract {fn_name}{SIGNATURES[fn_name]}")
