"""Multi-buffer modexp (libcrypto_mb ``mbx_exp_mb8``) for the ``standard`` scheme and
CRT decryption: the same ciphertexts as gmpy2, byte for byte, phe's ``raw_encrypt`` /
``raw_decrypt`` as reference.

The mb tests skip where the CPU lacks AVX-512 IFMA or the ``fedjoint[native]`` extra is
missing, and fail when both are there and the path still does not load.
"""

from __future__ import annotations

import os

import gmpy2
import pytest

from secure_agg import native_mb
from secure_agg.keys import generate_keypair
from secure_agg.paillier import PaillierPrivateCipher, PaillierPublicCipher
from secure_agg.rng import Drbg

SEED = bytes(range(32))
ENV = native_mb.MODEXP_ENV


def _reason(mod_bits: int) -> str:
    return native_mb.exp_unavailable(mod_bits)


def test_mb_loads_where_it_should():
    lib, _ = native_mb.load()
    if lib is None or not native_mb.cpu_has_ifma():
        pytest.skip("libcrypto_mb or AVX-512 IFMA missing")
    for bits in (1024, 2047, 2048, 4095, 4096):
        assert _reason(bits) == "", bits


@pytest.fixture(scope="module", params=[1024, 2048])
def key(request):
    return generate_keypair(request.param, rng=Drbg(SEED, f"mb{request.param}"),
                            insecure_test_key=request.param < 2048)


def _run(monkeypatch, mode: str, sk, count: int):
    monkeypatch.setenv(ENV, mode)
    bank = PaillierPrivateCipher(sk, obfuscation="standard", workers=2)
    platform = PaillierPublicCipher(sk.public_key, obfuscation="standard", workers=2)
    vals = [(-1) ** i * (i * 7919 + 3) for i in range(count)]
    enc_bank = bank.encrypt(vals, rng=Drbg(SEED, "e"))
    enc_pub = platform.encrypt(vals, rng=Drbg(SEED, "e"))
    fresh = platform.rerandomize(enc_bank, rng=Drbg(SEED, "r"))
    return bank, vals, [platform.to_bytes(v) for v in (enc_bank, enc_pub, fresh)]


@pytest.mark.parametrize("count", [1, 8, 21])
def test_mb_equals_gmpy2_byte_for_byte_and_phe(monkeypatch, key, count):
    pub, sk = key
    if _reason(pub.n.bit_length() * 2):
        pytest.skip(f"mbx_exp_mb8 unavailable: {_reason(pub.n.bit_length() * 2)}")
    bank, vals, mb = _run(monkeypatch, "mb", sk, count)
    _, _, ref = _run(monkeypatch, "gmpy2", sk, count)
    assert mb == ref
    # key holder (CRT) == public path, and both are phe's raw_encrypt with the same r
    assert mb[0] == mb[1]
    units = bank._draw(Drbg(SEED, "e"), count, "standard")
    ppk = pub.to_phe()
    w = bank.ciphertext_bytes
    want = b"".join(ppk.raw_encrypt(int(v % pub.n), r_value=int(r)).to_bytes(w, "big")
                    for v, r in zip(vals, units, strict=True))
    assert mb[0] == want
    back = bank.from_bytes(mb[2], 64)
    monkeypatch.setenv(ENV, "mb")  # CRT decryption on mb8 too, against phe's decrypt
    assert bank.decrypt(back) == vals
    psk = sk.to_phe()
    assert [psk.raw_decrypt(int(c)) for c in back.data] == [v % pub.n for v in vals]


def test_powmod_list_tails_and_forced_fallback(monkeypatch):
    mod = gmpy2.next_prime(1 << 1023) * gmpy2.next_prime((1 << 1022) + 12345)
    mod = mod * mod
    bases = [gmpy2.mpz(i * 104729 + 2) ** 40 % mod for i in range(19)]
    want = gmpy2.powmod_base_list(bases, 1 << 1000 | 77, mod)
    for mode in ("auto", "gmpy2") + (() if _reason(mod.bit_length()) else ("mb",)):
        monkeypatch.setenv(ENV, mode)
        for k in (0, 1, 2, 3, 9, 19):
            assert native_mb.powmod_list(bases[:k], 1 << 1000 | 77, mod) == want[:k]
    monkeypatch.setenv(ENV, "gmpy2")
    assert not native_mb.use_mb(mod.bit_length())


def test_forced_mb_names_the_reason_and_bad_values_refused(monkeypatch):
    monkeypatch.setenv(ENV, "mb")
    with pytest.raises(native_mb.BackendUnavailable, match="exceed libcrypto_mb's 4096"):
        native_mb.use_mb(6144)
    monkeypatch.setenv(ENV, "fast")
    with pytest.raises(native_mb.BackendUnavailable, match="expected one of"):
        native_mb.use_mb(2048)
    monkeypatch.delenv(ENV)
    assert native_mb.use_mb(6144) is False  # auto falls back
    assert os.environ.get(ENV) is None


def test_failed_lane_recomputes_the_batch_on_gmpy2(monkeypatch):
    mod = gmpy2.next_prime(1 << 1023) ** 2
    if _reason(mod.bit_length()):
        pytest.skip(f"mbx_exp_mb8 unavailable: {_reason(mod.bit_length())}")
    bases = [gmpy2.mpz(i + 2) ** 300 % mod for i in range(11)]

    def failing(self, *_a):
        raise ArithmeticError("mbx_exp_mb8 lane status 0x00000010")

    monkeypatch.setenv(ENV, "mb")
    monkeypatch.setattr(native_mb.Exp8, "__call__", failing)
    assert native_mb.powmod_list(bases, 65537, mod) == gmpy2.powmod_base_list(
        bases, 65537, mod)
