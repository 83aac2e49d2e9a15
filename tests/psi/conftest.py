"""``psi_backend``: run a test module once per PSI compute path (psi/native).

* ``mb``: C extension + multi-buffer X25519 (skipped where the CPU or the
  ``fedjoint[native]`` extra is missing; ``test_psi_native`` fails if the extra is
  installed on an AVX-512 IFMA CPU and the path still does not load);
* ``openssl``: C extension without its AVX-512 IFMA code + OpenSSL X25519
  (``FEDJOINT_PSI_BACKEND=openssl``, ``FEDJOINT_PSI_NATIVE=scalar``);
* ``python``: pure-Python field code + OpenSSL (``FEDJOINT_PSI_NATIVE=off``).
"""

import os

import pytest

from psi import native

PATHS = {"mb": {native.BACKEND_ENV: "mb", native.NATIVE_ENV: "auto"},
         "openssl": {native.BACKEND_ENV: "openssl", native.NATIVE_ENV: "scalar"},
         "python": {native.BACKEND_ENV: "openssl", native.NATIVE_ENV: "off"}}


def set_path(name: str) -> dict:
    """Set the environment for compute path ``name``; returns the previous values."""
    old = {k: os.environ.get(k) for k in PATHS[name]}
    os.environ.update(PATHS[name])
    return old


def restore(old: dict) -> None:
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def mb_reason() -> str:
    """Why the multi-buffer path is unavailable here ("" if it is available)."""
    if native.field() is None:
        return "C extension not built"
    addr, why = native._load_mb()
    return "" if addr else why


@pytest.fixture(scope="module", params=list(PATHS))
def psi_backend(request):
    if request.param == "mb" and mb_reason():
        pytest.skip(f"multi-buffer X25519 unavailable: {mb_reason()}")
    old = set_path(request.param)
    yield request.param
    restore(old)
