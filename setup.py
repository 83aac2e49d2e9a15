"""The PSI hot loops in C (psi/native/_psi_native.c); everything else is in pyproject.toml.

Optional: where it cannot be compiled the install still succeeds and psi/ runs its
pure-Python code (docs/psi.md, "Compute paths")."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "psi.native._psi_native", ["psi/native/_psi_native.c"],
    depends=["psi/native/fe25519.h", "psi/native/fe25519_ifma.h", "psi/native/sha512_x8.h",
             "psi/native/psi_ifma.h"],
    extra_compile_args=["-O3"], optional=True)])
