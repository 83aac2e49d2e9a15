"""The linear models' local optimiser (each party updates only its own weights:
sgd, momentum or Adam, then the L1 proximal step), their penalty and per-phase timers.
Nothing here crosses the wire."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


# ---- local optimiser (each party updates only its own weights) ---------------------------
@dataclass
class Optimizer:
    p: object  #: LRParams or LinRegParams
    size: int
    penalize: np.ndarray  # 1 for weights, 0 for the intercept
    t: int = 0
    m: np.ndarray = field(init=False)
    v: np.ndarray = field(init=False)

    def __post_init__(self):
        self.m = np.zeros(self.size)
        self.v = np.zeros(self.size)

    def step(self, w: np.ndarray, grad: np.ndarray, epoch: int) -> np.ndarray:
        p = self.p
        lr = p.learning_rate / (1.0 + p.decay * epoch)
        g = grad + p.l2 * self.penalize * w
        self.t += 1
        if p.optimizer == "sgd":
            w = w - lr * g
        elif p.optimizer == "momentum":
            self.m = p.momentum * self.m + g
            w = w - lr * self.m
        else:
            b1, b2 = p.momentum, 0.999
            self.m = b1 * self.m + (1 - b1) * g
            self.v = b2 * self.v + (1 - b2) * g * g
            mh = self.m / (1 - b1 ** self.t)
            vh = self.v / (1 - b2 ** self.t)
            w = w - lr * mh / (np.sqrt(vh) + 1e-8)
        if p.l1 > 0:
            thr = lr * p.l1 * self.penalize
            w = np.sign(w) * np.maximum(np.abs(w) - thr, 0.0)
        return w


def regularization(p, w: np.ndarray) -> float:
    """(reg_lambda/2)||w||^2 + reg_alpha ||w||_1 of this party's weights."""
    return 0.5 * p.l2 * float(w @ w) + p.l1 * float(np.abs(w).sum())



class Phases:
    """Seconds spent per protocol phase (reported in TrainOutcome.timings)."""

    def __init__(self):
        self.t: dict[str, float] = {}
        self._name = None
        self._start = 0.0

    def __call__(self, name: str) -> Phases:
        self._name = name
        return self

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.t[self._name] = self.t.get(self._name, 0.0) + time.perf_counter() - self._start
        return False

    def rounded(self) -> dict:
        return {f"phase.{k}": round(v, 4) for k, v in self.t.items()}
