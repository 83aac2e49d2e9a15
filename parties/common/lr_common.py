"""What both LR roles share: parameters, message kinds, fixed-point layout, the residual
approximation, the local optimiser and the helpers that move ciphertexts over a Link.

The protocol itself (and what each party learns) is described in
``parties/bank/lr.py`` and docs/lr.md. Nothing here is party-specific.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np

from federation.link import (
    Link,
    Message,
    PeerAborted,
    ProtocolError,
    declare_protocol,
    default_count,
)
from parties.common import params as vocab
from parties.common.artifact import ModelPart
from parties.common.params import ParamError
from parties.common.standardize import InputError, check_nan_policy, peer_view
from secure_agg.cipher import CipherVector, PublicCipher
from secure_agg.keypolicy import KeyPolicy, KeyPolicyError, peer_public_cipher

ALGORITHM = "logistic_regression"
PROTOCOL_VERSION = "fedjoint-lr-v1"
#: what a multiclass job's hello says (K residual columns; a v1 peer refuses it at the
#: hello). Binary jobs still say v1 and are v1 byte for byte
MULTICLASS_VERSION = "fedjoint-lr-v2"
MULTI_CLASS = ("multinomial", "ovr")

# ---- fixed-point layout (protocol constants, identical on both sides) -----------------
FZ = 20          #: fractional bits of the partial linear predictors z_p (and z_b)
FD = 12          #: fractional bits of the curvature a (and of u in the loss piece);
#: the residual's own part u is sent as U = round(u * 2**(FD + FZ))
FQ = 10          #: fractional bits of z_p inside the loss's quadratic term (2*FQ == FZ)
ZB = 12          #: |z_b|, |z_p| < 2**ZB or training is declared diverged
MAX_WEIGHT_BITS = 8  #: class weights must stay below 2**8
assert 2 * FQ == FZ

# ---- message kinds -------------------------------------------------------------------
K_HELLO = "lr.hello"
K_ABORT = "lr.abort"
K_ENC_U = "lr.enc_u"
K_ENC_A = "lr.enc_a"
K_ENC_ZP = "lr.enc_zp"
#: a batch of more than lr_stream.CHUNK_ROWS rows sends these per chunk instead
K_ENC_U_PART = K_ENC_U + "_part"
K_ENC_A_PART = K_ENC_A + "_part"
K_ENC_ZP_PART = K_ENC_ZP + "_part"
K_PLAT_GRAD_CT = "lr.platform_grad_ct"
K_BANK_GRAD_CT = "lr.bank_grad_ct"
K_BANK_GRAD_PLAIN = "lr.bank_grad_plain"
K_LOSS_CT = "lr.loss_ct"
K_PLAT_GRAD_PLAIN = "lr.platform_grad_plain"
K_VALID_SCORES = "lr.valid_scores"
K_EPOCH_END = "lr.epoch_end"
K_TRAIN_SCORES = "lr.train_scores"
K_FINAL_VALID_SCORES = "lr.final_valid_scores"
K_PART_DIGEST = "lr.part_digest"
K_SCORE_HELLO = "lr.score_hello"
K_PARTIAL_SCORE = "lr.partial_score"

APPROXIMATIONS = ("linearized", "taylor")
CURVATURES = ("batch_mean", "per_row")
OPTIMIZERS = ("sgd", "momentum", "adam")
EARLY_STOPPING = ("none", "loss", "valid_auc")
# parameters that shape the joint protocol and must be equal on both sides
SHARED_KEYS = ("epochs", "batch_size", "approximation", "platform_curvature",
               "early_stopping", "tol",
               "patience", "seed", "evaluate_train", "x_frac_bits")


class LRError(RuntimeError):
    """Training or scoring failed; the message says why. No model part is published.
    ``peer_reason``: what the peer is told instead, when the message describes this
    party's own data (column names, counts of missing values)."""

    def __init__(self, message: str = "", peer_reason: str | None = None):
        super().__init__(message)
        self.peer_reason = peer_reason


def guarded(ctx, input_view, error: type, body, *args):
    """Run a role's ``body(ctx, peer, *args)``. On failure the peer is told what it may
    see (it fails at once instead of waiting): an error's ``peer_reason`` (or its
    message); for an ``InputError`` about this party's own data ``input_view(exc)``.
    Input and parameter errors are raised again as ``error(message, shown)``."""
    peer = Peer(ctx.link)
    try:
        return body(ctx, peer, *args)
    except LRError as exc:
        peer.abort(exc.peer_reason or str(exc))
        raise
    except (InputError, ParamError) as exc:
        shown = input_view(exc) if isinstance(exc, InputError) else str(exc)
        peer.abort(shown)
        raise error(str(exc), shown) from None


class LRPeerAborted(LRError, PeerAborted):
    """The peer sent ``lr.abort``: the root cause is on its side."""


@dataclass
class LRParams:
    """``[params]`` of a ``logistic_regression`` job (both parties read the same table)."""

    ALIASES = {"eta": "learning_rate", "lambda": "reg_lambda", "l2": "reg_lambda",
               "l1": "reg_alpha", "random_state": "seed", "scale_pos_weight": vocab.SCALE_POS_WEIGHT}
    REFUSED = {**vocab.TREE_ONLY, **vocab.LINEAR_MODEL_REFUSED}   # parties.common.params
    ARTIFACT_NAMES = {"reg_lambda": "l2", "reg_alpha": "l1"}  # as fedjoint-lr-v1 parts say
    ADDED_FIELDS = ("multi_class",)  # recorded only when set: binary parts stay as they were
    l2 = property(lambda self: self.reg_lambda)  # the optimiser's names (as LinRegParams)
    l1 = property(lambda self: self.reg_alpha)
    epochs: int = 10
    batch_size: int | None = 4096        #: None, 0 or -1: full batch
    learning_rate: float = 0.05
    decay: float = 0.0                   #: per-epoch rate: lr / (1 + decay * epoch)
    optimizer: str = "adam"              #: sgd | momentum | adam
    momentum: float = 0.9                #: momentum / Adam beta1
    reg_lambda: float = 0.0              #: (lambda/2)||w||^2 (sklearn C = 1/(n*lambda)); l2
    reg_alpha: float = 0.0               #: lambda*||w||_1, via a proximal step; l1
    fit_intercept: bool = True           #: intercept lives at the bank
    #: None | "balanced" | {"0": w0, "1": w1}; multiclass: {class = weight}, the classes
    #: as the label column spells them (unnamed classes weigh 1)
    class_weight: str | dict | None = None
    #: None: binary 0/1 labels. "multinomial" (softmax over K classes, scikit-learn's
    #: default for K > 2) or "ovr" (K one-vs-rest models in the same job): a multiclass
    #: label, K announced by the bank (docs/lr.md)
    multi_class: str | None = None
    approximation: str = "linearized"    #: linearized (default) | taylor
    #: curvature ``a`` in the platform's residual: the batch mean (one ciphertext per
    #: batch; default) or per row (one more bank encryption per row, most accurate)
    platform_curvature: str = "batch_mean"
    early_stopping: str = "loss"         #: none | loss | valid_auc
    tol: float = 1e-4                    #: relative loss change that stops training
    patience: int = 2                    #: epochs without validation-AUC gain
    seed: int | None = None              #: fixes the batch order (else from the DRBG)
    standardize: bool = True
    #: missing (NaN) feature cells: fail | mean | median | zero for every column, or a
    #: table {column = policy, "*" = default for unnamed columns (else "fail")}; names
    #: may be qualified "bank:col" / "platform:col". Each party applies it to its own
    #: columns, with statistics from its own training rows (docs/lr.md)
    nan_policy: str | dict = "fail"
    evaluate_train: bool = True          #: platform discloses train partial scores at the end
    allow_validation_scores: bool = False  #: platform consents to per-epoch valid scores
    x_frac_bits: int = 12

    def __post_init__(self):
        check_optimizer(self)
        if self.approximation not in APPROXIMATIONS:
            raise ParamError(f"approximation = {self.approximation!r}; expected one of "
                             f"{APPROXIMATIONS}")
        if self.platform_curvature not in CURVATURES:
            raise ParamError(f"platform_curvature = {self.platform_curvature!r}; expected "
                             f"one of {CURVATURES}")
        if self.early_stopping not in EARLY_STOPPING:
            raise ParamError(f"early_stopping = {self.early_stopping!r}; expected one of "
                             f"{EARLY_STOPPING}")
        if self.tol < 0 or self.patience < 1:
            raise ParamError("tol must be >= 0 and patience >= 1")
        check_nan_policy(self.nan_policy)
        if self.multi_class is not None and self.multi_class not in MULTI_CLASS:
            hint = (" (it needs the label kind before the data is read: name the one you "
                    "mean)") if self.multi_class == "auto" else ""
            raise ParamError(f"multi_class = {self.multi_class!r}; expected one of "
                             f"{MULTI_CLASS} for a multiclass label, or leave it unset for "
                             f"0/1 labels{hint}")
        vocab.check_class_weight(self.class_weight, 2.0 ** MAX_WEIGHT_BITS,
                                 any_keys=self.multi_class is not None)

    def shared(self) -> dict:
        out = {k: getattr(self, k) for k in SHARED_KEYS}
        if self.multi_class is not None:   # binary hellos stay as they were
            out["multi_class"] = self.multi_class
        return out

    def label_kind(self) -> str:
        """What the bank's labels must be (parties.registry)."""
        return "binary" if self.multi_class is None else "multiclass"

    def version(self) -> str:
        """The protocol version a job with these params speaks."""
        return PROTOCOL_VERSION if self.multi_class is None else MULTICLASS_VERSION

    def needs_validation_split(self) -> str:
        """The param that needs a validation split carved from the training rows."""
        return "early_stopping = 'valid_auc'" if self.early_stopping == "valid_auc" else ""


def check_optimizer(p) -> None:
    """The checks every linear model's params share: epochs, batches, optimiser,
    penalties and the features' fixed point (``LRParams``, ``LinRegParams``)."""
    if p.epochs < 1:
        raise ParamError(f"epochs = {p.epochs} must be >= 1")
    if p.batch_size is not None and p.batch_size not in (0, -1) and p.batch_size < 1:
        raise ParamError(f"batch_size = {p.batch_size} must be >= 1 (or 0/-1 for full)")
    if not p.learning_rate > 0:
        raise ParamError(f"learning_rate = {p.learning_rate} must be > 0")
    if p.decay < 0:
        raise ParamError(f"decay = {p.decay} must be >= 0")
    if p.optimizer not in OPTIMIZERS:
        raise ParamError(f"optimizer = {p.optimizer!r}; expected one of {OPTIMIZERS}")
    if not 0 <= p.momentum < 1:
        raise ParamError(f"momentum = {p.momentum} must be in [0, 1)")
    if p.reg_lambda < 0 or p.reg_alpha < 0:
        raise ParamError("reg_alpha and reg_lambda must be >= 0")
    if not 4 <= p.x_frac_bits <= 30:
        raise ParamError(f"x_frac_bits = {p.x_frac_bits} must be in [4, 30]")


def full_batch(p: LRParams, n: int) -> int:
    return n if p.batch_size in (None, 0, -1) else int(p.batch_size)


def check_batch_size(p: LRParams, n: int) -> int:
    """The batch size for ``n`` training rows. Larger than ``n`` is a job error (both
    parties know ``n``; each role checks before its first message): a full batch makes
    one optimiser step per epoch, so that is asked for explicitly (``batch_size = 0``)."""
    bs = full_batch(p, n)
    if bs > n:
        raise ParamError(f"batch_size = {bs} is larger than the {n} intersecting training "
                         f"rows; set a smaller batch_size, or batch_size = 0 for one full "
                         f"batch (one optimiser step) per epoch")
    return bs


# ---- batches ---------------------------------------------------------------------------
def shuffle_seed(p: LRParams, rng) -> bytes:
    if p.seed is not None:
        return hashlib.sha256(f"fedjoint-lr-shuffle\0{p.seed}".encode()).digest()
    return rng.child("lr/shuffle").random_bytes(32)


def batch_sizes(n: int, batch_size: int) -> list[int]:
    """Sizes of an epoch's mini-batches (the same every epoch)."""
    if batch_size >= n:
        return [n]
    return [min(batch_size, n - s) for s in range(0, n, batch_size)]


def mask(cipher: PublicCipher, a: CipherVector, rng, obfuscators) -> tuple[CipherVector,
                                                                          list[int]]:
    """``secure_agg.masking.mask`` with a precomputed (uniform ``r^n``) re-randomisation:
    fresh uniform masks 40 bits wider than the bound, then a fresh obfuscator."""
    from secure_agg.masking import STAT_BITS
    width = a.bound_bits + STAT_BITS
    masks = [rng.randbits(width) for _ in range(len(a))]
    return cipher.rerandomize(cipher.add_plain(a, masks),
                              obfuscators=obfuscators, obfuscation="standard"), masks


def epoch_batches(seed: bytes, epoch: int, n: int, batch_size: int) -> list[np.ndarray]:
    """Row indices of each mini-batch of ``epoch`` (same on both sides)."""
    from secure_agg.rng import Drbg
    if batch_size >= n:
        return [np.arange(n)]
    order = Drbg(seed, "lr/batches").child(f"epoch{epoch}").numpy().permutation(n)
    return [order[s:s + batch_size] for s in range(0, n, batch_size)]


def linear_predictor(Xs: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``Xs @ w`` row by row in a fixed order (einsum, not BLAS gemv, whose blocking
    depends on the row count): a scoring job and online serving give the same bits."""
    return np.einsum("ij,j->i", np.asarray(Xs, np.float64), np.asarray(w, np.float64))


ZP_BITS = FZ + ZB + 1  #: bound bits of the encoded partial predictor


def encode(x: np.ndarray, frac_bits: int) -> np.ndarray:
    return np.rint(np.asarray(x, dtype=np.float64) * float(1 << frac_bits)).astype(np.int64)


def check_predictor(z: np.ndarray, party: str, epoch: int) -> None:
    if not np.all(np.isfinite(z)) or (z.size and np.abs(z).max() >= 2.0 ** ZB):
        raise LRError(f"training diverged at epoch {epoch + 1}: the {party}'s partial linear "
                      f"predictor left [-{2 ** ZB}, {2 ** ZB}]; lower learning_rate")


# ---- keys ------------------------------------------------------------------------------
def peer_cipher(desc: dict, own: PublicCipher, workers: int, policy: KeyPolicy
                ) -> PublicCipher:
    """The peer's public cipher (``lr.hello``'s key) if this node's key policy accepts it
    and it is no weaker than this party's own key; the one check, with LR's error type."""
    try:
        return peer_public_cipher(desc, policy, workers, own=own)
    except KeyPolicyError as exc:
        raise LRError(str(exc)) from None


# ---- transport --------------------------------------------------------------------------
class Peer:
    """Typed, size-checked messages of the LR protocol over a Link."""

    def __init__(self, link: Link):
        self.link = link

    def _recv(self, kind: str):
        try:
            return self.link.recv(kind)
        except ProtocolError as exc:
            if f"'{K_ABORT}'" in str(exc):
                raise LRPeerAborted(f"the peer ({self.link.peer}) aborted the job while this party "
                              f"waited for {kind}; see the peer's job log") from None
            raise

    def abort(self, reason: str) -> None:
        try:
            self.link.send(K_ABORT, {"reason": reason[:500]})
        except Exception:  # noqa: BLE001 - best effort, the job fails anyway
            pass

    def send_json(self, kind: str, obj: dict) -> None:
        self.link.send(kind, obj)

    def recv_json(self, kind: str) -> dict:
        obj = self._recv(kind)
        if not isinstance(obj, dict):
            raise ProtocolError(f"{kind}: expected a json object")
        return obj

    def send_ct(self, kind: str, cipher: PublicCipher, vec: CipherVector) -> None:
        self.link.send(kind, cipher.to_bytes(vec))

    def recv_ct(self, kind: str, cipher: PublicCipher, count: int,
                bound_bits: int) -> CipherVector:
        return self.parse_ct(kind, cipher, self._recv(kind), count, bound_bits)

    def parse_ct(self, kind: str, cipher: PublicCipher, data, count: int,
                 bound_bits: int) -> CipherVector:
        """``count`` ciphertexts of ``kind``, length- and range-checked."""
        if not isinstance(data, bytes):
            raise ProtocolError(f"{kind}: expected ciphertext bytes")
        if len(data) != count * cipher.ciphertext_bytes:
            raise ProtocolError(f"{kind}: expected {count} ciphertexts "
                                f"({count * cipher.ciphertext_bytes} bytes), got {len(data)}")
        try:
            return cipher.from_bytes(data, bound_bits)
        except ValueError as exc:
            raise ProtocolError(f"{kind}: {exc}") from None

    def send_ints(self, kind: str, values: list[int]) -> None:
        self.link.send(kind, {"v": [str(int(v)) for v in values]})

    def recv_ints(self, kind: str, count: int, max_bits: int) -> list[int]:
        obj = self.recv_json(kind)
        vals = obj.get("v")
        if not isinstance(vals, list) or len(vals) != count:
            raise ProtocolError(f"{kind}: expected {count} integers")
        out = []
        for s in vals:
            if not isinstance(s, str) or len(s) > max_bits // 3 + 3:
                raise ProtocolError(f"{kind}: malformed or oversized integer")
            try:
                v = int(s)
            except ValueError:
                raise ProtocolError(f"{kind}: malformed integer") from None
            if abs(v).bit_length() > max_bits:
                raise ProtocolError(f"{kind}: integer exceeds {max_bits} bits")
            out.append(v)
        return out

    def send_array(self, kind: str, arr: np.ndarray) -> None:
        self.link.send(kind, np.ascontiguousarray(arr, dtype=np.float64))

    def recv_scores(self, kind: str, count: int, k: int = 1) -> np.ndarray:
        """``count`` partial scores, or ``(count, k)`` of them for ``k > 1`` classes."""
        arr = self._recv(kind)
        shape = (count,) if k == 1 else (count, k)
        if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f" or arr.shape != shape:
            raise ProtocolError(f"{kind}: expected {' x '.join(map(str, shape))} float scores")
        if not np.all(np.isfinite(arr)):
            raise ProtocolError(f"{kind}: non-finite partial scores")
        return arr.astype(np.float64)


def fingerprint(part: ModelPart) -> str:
    """Digest of a part before the peer's digest is filled in (what the peer records)."""
    return dataclasses.replace(part, peer_part_digest="").digest()


def check_peer_hello(own: dict, other: dict, p: LRParams, party: str,
                     peer_label: str) -> None:
    """Both roles, after the hello exchange (and after raising their own input error):
    fail on the peer's error, a version or row-count mismatch, or job parameters that
    differ between the parties."""
    if not other.get("ok"):
        raise LRError(f"the {peer_label} refused the job: {other.get('error')}")
    if other.get("version") != own["version"]:
        raise LRError(f"{peer_label} speaks {other.get('version')!r}, expected "
                      f"{own['version']}")
    if other.get("n_rows") != own["n_rows"]:
        raise LRError(f"row counts differ: {party} has {own['n_rows']} training rows, "
                      f"{peer_label} {other.get('n_rows')} (rows must be PSI-aligned)")
    if other.get("n_valid") != own["n_valid"]:
        raise LRError(f"validation row counts differ: {party} {own['n_valid']}, "
                      f"{peer_label} {other.get('n_valid')}")
    if other.get("shared") != p.shared():
        theirs = other.get("shared") or {}
        diff = sorted(k for k in p.shared() if p.shared()[k] != theirs.get(k))
        raise LRError(f"bank and platform job parameters differ: {', '.join(diff)}")


def announced_seed(hello: dict, error: type) -> bytes:
    """The 32-byte shuffle seed of the bank's hello (``error`` if malformed)."""
    try:
        seed = bytes.fromhex(hello.get("shuffle_seed", ""))
    except (TypeError, ValueError):
        seed = b""
    if len(seed) != 32:
        raise error("bank announced a malformed shuffle seed")
    return seed


def exchange_part_digests(peer: Peer, part: ModelPart, *, send_first: bool,
                          peer_label: str) -> None:
    """Each part records the digest of the other party's part (they were trained together)."""
    if send_first:
        peer.send_json(K_PART_DIGEST, {"digest": fingerprint(part)})
    other = peer.recv_json(K_PART_DIGEST).get("digest")
    if not send_first:
        peer.send_json(K_PART_DIGEST, {"digest": fingerprint(part)})
    if not isinstance(other, str) or len(other) != 64:
        raise LRError(f"{peer_label} sent a malformed model-part digest")
    part.peer_part_digest = other


def scoring_handshake(peer: Peer, model: ModelPart, X, party: str, peer_label: str, *,
                      algorithm: str = ALGORITHM, what: str = "logistic-regression",
                      error: type = LRError, input_view=None) -> np.ndarray:
    """Both roles of a scoring job (logistic or linear regression, ``algorithm``):
    standardise the rows with the stored part, exchange a hello (ok, row count, both
    parts' fingerprints) and check that the two parts were trained together and score
    the same number of rows. An input error about this party's rows is shown to the peer
    as ``input_view(exc)`` (default: without column names). Returns the rows."""
    from parties.common.standardize import Standardizer, as_feature_matrix

    if model.algorithm != algorithm or model.party != party:
        raise error(f"not a {party} {what} part ({model.algorithm}, {model.party})")
    std = Standardizer.from_dict(model.body["standardizer"])
    err, Xs, shown = None, None, None
    try:
        Xm, _ = as_feature_matrix(X, model.feature_names, f"{party} scoring data")
        Xs = std.transform(Xm, f"{party} scoring data")
    except InputError as exc:
        # names this party's column (e.g. missing cells in a "fail" column): kept local
        err = str(exc)
        shown = input_view(exc) if input_view else peer_view(exc, party, reveal=False)
    n = None if Xs is None else Xs.shape[0]
    peer.send_json(K_SCORE_HELLO, {"ok": err is None, "error": shown, "n_rows": n,
                                   "fingerprint": fingerprint(model),
                                   "peer_fingerprint": model.peer_part_digest})
    hello = peer.recv_json(K_SCORE_HELLO)
    if err is not None:
        raise error(err)
    if not hello.get("ok"):
        raise error(f"the {peer_label} refused the scoring job: {hello.get('error')}")
    if hello.get("fingerprint") != model.peer_part_digest:
        raise error(f"the {peer_label}'s model part is not the one this part was trained "
                    "with (fingerprint mismatch)")
    if hello.get("n_rows") != n:
        raise error(f"row counts differ: {party} {n}, {peer_label} {hello.get('n_rows')}")
    return Xs


def params_dict(p: LRParams) -> dict:
    return vocab.artifact_params(p)


def _json_values(payload) -> int:
    return len(payload.get("v", [])) if isinstance(payload, dict) else default_count(payload)


# Values that cross in the clear or under the receiver's own key (docs/lr.md) carry a
# disclosure, counted per job in the transcript's ledger.
TABLE = declare_protocol(ALGORITHM, PROTOCOL_VERSION, [
    Message(K_HELLO, "either", "json", "row count, shared params, public key (modulus); multiclass (v2): K"),
    Message(K_ABORT, "either", "json", "reason the sender failed"),
    Message(K_ENC_U, "bank", "bin", "residual offsets u under the bank's key (m x K, class-major)"),
    Message(K_ENC_A, "bank", "bin", "residual curvature under the bank's key (its K x K pattern, per row or batch mean)"),
    Message(K_ENC_ZP, "platform", "bin", "platform partial predictor under the platform's key (m x K)"),
    Message(K_ENC_U_PART, "bank", "bin", "batches over 4096 rows: one chunk of lr.enc_u (header: epoch, batch, chunk, chunks, first row, rows; then rows x K ciphertexts)"),
    Message(K_ENC_A_PART, "bank", "bin", "batches over 4096 rows, per-row curvature: one chunk of lr.enc_a (same header)"),
    Message(K_ENC_ZP_PART, "platform", "bin", "batches over 4096 rows: one chunk of lr.enc_zp (same header)"),
    Message(K_PLAT_GRAD_CT, "platform", "bin", "platform gradient + mask under the bank's key (K x d_p)",
            disclosure="platform gradient, masked, under the bank's key"),
    Message(K_BANK_GRAD_CT, "bank", "bin", "bank gradient + mask under the platform's key (K x (d_b + 1), loss slot)",
            disclosure="bank gradient, masked, under the platform's key"),
    Message(K_BANK_GRAD_PLAIN, "platform", "json", "the bank's masked gradient, decrypted",
            disclosure="bank's own gradient (masked by the bank) decrypted",
            count=_json_values),
    Message(K_LOSS_CT, "platform", "bin", "aggregate batch loss terms under the bank's key",
            disclosure="aggregate batch loss under the bank's key"),
    Message(K_PLAT_GRAD_PLAIN, "bank", "json", "the platform's masked gradient, decrypted",
            disclosure="platform's own gradient (masked by it) decrypted",
            count=_json_values),
    Message(K_VALID_SCORES, "platform", "npy", "platform partial scores, validation rows (rows x K)",
            disclosure="platform partial scores (validation rows)"),
    Message(K_EPOCH_END, "bank", "json", "epoch number and whether training stops"),
    Message(K_TRAIN_SCORES, "platform", "npy", "platform partial scores, training rows (rows x K)",
            disclosure="platform partial scores (training rows)"),
    Message(K_FINAL_VALID_SCORES, "platform", "npy", "final partial scores, validation rows (rows x K)",
            disclosure="platform partial scores (validation rows)"),
    Message(K_PART_DIGEST, "either", "json", "fingerprint of the sender's model part"),
    Message(K_SCORE_HELLO, "either", "json", "scoring: ok/error, row count, model fingerprint"),
    Message(K_PARTIAL_SCORE, "platform", "npy", "platform partial scores, scored rows (rows x K)",
            disclosure="platform partial scores (scored rows)"),
])
