"""The ``[params]`` of a horizontal job (``horizontal_lr`` / ``horizontal_mlp``).

The aggregator sends these to every bank in the join message; every bank trains with
the same values. Parsed with :func:`parties.common.params.from_dict` (errors name the
key); :meth:`HorizontalParams.to_wire` / :meth:`from_wire` carry them as a flat
mapping of scalars (Flower's run config and ConfigRecord hold no nested tables).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import ClassVar

from parties.common.params import ParamError, from_dict

ALGORITHMS = ("horizontal_lr", "horizontal_mlp")
_JSON = ("hidden", "class_weight")


@dataclass(frozen=True)
class HorizontalParams:
    """``rounds`` federated rounds of ``local_epochs`` local passes each (minibatch
    Adam, ``learning_rate``, ``batch_size``); early stopping after ``patience`` rounds
    without a better validation loss (0: off); ``class_weight = "balanced"`` weighs
    the positive class by the federation's negatives/positives (from the first secure
    sum) or ``{"1": w}``; ``hidden`` are the MLP's hidden widths. ``secure_aggregation``
    (default on) masks every vector a bank sends (:mod:`secure_agg.secagg`);
    ``min_banks`` is the fewest banks a round may end with (and at least the SecAgg
    threshold, a majority); ``clip`` / ``bits`` quantise each coordinate.
    ``signed_rounds``: each bank signs its SecAgg keys with its fedjoint signing key and
    checks every other bank's against the keys its node.toml lists
    (``[horizontal.peers]``), so the aggregator cannot substitute keys.
    ``dp_noise_multiplier`` > 0: each bank trains with DP-SGD (Opacus: per-example
    gradients clipped to ``dp_max_grad_norm``, Gaussian noise of that multiple, Poisson
    sampling) and reports its epsilon at ``dp_delta`` (RDP accountant, over all rounds)."""

    rounds: int = 20
    local_epochs: int = 1
    learning_rate: float = 0.01
    batch_size: int = 256
    hidden: list = field(default_factory=lambda: [16])
    weight_decay: float = 0.0
    class_weight: object = None
    patience: int = 5
    valid_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    secure_aggregation: bool = True
    signed_rounds: bool = False
    min_banks: int = 2
    clip: float = 4.0
    bits: int = 24
    round_timeout: float = 600.0
    dp_noise_multiplier: float = 0.0
    dp_max_grad_norm: float = 1.0
    dp_delta: float = 1e-5

    REFUSED: ClassVar[dict] = {
        "optimizer": "local training is minibatch Adam (learning_rate, batch_size)",
    }

    def __post_init__(self):
        def need(ok: bool, key: str, what: str):
            if not ok:
                raise ParamError(f"params.{key} = {getattr(self, key)!r}: expected {what}")
        need(1 <= self.rounds <= 10_000, "rounds", "an integer in [1, 10000]")
        need(1 <= self.local_epochs <= 1000, "local_epochs", "an integer in [1, 1000]")
        need(0 < self.learning_rate <= 10, "learning_rate", "a number in (0, 10]")
        need(1 <= self.batch_size <= 1_000_000, "batch_size", "an integer in [1, 1e6]")
        need(isinstance(self.hidden, (list, tuple)) and 1 <= len(self.hidden) <= 4
             and all(isinstance(h, int) and 1 <= h <= 1024 for h in self.hidden),
             "hidden", "1 to 4 layer widths, integers in [1, 1024]")
        need(0 <= self.weight_decay <= 1, "weight_decay", "a number in [0, 1]")
        cw = self.class_weight
        need(cw is None or cw == "balanced" or (
            isinstance(cw, dict) and set(cw) <= {"0", "1"}
            and all(isinstance(v, (int, float)) and 0 < v <= 1e4 for v in cw.values())),
            "class_weight", 'none, "balanced" or {"1": w} with 0 < w <= 1e4')
        need(0 <= self.patience <= 10_000, "patience", "an integer >= 0 (0: off)")
        need(0 < self.valid_fraction < 0.5, "valid_fraction", "a number in (0, 0.5)")
        need(0 < self.test_fraction < 0.5, "test_fraction", "a number in (0, 0.5)")
        need(isinstance(self.secure_aggregation, bool), "secure_aggregation", "true/false")
        need(isinstance(self.signed_rounds, bool), "signed_rounds", "true/false")
        need(self.secure_aggregation or not self.signed_rounds, "signed_rounds",
             "false when secure_aggregation = false (only SecAgg rounds are signed)")
        need(2 <= self.min_banks <= 1000, "min_banks", "an integer in [2, 1000]")
        need(0 < self.clip <= 1e6, "clip", "a number in (0, 1e6]")
        need(8 <= self.bits <= 40, "bits", "an integer in [8, 40]")
        need(1 <= self.round_timeout <= 86_400, "round_timeout", "seconds in [1, 86400]")
        need(0 <= self.dp_noise_multiplier <= 100, "dp_noise_multiplier",
             "a number in [0, 100] (0: no differential privacy)")
        need(0 < self.dp_max_grad_norm <= 1e4, "dp_max_grad_norm", "a number in (0, 1e4]")
        need(0 < self.dp_delta < 0.1, "dp_delta", "a number in (0, 0.1)")

    @classmethod
    def parse(cls, values: dict, where: str = "params") -> HorizontalParams:
        return from_dict(cls, dict(values), where)

    def to_wire(self) -> dict:
        """A flat {str: str | int | float | bool} mapping (JSON for lists and dicts)."""
        return {k: json.dumps(v) if k in _JSON else v for k, v in asdict(self).items()}

    @classmethod
    def from_wire(cls, flat: dict) -> HorizontalParams:
        out = {}
        for k, v in flat.items():
            if k in _JSON:
                try:
                    v = json.loads(v)
                except (TypeError, ValueError):
                    raise ParamError(f"params.{k}: not JSON ({v!r})") from None
            out[k] = v
        return cls.parse(out, "join message params")
