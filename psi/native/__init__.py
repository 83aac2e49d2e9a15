"""Which compiled code PSI runs: the C extension and multi-buffer X25519 (libcrypto_mb).

Two independent choices, made per process from the environment (worker processes
inherit it) and the machine, each with a pure-Python / OpenSSL fallback that gives
byte-identical results:

* field code (hash-to-curve, witnesses, point checks): the C extension
  ``psi.native._psi_native`` built by ``pip install`` (setuptools ``ext-modules``,
  optional), else the gmpy2 code in psi/hash_to_curve.py and psi/engine.py. In C all
  field work (Elligator 2 with its square roots, Legendre symbols, [8], batched
  inversions) runs 8 lanes wide with AVX-512 IFMA when the CPU has it (and AVX-512BW),
  else in scalar C. ``FEDJOINT_PSI_NATIVE`` = ``auto`` | ``scalar`` (C without the
  SIMD code) | ``off`` (the Python code).
* X25519: Intel's multi-buffer ``mbx_x25519_mb8`` (8 lanes per call, AVX-512 IFMA) from
  the ``ipp-crypto`` wheel (``pip install 'fedjoint[native]'``, x86_64 Linux; loaded by
  :mod:`secure_agg.native_mb`, shared with the Paillier engine), used
  when the CPU has AVX-512 IFMA (``/proc/cpuinfo``), the library reports X25519 8-lane
  support for this CPU (``mbx_get_algo_info``) and it reproduces the RFC 7748 vectors
  on load; else OpenSSL through ``cryptography``. ``FEDJOINT_PSI_BACKEND`` =
  ``auto`` (default) | ``mb`` (required: error naming the reason if unavailable) |
  ``openssl`` (forced). Every lane's status is checked: a low-order input is refused
  as with OpenSSL, any other lane failure recomputes the batch with OpenSSL.

The choice and the reason for a fallback are logged once per process on the
``fedjoint.psi`` logger. Nothing here touches the network; what each party learns is
unchanged (local computation).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os

from secure_agg.native_mb import cpu_has_ifma, lib_dirs, load_from

log = logging.getLogger("fedjoint.psi")

BACKEND_ENV = "FEDJOINT_PSI_BACKEND"
NATIVE_ENV = "FEDJOINT_PSI_NATIVE"
BACKENDS = ("auto", "mb", "openssl")
_MBX_ALGO_X25519 = 4  # enum MBX_ALGO in crypto_mb/cpu_features.h
_MBX_WIDTH_MB8 = 8
# RFC 7748 section 5.2, first vector: the load-time self-test of the multi-buffer path
_KAT = ("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
        "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")


class BackendUnavailable(RuntimeError):
    """``FEDJOINT_PSI_BACKEND=mb`` was asked for but cannot be used here."""


@functools.cache
def _load_ext():
    try:
        from . import _psi_native
    except ImportError as exc:
        return None, f"C extension psi.native._psi_native not built ({exc})"
    return _psi_native, ""


def field():
    """The C extension module, or None (pure Python) -- with the reason logged once."""
    mode = os.environ.get(NATIVE_ENV, "auto").lower()
    if mode in ("off", "0", "python", "no"):
        return None
    mod, why = _load_ext()
    if mod is None:
        _note(f"psi: {why}; using the pure-Python field code (slower, same results)")
        return None
    mod.simd(mode != "scalar")
    return mod


def _lib_dirs() -> list[str]:
    """Where the ipp-crypto wheel puts its libraries (secure_agg.native_mb)."""
    return lib_dirs()


@functools.cache
def _load_mb() -> tuple[int, str]:
    """(address of mbx_x25519_mb8, "") or (0, why not)."""
    ext, why = _load_ext()
    if ext is None:
        return 0, why
    if not cpu_has_ifma():
        return 0, "this CPU has no AVX-512 IFMA"
    lib, why = load_from(_lib_dirs())  # loads the wheel's Intel runtime first
    if lib is None:
        return 0, why
    if not lib.mbx_get_algo_info(_MBX_ALGO_X25519) & _MBX_WIDTH_MB8:
        return 0, "libcrypto_mb reports no 8-lane X25519 on this CPU"
    addr = ctypes.cast(lib.mbx_x25519_mb8, ctypes.c_void_p).value
    k, u, want = (bytes.fromhex(h) for h in _KAT)
    got = ext.x25519_mb8(addr, k, u * 3)
    if got != want * 3:
        return 0, f"libcrypto_mb failed the RFC 7748 self-test (got {got!r})"
    _keep.append(lib)
    return addr, ""


_keep: list = []  # the loaded library stays referenced for the life of the process


def x25519_backend() -> tuple[str, int]:
    """``("mb", address)`` or ``("openssl", 0)`` for this process's settings."""
    want = os.environ.get(BACKEND_ENV, "auto").lower()
    if want not in BACKENDS:
        raise BackendUnavailable(f"{BACKEND_ENV}={want!r}: expected one of {BACKENDS}")
    if want == "openssl":
        return "openssl", 0
    if field() is None:
        why = f"{NATIVE_ENV} turns the C extension off"
        addr = 0
    else:
        addr, why = _load_mb()
    if addr:
        return "mb", addr
    if want == "mb":
        raise BackendUnavailable(f"{BACKEND_ENV}=mb but multi-buffer X25519 is unavailable: "
                                 f"{why}")
    _note(f"psi: multi-buffer X25519 unavailable ({why}); using OpenSSL X25519")
    return "openssl", 0


def describe() -> dict:
    """What this process runs (bench output, logs)."""
    x, _ = x25519_backend()
    ext = field()
    kind = "python" if ext is None else "c+ifma" if ext.simd() else "c"
    return {"x25519": x, "field": kind, "cpu_avx512ifma": cpu_has_ifma()}


@functools.cache
def _note(msg: str) -> None:
    log.info(msg)
