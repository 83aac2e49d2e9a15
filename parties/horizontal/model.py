"""The torch models of horizontal jobs and the training every bank (and the central
reference) runs.

``horizontal_lr`` is logistic regression (one linear layer), ``horizontal_mlp`` a small
MLP (ReLU hidden layers, ``params.hidden``). Parameters travel as one flat float64
vector (:func:`get_flat` / :func:`set_flat`, the order of ``model.parameters()``), so
aggregation is a sum of vectors. Local training is minibatch Adam with binary
cross-entropy, the positive class weighted by ``pos_weight``; a fresh optimizer per
round (FedAvg's usual choice). :func:`train_central` is "the same torch model trained
centrally" on pooled rows, the reference the federated AUC is held to.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from parties.horizontal.params import ALGORITHMS, HorizontalParams

torch.set_num_threads(1)   # banks share cores; per-batch work is tiny


def build_model(algorithm: str, n_features: int, params: HorizontalParams,
                seed: int) -> nn.Module:
    """The job's model with the job's seeded initial weights (the same at every bank
    and at the aggregator)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if algorithm == "horizontal_lr":
            model = nn.Sequential(nn.Linear(n_features, 1))
        else:
            layers: list[nn.Module] = []
            width = n_features
            for h in params.hidden:
                layers += [nn.Linear(width, int(h)), nn.ReLU()]
                width = int(h)
            model = nn.Sequential(*layers, nn.Linear(width, 1))
    return model.double()


def get_flat(model: nn.Module) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])


def set_flat(model: nn.Module, flat: np.ndarray) -> None:
    flat = np.asarray(flat, dtype=np.float64)
    size = sum(p.numel() for p in model.parameters())
    if flat.shape != (size,):
        raise ValueError(f"model vector has shape {flat.shape}, the model needs ({size},)")
    if not np.all(np.isfinite(flat)):
        raise ValueError("model vector has non-finite values")
    off = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(torch.from_numpy(flat[off:off + n].reshape(p.shape)))
            off += n


def predict(model: nn.Module, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        z = model(torch.from_numpy(np.asarray(X, dtype=np.float64)))
    return torch.sigmoid(z).numpy().ravel()


def weighted_loss(model: nn.Module, X: np.ndarray, y: np.ndarray, pos_weight: float) -> float:
    """Mean class-weighted binary cross-entropy over the rows (the early-stopping loss)."""
    if len(y) == 0:
        return 0.0
    with torch.no_grad():
        z = model(torch.from_numpy(np.asarray(X, dtype=np.float64))).ravel()
        t = torch.from_numpy(np.asarray(y, dtype=np.float64))
        w = 1.0 + (pos_weight - 1.0) * t
        return float(nn.functional.binary_cross_entropy_with_logits(z, t, weight=w))


def train_local(model: nn.Module, X: np.ndarray, y: np.ndarray, params: HorizontalParams,
                pos_weight: float, seed: int, epochs: int | None = None) -> float:
    """``epochs`` (default ``params.local_epochs``) passes of minibatch Adam over the
    rows, shuffled by ``seed``; returns the mean training loss of the last pass."""
    if params.dp_noise_multiplier > 0:
        return train_local_dp(model, X, y, params, pos_weight, seed)[0]
    Xt = torch.from_numpy(np.asarray(X, dtype=np.float64))
    yt = torch.from_numpy(np.asarray(y, dtype=np.float64))
    opt = torch.optim.Adam(model.parameters(), lr=params.learning_rate,
                           weight_decay=params.weight_decay)
    rng = np.random.default_rng(seed)
    w_pos = float(pos_weight)
    last = 0.0
    for _ in range(params.local_epochs if epochs is None else epochs):
        order = torch.from_numpy(rng.permutation(len(yt)))
        total, seen = 0.0, 0
        for start in range(0, len(yt), params.batch_size):
            idx = order[start:start + params.batch_size]
            t = yt[idx]
            loss = nn.functional.binary_cross_entropy_with_logits(
                model(Xt[idx]).ravel(), t, weight=1.0 + (w_pos - 1.0) * t)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        last = total / max(seen, 1)
    return last


def train_local_dp(model: nn.Module, X: np.ndarray, y: np.ndarray, params: HorizontalParams,
                   pos_weight: float, seed: int) -> tuple[float, list]:
    """DP-SGD (Opacus): per-example gradients clipped to ``dp_max_grad_norm``, Gaussian
    noise ``dp_noise_multiplier`` times that, Poisson-sampled batches of expected size
    ``batch_size``. Returns the last pass's mean loss and the privacy history of this
    call, ``[(noise multiplier, sample rate, steps)]`` (the bank accumulates it)."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    data = TensorDataset(torch.from_numpy(np.asarray(X, dtype=np.float64)),
                         torch.from_numpy(np.asarray(y, dtype=np.float64)))
    loader = DataLoader(data, batch_size=min(params.batch_size, len(data)),
                        generator=torch.Generator().manual_seed(int(seed)))
    opt = torch.optim.Adam(model.parameters(), lr=params.learning_rate,
                           weight_decay=params.weight_decay)
    with warnings.catch_warnings():
        # secure_mode needs torchcsprng (not installed): the noise is from torch's PRNG
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant="rdp", secure_mode=False)
        dp_model, opt, loader = engine.make_private(
            module=model, optimizer=opt, data_loader=loader,
            noise_multiplier=params.dp_noise_multiplier,
            max_grad_norm=params.dp_max_grad_norm)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    w_pos, last = float(pos_weight), 0.0
    for _ in range(params.local_epochs):
        total, seen = 0.0, 0
        for xb, yb in loader:
            if len(yb) == 0:
                continue
            loss = nn.functional.binary_cross_entropy_with_logits(
                dp_model(xb).ravel(), yb, weight=1.0 + (w_pos - 1.0) * yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(yb)
            seen += len(yb)
        last = total / max(seen, 1)
    return last, [tuple(h) for h in engine.accountant.history]


def dp_epsilon(history: list, delta: float) -> float:
    """Epsilon at ``delta`` of a DP-SGD history (Opacus' RDP accountant)."""
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [tuple(h) for h in history]
    return float(acc.get_epsilon(delta))


def pos_weight_of(params: HorizontalParams, n_pos: float, n: float) -> float:
    """The positive class's weight: ``class_weight`` ("balanced": negatives/positives
    over all the banks' training rows) relative to the negative class's."""
    cw = params.class_weight
    if cw is None:
        return 1.0
    if cw == "balanced":
        if n_pos <= 0 or n_pos >= n:
            raise ValueError("class_weight = 'balanced' needs both classes in the training rows")
        return float((n - n_pos) / n_pos)
    return float(cw.get("1", 1.0)) / float(cw.get("0", 1.0))


def split_rows(n: int, params: HorizontalParams, salt: int = 0) -> dict[str, np.ndarray]:
    """Each bank's deterministic train / valid / test row indices (seeded by the job's
    seed and ``salt``, e.g. the bank's position), fractions as the params say."""
    perm = np.random.default_rng([params.seed, salt]).permutation(n)
    n_test = int(round(n * params.test_fraction))
    n_valid = int(round(n * params.valid_fraction))
    return {"test": np.sort(perm[:n_test]), "valid": np.sort(perm[n_test:n_test + n_valid]),
            "train": np.sort(perm[n_test + n_valid:])}


def train_central(algorithm: str, X: np.ndarray, y: np.ndarray, Xv: np.ndarray,
                  yv: np.ndarray, params: HorizontalParams) -> tuple[nn.Module, list[dict]]:
    """The same model trained on pooled rows: ``rounds`` x ``local_epochs`` passes with
    the same early stopping on the pooled validation rows; returns the best model and
    its history."""
    model = build_model(algorithm, X.shape[1], params, params.seed)
    pw = pos_weight_of(params, float(np.sum(y)), float(len(y)))
    best, best_loss, since, history = get_flat(model), np.inf, 0, []
    for r in range(params.rounds):
        vloss = weighted_loss(model, Xv, yv, pw)
        if vloss < best_loss - 1e-9:
            best, best_loss, since = get_flat(model), vloss, 0
        else:
            since += 1
            if params.patience and since >= params.patience:
                break
        tloss = train_local(model, X, y, params, pw, seed=params.seed * 100_003 + r)
        history.append({"iteration": r + 1, "train_loss": tloss, "valid_loss": vloss})
    if weighted_loss(model, Xv, yv, pw) < best_loss:
        best = get_flat(model)
    set_flat(model, best)
    return model, history
