"""Long-lived per-peer OPRF keys and the caches of unbalanced PSI.

Three stores, all local to one party:

* :class:`KeyStore` (platform): one 32-byte X25519 scalar per peer, in
  ``<key_dir>/psi-oprf-<peer>.key``, created from ``os.urandom`` with mode 0600 inside
  a 0700 directory; a key file readable by group/other is refused. The key is
  long-lived (it is what makes the cache reusable), so it is *not* drawn from the
  per-job DRBG; an auditor replaying the platform's side needs this file from the
  platform's vault. :meth:`KeyStore.rotate` replaces it (every cache built with the old
  key becomes invalid because caches are keyed by :func:`key_id`).
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

import hashlib
import json
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

CACHE_FORMAT = "fedjoint-psi-oprf-cache-v2"  # v2: F_k = [64] X25519(k, H)
_PEER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check_peer(peer: str) -> str:
    if not isinstance(peer, str) or not _PEER_RE.match(peer):
        raise ValueError(f"invalid peer name {peer!r} for a key/cache file name")
    return peer


def key_id(key: bytes) -> str:
    """Public fingerprint of an OPRF key: SHA-256 of its X25519 public key (hex, 32)."""
    pub = X25519PrivateKey.from_private_bytes(key).public_key().public_bytes_raw()
    return hashlib.sha256(b"fedjoint-psi-oprf-key-id\0" + pub).hexdigest()[:32]


class KeyStore:
    """Per-peer long-lived OPRF keys (files, 0600)."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = os.fspath(directory)

    def path(self, peer: str) -> str:
        return os.path.join(self.dir, f"psi-oprf-{_check_peer(peer)}.key")

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

    def rotate(self, peer: str) -> bytes:
        path = self.path(peer)
        if os.path.exists(path):
            os.unlink(path)
        return self._write_new(path)

    def _write_new(self, path: str) -> bytes:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        key = os.urandom(32)
        tmp = f"{path}.tmp{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if a concurrent writer won: use theirs
        except FileExistsError:
            os.unlink(tmp)
            return self.oprf_key(os.path.basename(path)[9:-4], create=False)
        os.unlink(tmp)
        return key


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
        kid = key_id(key)
        d = cls.location(cache_dir, peer, digest, kid)
        t0 = time.perf_counter()
        n = len(prepared.ids)
        full = np.empty((n, 32), dtype=np.uint8)  # filled block by block: no joined copy
        at = 0
        for blk in engine.hash_blind_times64_stream(prepared.ids, dst.encode(), key, batch):
            k = len(blk) // 32
            full[at:at + k] = np.frombuffer(blk, dtype=np.uint8).reshape(k, 32)
            at += k
        if at != n:
            raise RuntimeError(f"OPRF cache build produced {at} values for {n} IDs")
        trunc = full[:, :8].copy().view("<u8").ravel()
        order = np.argsort(trunc, kind="stable")
        peer_dir = os.path.dirname(d)
        os.makedirs(peer_dir, mode=0o700, exist_ok=True)
        for old in os.listdir(peer_dir):  # invalidate stale caches for this peer
            if os.path.join(peer_dir, old) != d:
                shutil.rmtree(os.path.join(peer_dir, old), ignore_errors=True)
        tmp = d + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, mode=0o700)
        np.save(os.path.join(tmp, "trunc.npy"), trunc[order])
        np.save(os.path.join(tmp, "full.npy"), full[order])
        np.save(os.path.join(tmp, "rows.npy"), prepared.rows[order].astype(np.int64))
        meta = {"format": CACHE_FORMAT, "peer": peer, "dataset_digest": digest, "key_id": kid,
                "norm_version": prepared.norm_version, "dst": dst, "n": int(len(trunc)),
                "trunc_bits": 64, "created": time.time(), "prep_stats": prepared.stats(),
                "build_seconds": round(time.perf_counter() - t0, 3)}
        meta["cache_id"] = hashlib.sha256(json.dumps(
            [digest, kid, prepared.norm_version, dst, len(trunc)]).encode()).hexdigest()[:32]
        with open(os.path.join(tmp, "meta.json"), "w") as fh:
            json.dump(meta, fh, sort_keys=True)
        shutil.rmtree(d, ignore_errors=True)
        os.replace(tmp, d)
        return cls.load(cache_dir, peer, digest, kid, prepared.norm_version, dst)

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
