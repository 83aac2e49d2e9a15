"""Long-lived per-peer OPRF keys and the caches of unbalanced PSI.

Three stores, all local to one party:

* :class:`KeyStore` (platform): one 32-byte X25519 scalar per peer, in
  ``<key_dir>/psi-oprf-<peer>.key``, created from ``os.urandom`` with mode 0600 inside
  a 0700 directory; a key file readable by group/other is refused. The key is
  long-lived (it is what makes the cache reusable), so it is *not* drawn from the
  per-job DRBG; an auditor replaying the platform's side needs this file from the
  platform's vault. :meth:`KeyStore.rotate` replaces it and re-encrypts the peer's
  caches to the new key (``F_k' = [k'/k] F_k``: one X25519 per cached ID, no rehashing),
  then overwrites the old key file with zeros and removes it; caches are keyed by
  :func:`key_id`, so nothing built with the old key is found again. A job reads the key
  and opens its cache under a shared lock (:meth:`KeyStore.using`), rotation takes it
  exclusively: a job that started under the old key keeps it and its (memory-mapped)
  cache to the end, and a job that starts later sees only the new key -- never a mix.
* :class:`OprfCache` (platform): for a prepared dataset, ``F_k(y) = u([64] X25519(k, u(H(y))))``
  for every ID, sorted by the 64-bit truncation ``T(y)`` = low 8 bytes of ``F_k(y)``.
  Stored as ``.npy`` files in ``<cache_dir>/psi-cache/<peer>/<digest>-<keyid>/`` with a
  ``meta.json``; the directory name and meta carry the dataset content digest
  (:func:`psi.ids.raw_digest` of the raw ID column and the preparation policy), the
  key id, the normalisation version and the
  hash DST, so any change of dataset content, key, normalisation or suite misses the
  cache and triggers a rebuild (stale entries for the same peer are removed).
* :class:`PeerSetCache` (bank): the platform's truncated set ``{T(y)}`` as received,
  keyed by the platform-announced cache id, so later jobs against an unchanged
  platform dataset skip the transfer.

What each party learns: nothing new -- these stores hold only values the party
computed or already received.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .engine import Engine
from .hash_to_curve import L_ORDER

CACHE_FORMAT = "fedjoint-psi-oprf-cache-v2"  # v2: F_k = [64] X25519(k, H)
_PEER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check_peer(peer: str) -> str:
    if not isinstance(peer, str) or not _PEER_RE.match(peer):
        raise ValueError(f"invalid peer name {peer!r} for a key/cache file name")
    return peer


_INV8 = pow(8, -1, L_ORDER)


def clamp(scalar: bytes) -> int:
    """The integer X25519 multiplies by for a 32-byte ``scalar`` (RFC 7748 clamping)."""
    c = int.from_bytes(scalar, "little")
    return (c & ~7 & ~(1 << 255)) | (1 << 254)


def scalar_for(x: int) -> bytes | None:
    """A 32-byte X25519 scalar whose clamped value is ``x (mod L)``, or None.

    Clamped values are ``2^254 + 8m`` with ``0 <= m < 2^251``; modulo L the candidate
    ``m = (x - 2^254) / 8 mod L`` is below ``2^251`` for about half of all x.
    """
    m = (x - (1 << 254)) * _INV8 % L_ORDER
    if m >= 1 << 251:
        return None
    return ((1 << 254) + 8 * m).to_bytes(32, "little")


def key_id(key: bytes) -> str:
    """Public fingerprint of an OPRF key: SHA-256 of its X25519 public key (hex, 32)."""
    pub = X25519PrivateKey.from_private_bytes(key).public_key().public_bytes_raw()
    return hashlib.sha256(b"fedjoint-psi-oprf-key-id\0" + pub).hexdigest()[:32]


@dataclass
class Rotation:
    """What :meth:`KeyStore.rotate` did."""

    peer: str
    old_key_id: str                 # '' if there was no key
    new_key_id: str
    caches: list[str] = field(default_factory=list)   # cache ids re-encrypted
    n_ids: int = 0                  # cached IDs re-encrypted
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class KeyStore:
    """Per-peer long-lived OPRF keys (files, 0600)."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = os.fspath(directory)

    def path(self, peer: str) -> str:
        return os.path.join(self.dir, f"psi-oprf-{_check_peer(peer)}.key")

    @contextlib.contextmanager
    def using(self, peer: str, exclusive: bool = False):
        """Hold the peer's key lock: shared while a job reads the key and opens its
        cache, exclusive while the key rotates (a file lock: across processes). Once
        held, no rotation is half done: what an interrupted one left is erased."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        fd = os.open(self.path(peer)[:-4] + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            _erase(self.path(peer) + ".retired")
            yield
        finally:
            os.close(fd)   # releases the lock

    def created(self, peer: str) -> float | None:
        """When the peer's current key was made (its file's mtime), None if none."""
        try:
            return os.stat(self.path(peer)).st_mtime
        except FileNotFoundError:
            return None

    def oprf_key(self, peer: str, create: bool = True) -> bytes:
        path = self.path(peer)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if not create:
                raise
            return self._write_new(path)
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PermissionError(f"{path}: OPRF key file must be mode 0600 "
                                  f"(is {stat.S_IMODE(st.st_mode):04o})")
        with open(path, "rb") as fh:
            key = fh.read()
        if len(key) != 32:
            raise ValueError(f"{path}: corrupt OPRF key file ({len(key)} bytes, expected 32)")
        return key

    def rotate(self, peer: str, cache_dir: str | None = None, workers: int = 1,
               if_key_id: str | None = None) -> Rotation | None:
        """Replace the peer's key; re-encrypt its caches under ``cache_dir`` to the new
        key (``workers`` processes), then erase the old key. With ``if_key_id``: only if
        that is still the current key (None if another process rotated it meanwhile).

        Order (crash-safe): new caches are written beside the old ones, the new key
        replaces the old file atomically, then the old key's bytes are overwritten with
        zeros and unlinked and the old caches removed. Interrupted before the key moved:
        the old key and caches still hold (the orphan new cache is never found);
        after: the new key and caches hold and the leftovers are removed under the next lock.
        """
        t0 = time.perf_counter()
        with self.using(peer, exclusive=True):
            path = self.path(peer)
            old = self.oprf_key(peer, create=False) if os.path.exists(path) else None
            if if_key_id is not None and (old is None or key_id(old) != if_key_id):
                return None
            caches = OprfCache.of_key(cache_dir, peer, key_id(old)) \
                if old is not None and cache_dir else []
            while True:
                new = os.urandom(32)
                ratio = None
                if old is None or not caches:
                    break
                ratio = scalar_for(clamp(new) * pow(clamp(old), -1, L_ORDER))
                if ratio is not None:   # F_new = X25519(ratio, F_old) exactly
                    break
            rot = Rotation(peer, key_id(old) if old is not None else "", key_id(new))
            fresh = []
            if caches:
                with Engine(workers) as engine:
                    fresh = [c.reencrypt(cache_dir, ratio, rot.new_key_id, engine)
                             for c in caches]
            self._install(path, new)
            for c in caches:
                shutil.rmtree(c.directory, ignore_errors=True)
        rot.caches = [c.cache_id for c in fresh]
        rot.n_ids = sum(c.n for c in fresh)
        rot.seconds = round(time.perf_counter() - t0, 3)
        return rot

    def _install(self, path: str, key: bytes) -> None:
        """Put ``key`` at ``path`` atomically; the old key's bytes are erased."""
        tmp = self._private_tmp(path, key)
        retired = path + ".retired"
        _erase(retired)
        if os.path.exists(path):
            os.link(path, retired)   # the old inode, to overwrite once replaced
        os.replace(tmp, path)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        _erase(retired)

    def _private_tmp(self, path: str, key: bytes) -> str:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def _write_new(self, path: str) -> bytes:
        key = os.urandom(32)
        tmp = self._private_tmp(path, key)
        try:
            os.link(tmp, path)  # fails if a concurrent writer won: use theirs
        except FileExistsError:
            os.unlink(tmp)
            return self.oprf_key(os.path.basename(path)[9:-4], create=False)
        os.unlink(tmp)
        return key


def _erase(path: str) -> None:
    """Overwrite a key file with zeros, flush it to disk, unlink it (if it exists)."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        os.write(fd, b"\0" * os.fstat(fd).st_size)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.unlink(path)


@dataclass
class OprfCache:
    """A platform's precomputed OPRF values for one (peer, dataset, key)."""

    directory: str
    meta: dict
    trunc: np.ndarray   # uint64, sorted ascending
    full: np.ndarray    # uint8 (n, 32), F_k values in the same order
    rows: np.ndarray    # int64: original dataset row of each entry, same order

    @property
    def cache_id(self) -> str:
        return self.meta["cache_id"]

    @property
    def n(self) -> int:
        return int(self.meta["n"])

    @staticmethod
    def location(cache_dir: str, peer: str, digest: str, kid: str) -> str:
        return os.path.join(cache_dir, "psi-cache", _check_peer(peer),
                            f"{digest[:24]}-{kid[:16]}")

    @classmethod
    def load(cls, cache_dir: str, peer: str, digest: str, kid: str, norm_version: str,
             dst: str) -> OprfCache | None:
        d = cls.location(cache_dir, peer, digest, kid)
        try:
            with open(os.path.join(d, "meta.json")) as fh:
                meta = json.load(fh)
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        want = {"format": CACHE_FORMAT, "dataset_digest": digest, "key_id": kid,
                "norm_version": norm_version, "dst": dst}
        if any(meta.get(k) != v for k, v in want.items()):
            return None
        try:
            trunc = np.load(os.path.join(d, "trunc.npy"), mmap_mode="r", allow_pickle=False)
            full = np.load(os.path.join(d, "full.npy"), mmap_mode="r", allow_pickle=False)
            rows = np.load(os.path.join(d, "rows.npy"), mmap_mode="r", allow_pickle=False)
        except (FileNotFoundError, ValueError):
            return None
        n = int(meta["n"])
        if trunc.shape != (n,) or full.shape != (n, 32) or rows.shape != (n,):
            return None
        return cls(d, meta, trunc, full, rows)

    @classmethod
    def build(cls, cache_dir: str, peer: str, key: bytes, prepared, digest: str, engine,
              dst: str, batch: int = 1 << 16) -> OprfCache:
        """Compute F_k over the whole prepared set and store it (replaces stale caches)."""
        t0 = time.perf_counter()
        n = len(prepared.ids)
        full = np.empty((n, 32), dtype=np.uint8)  # filled block by block: no joined copy
        at = 0
        ids = prepared.packed if prepared.packed is not None else prepared.ids
        for blk in engine.hash_blind_times64_stream(ids, dst.encode(), key, batch):
            k = len(blk) // 32
            full[at:at + k] = np.frombuffer(blk, dtype=np.uint8).reshape(k, 32)
            at += k
        if at != n:
            raise RuntimeError(f"OPRF cache build produced {at} values for {n} IDs")
        meta = {"peer": peer, "dataset_digest": digest, "key_id": key_id(key),
                "norm_version": prepared.norm_version, "dst": dst,
                "created": time.time(), "prep_stats": prepared.stats()}
        return cls._store(cache_dir, full, prepared.rows, meta, t0, remove_stale=True)

    def reencrypt(self, cache_dir: str, ratio: bytes, new_kid: str, engine,
                  batch: int = 1 << 16) -> OprfCache:
        """This cache under a new key: ``X25519(ratio, F_k(y))`` for every cached value
        (``clamp(ratio) = clamp(k') / clamp(k) mod L``; F_k is in the prime-order
        subgroup, so the result is exactly ``F_k'``), stored beside this one."""
        t0 = time.perf_counter()
        full = np.empty((self.n, 32), dtype=np.uint8)
        blocks = (np.ascontiguousarray(self.full[i:i + batch]).tobytes()
                  for i in range(0, self.n, batch))
        at = 0
        for blk in engine.mult_stream(blocks, ratio, check_subgroup=False):
            k = len(blk) // 32
            full[at:at + k] = np.frombuffer(blk, dtype=np.uint8).reshape(k, 32)
            at += k
        if at != self.n:
            raise RuntimeError(f"re-encryption produced {at} values for {self.n} IDs")
        meta = {k: v for k, v in self.meta.items() if k not in ("cache_id", "n", "build_seconds")}
        meta.update(key_id=new_kid, reencrypted_from=self.meta["key_id"],
                    reencrypted=time.time())
        return self._store(cache_dir, full, np.asarray(self.rows), meta, t0,
                           remove_stale=False)

    @classmethod
    def _store(cls, cache_dir: str, full: np.ndarray, rows: np.ndarray, meta: dict,
               t0: float, remove_stale: bool) -> OprfCache:
        """Sort by truncation, write the cache directory atomically, load it back."""
        peer, digest, kid = meta["peer"], meta["dataset_digest"], meta["key_id"]
        d = cls.location(cache_dir, peer, digest, kid)
        trunc = full[:, :8].copy().view("<u8").ravel()
        order = np.argsort(trunc, kind="stable")
        peer_dir = os.path.dirname(d)
        os.makedirs(peer_dir, mode=0o700, exist_ok=True)
        if remove_stale:
            for old in os.listdir(peer_dir):  # invalidate stale caches for this peer
                if os.path.join(peer_dir, old) != d:
                    shutil.rmtree(os.path.join(peer_dir, old), ignore_errors=True)
        tmp = d + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, mode=0o700)
        np.save(os.path.join(tmp, "trunc.npy"), trunc[order])
        np.save(os.path.join(tmp, "full.npy"), full[order])
        np.save(os.path.join(tmp, "rows.npy"), rows[order].astype(np.int64))
        meta = {**meta, "format": CACHE_FORMAT, "n": int(len(trunc)), "trunc_bits": 64,
                "build_seconds": round(time.perf_counter() - t0, 3)}
        meta["cache_id"] = hashlib.sha256(json.dumps(
            [digest, kid, meta["norm_version"], meta["dst"], len(trunc)]).encode()
        ).hexdigest()[:32]
        with open(os.path.join(tmp, "meta.json"), "w") as fh:
            json.dump(meta, fh, sort_keys=True)
        shutil.rmtree(d, ignore_errors=True)
        os.replace(tmp, d)
        return cls.load(cache_dir, peer, digest, kid, meta["norm_version"], meta["dst"])

    @classmethod
    def of_key(cls, cache_dir: str, peer: str, kid: str) -> list[OprfCache]:
        """Every valid cache of ``peer`` built with key ``kid``."""
        peer_dir = os.path.join(cache_dir, "psi-cache", _check_peer(peer))
        out = []
        for name in sorted(os.listdir(peer_dir)) if os.path.isdir(peer_dir) else []:
            try:
                with open(os.path.join(peer_dir, name, "meta.json")) as fh:
                    meta = json.load(fh)
            except (OSError, json.JSONDecodeError):
                continue
            if not isinstance(meta, dict) or meta.get("key_id") != kid:
                continue
            got = cls.load(cache_dir, peer, str(meta.get("dataset_digest")), kid,
                           str(meta.get("norm_version")), str(meta.get("dst")))
            if got is not None and os.path.abspath(got.directory) == \
                    os.path.abspath(os.path.join(peer_dir, name)):
                out.append(got)
        return out

    @classmethod
    def lookup(cls, cache_dir: str, peer: str, key: bytes, digest: str, norm_version: str,
               dst: str) -> OprfCache | None:
        return cls.load(cache_dir, peer, digest, key_id(key), norm_version, dst)


class PeerSetCache:
    """Bank side: the platform's sorted truncated set, by platform-announced cache id."""

    def __init__(self, cache_dir: str | os.PathLike):
        self.dir = os.path.join(os.fspath(cache_dir), "psi-peer-sets")

    def _path(self, peer: str, cache_id: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{32}", cache_id or ""):
            raise ValueError("cache id must be 32 lowercase hex characters")
        return os.path.join(self.dir, _check_peer(peer), f"{cache_id}.npy")

    def get(self, peer: str, cache_id: str, n: int) -> np.ndarray | None:
        try:
            arr = np.load(self._path(peer, cache_id), mmap_mode="r", allow_pickle=False)
        except (FileNotFoundError, ValueError):
            return None
        if arr.dtype != np.dtype("<u8") or arr.shape != (n,):
            return None
        return arr

    def put(self, peer: str, cache_id: str, arr: np.ndarray) -> None:
        path = self._path(peer, cache_id)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        for old in os.listdir(os.path.dirname(path)):  # one set per peer is enough
            os.unlink(os.path.join(os.path.dirname(path), old))
        tmp = path + ".tmp.npy"
        np.save(tmp, np.ascontiguousarray(arr, dtype="<u8"))
        os.replace(tmp, path)
