"""Loading Intel's multi-buffer library ``libcrypto_mb`` (ipp-crypto wheel) and the
8-lane modular exponentiation ``mbx_exp_mb8``.

Shared by the PSI backend (psi/native, X25519) and the Paillier engine: the wheel
(``pip install 'fedjoint[native]'``, x86_64 Linux) puts the library under
``<prefix>/lib`` without a RUNPATH, so its Intel runtime is loaded first. Local
computation only: nothing here touches the network or changes any result.

:func:`powmod_list` is the Paillier engine's ``[b^e mod m]`` for one exponent and
modulus: :class:`Exp8` (``mbx_exp_mb8``, 8 lanes with AVX-512 IFMA, moduli up to 4,096
bits) or ``gmpy2.powmod_base_list`` -- exact arithmetic either way, so the results are
identical. ``FEDJOINT_PAILLIER_MODEXP`` = ``auto`` (default: mb8 when the CPU has
AVX-512 IFMA, the library is installed, reports 8-lane modexp at that size and passes
a self-test against gmpy2 on load) | ``mb`` (required: error naming the reason) |
``gmpy2`` (forced). The choice and a fallback's reason are logged once per process on
the ``fedjoint.secure_agg`` logger.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import site
import sys

import gmpy2

log = logging.getLogger("fedjoint.secure_agg")

MODEXP_ENV = "FEDJOINT_PAILLIER_MODEXP"
MODEXP_BACKENDS = ("auto", "mb", "gmpy2")
#: a last group of fewer lanes than this goes to gmpy2 (8 padded lanes cost about as
#: much as 2.5 gmpy2 powmods at the sizes measured in bench/paillier_mb.py)
MB_MIN_LANES = 3

RUNTIME_LIBS = ("libintlc.so.5", "libirng.so", "libimf.so", "libsvml.so")
LANES = 8
_MBX_ALGO_RSA = {1024: 0, 2048: 1, 3072: 2, 4096: 3}  # enum MBX_ALGO (cpu_features.h)
_MBX_WIDTH_MB8 = 8


def cpu_has_ifma() -> bool:
    """The CPU reports AVX-512 IFMA (``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return "avx512ifma" in line.split()
    except OSError:
        pass
    return False


def lib_dirs() -> list[str]:
    """Where the ipp-crypto wheel puts its libraries: ``<prefix>/lib`` (or the user base)."""
    dirs = [os.path.join(sys.prefix, "lib"), os.path.join(site.getuserbase(), "lib")]
    if sys.base_prefix != sys.prefix:
        dirs.append(os.path.join(sys.base_prefix, "lib"))
    return dirs


@functools.cache
def load() -> tuple[ctypes.CDLL | None, str]:
    """(the loaded ``libcrypto_mb``, "") or (None, why not). Kept for the process."""
    return load_from(lib_dirs())


def load_from(dirs: list[str]) -> tuple[ctypes.CDLL | None, str]:
    """:func:`load` from the first of ``dirs`` that holds the library."""
    for d in dirs:
        path = os.path.join(d, "libcrypto_mb.so.13")
        if not os.path.exists(path):
            continue
        try:
            for name in RUNTIME_LIBS:
                ctypes.CDLL(os.path.join(d, name), mode=ctypes.RTLD_GLOBAL)
            lib = ctypes.CDLL(path)
        except OSError as exc:
            return None, (f"{path} did not load ({exc}); install intel-cmplr-lib-rt "
                          "(pip install 'fedjoint[native]')")
        lib.mbx_get_algo_info.restype = ctypes.c_uint64
        lib.mbx_get_algo_info.argtypes = [ctypes.c_int]
        lib.mbx_exp_BufferSize.restype = ctypes.c_int
        lib.mbx_exp_BufferSize.argtypes = [ctypes.c_int]
        lib.mbx_exp_mb8.restype = ctypes.c_uint32
        return lib, ""
    return None, ("libcrypto_mb not installed (pip install 'fedjoint[native]' on x86_64 "
                  "Linux)")


def exp_sizes(mod_bits: int) -> int:
    """The library's modulus size class (1024..4096) for ``mod_bits``, or 0."""
    for size in (1024, 2048, 3072, 4096):
        if mod_bits <= size:
            return size
    return 0


@functools.cache
def exp_unavailable(mod_bits: int) -> str:
    """Why 8-lane modexp at ``mod_bits`` cannot run here ("" when it can)."""
    size = exp_sizes(mod_bits)
    if not size:
        return f"{mod_bits}-bit moduli exceed libcrypto_mb's 4096-bit modexp"
    if not cpu_has_ifma():
        return "this CPU has no AVX-512 IFMA"
    lib, why = load()
    if lib is None:
        return why
    if not lib.mbx_get_algo_info(_MBX_ALGO_RSA[size]) & _MBX_WIDTH_MB8:
        return f"libcrypto_mb reports no 8-lane {size}-bit modexp on this CPU"
    # self-test: an odd modulus of exactly mod_bits, mixed bases and exponents
    mod = (1 << (mod_bits - 1)) | (gmpy2.mpz(3) ** (mod_bits // 2) % (1 << (mod_bits - 1))) | 1
    bases = [(mod * (i + 3)) // 11 + i for i in range(LANES)]
    exps = [(1 << (i * 37 % 200)) + 12345 * i + 1 for i in range(LANES)]
    try:
        got = Exp8(mod_bits, 200, checked=False)(bases, exps, [mod] * LANES)
    except (ArithmeticError, OSError) as exc:  # the library's sizes: near 1k/2k/3k/4k
        return f"mbx_exp_mb8 refuses {mod_bits}-bit moduli ({exc})"
    if got != [int(gmpy2.powmod(b, e, mod)) for b, e in zip(bases, exps, strict=True)]:
        return f"mbx_exp_mb8 self-test at {mod_bits} bits disagrees with gmpy2"
    return ""


class BackendUnavailable(RuntimeError):
    """``FEDJOINT_PAILLIER_MODEXP=mb`` was asked for but cannot be used here."""


def use_mb(mod_bits: int) -> bool:
    """Whether :func:`powmod_list` runs mb8 at this modulus size (see the module doc)."""
    want = os.environ.get(MODEXP_ENV, "auto").lower()
    if want not in MODEXP_BACKENDS:
        raise BackendUnavailable(f"{MODEXP_ENV}={want!r}: expected one of "
                                 f"{MODEXP_BACKENDS}")
    if want == "gmpy2":
        return False
    why = exp_unavailable(mod_bits)
    if not why:
        _note(f"paillier: modexp at {mod_bits} bits on libcrypto_mb mbx_exp_mb8")
        return True
    if want == "mb":
        raise BackendUnavailable(f"{MODEXP_ENV}=mb but 8-lane modexp is unavailable: {why}")
    _note(f"paillier: mbx_exp_mb8 unavailable at {mod_bits} bits ({why}); using gmpy2")
    return False


def powmod_list(bases: list, exp, mod) -> list:
    """``[b^exp mod mod for b in bases]`` (``0 <= b < mod``, ``exp >= 0``, odd ``mod``)
    on mb8 or gmpy2 (identical values); a batch with a failed lane is recomputed on
    gmpy2."""
    mod_bits = int(mod).bit_length()
    full = len(bases) - len(bases) % LANES
    if len(bases) % LANES >= MB_MIN_LANES:
        full = len(bases)
    if not full or exp <= 0 or not use_mb(mod_bits):
        return gmpy2.powmod_base_list(bases, exp, mod)
    f = Exp8(mod_bits, int(exp).bit_length())
    out: list = []
    e, m = int(exp), int(mod)
    try:
        for s in range(0, full, LANES):
            lane = [int(b) for b in bases[s:s + LANES]]
            k = len(lane)
            lane += [lane[0]] * (LANES - k)
            out.extend(gmpy2.mpz(x) for x in f(lane, [e] * LANES, [m] * LANES)[:k])
    except ArithmeticError as exc:
        _note(f"paillier: {exc}; batch recomputed with gmpy2")
        return gmpy2.powmod_base_list(bases, exp, mod)
    if full < len(bases):
        out.extend(gmpy2.powmod_base_list(bases[full:], exp, mod))
    return out


@functools.cache
def _note(msg: str) -> None:
    log.info(msg)


def _limbs(values, size: int):
    words = size // 64
    arr = (ctypes.c_uint64 * (words * LANES))()
    raw = b"".join(int(v).to_bytes(size // 8, "little") for v in values)
    ctypes.memmove(arr, raw, len(raw))
    ptrs = (ctypes.c_void_p * LANES)(
        *[ctypes.addressof(arr) + 8 * words * i for i in range(LANES)])
    return arr, ptrs


class Exp8:
    """8-lane ``base^exp mod mod`` for one modulus size and exponent length (the buffer
    is allocated once; one instance per thread)."""

    def __init__(self, mod_bits: int, exp_bits: int, checked: bool = True):
        why = exp_unavailable(mod_bits) if checked else ""
        if why:
            raise BackendUnavailable(why)
        self.lib, _ = load()
        self.size = exp_sizes(mod_bits)
        self.mod_bits, self.exp_bits = mod_bits, exp_bits
        self.exp_size = -(-exp_bits // 64) * 64
        nbuf = self.lib.mbx_exp_BufferSize(self.size)
        self.buf = (ctypes.c_uint8 * nbuf)()
        self.nbuf = nbuf

    def __call__(self, bases, exps, mods) -> list[int]:
        """``[b^e mod m]`` for exactly 8 (base, exponent, modulus) lanes; each base below
        its modulus, each exponent below ``2^exp_bits``."""
        out, outp = _limbs([0] * LANES, self.size)
        _b, bp = _limbs(bases, self.size)
        _e, ep = _limbs(exps, self.exp_size)
        _m, mp = _limbs(mods, self.size)
        st = self.lib.mbx_exp_mb8(outp, bp, ep, ctypes.c_int(self.exp_bits), mp,
                                  ctypes.c_int(self.mod_bits), self.buf,
                                  ctypes.c_int(self.nbuf))
        if st:
            raise ArithmeticError(f"mbx_exp_mb8 lane status {st:#010x}")
        raw = ctypes.string_at(out, self.size // 8 * LANES)
        step = self.size // 8
        return [int.from_bytes(raw[i * step:(i + 1) * step], "little") for i in range(LANES)]
