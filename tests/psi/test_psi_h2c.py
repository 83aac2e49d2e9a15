"""RFC 9380 appendix J vectors for the curve25519 / edwards25519 SHA-512 ELL2 RO suites,
and the identities the PSI fast path relies on."""

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from psi import hash_to_curve as h2c

MSGS = ["", "abc", "abcdef0123456789", "q128_" + "q" * 128, "a512_" + "a" * 512]

# RFC 9380 J.4.1 curve25519_XMD:SHA-512_ELL2_RO_: msg -> (u0, u1, Q0.x, Q1.x, P.x, P.y)
CURVE25519_RO = {
    "": ("005fe8a7b8fef0a16c105e6cadf5a6740b3365e18692a9c05bfbb4d97f645a6a",
         "1347edbec6a2b5d8c02e058819819bee177077c9d10a4ce165aab0fd0252261a",
         "36b4df0c864c64707cbf6cf36e9ee2c09a6cb93b28313c169be29561bb904f98",
         "3fa114783a505c0b2b2fbeef0102853c0b494e7757f2a089d0daae7ed9a0db2b",
         "2de3780abb67e861289f5749d16d3e217ffa722192d16bbd9d1bfb9d112b98c0",
         "3b5dc2a498941a1033d176567d457845637554a2fe7a3507d21abd1c1bd6e878"),
    "abc": ("49bed021c7a3748f09fa8cdfcac044089f7829d3531066ac9e74e0994e05bc7d",
            "5c36525b663e63389d886105cee7ed712325d5a97e60e140aba7e2ce5ae851b6",
            "16b3d86e056b7970fa00165f6f48d90b619ad618791661b7b5e1ec78be10eac1",
            "7ec29ddbf34539c40adfa98fcb39ec36368f47f30e8f888cc7e86f4d46e0c264",
            "2b4419f1f2d48f5872de692b0aca72cc7b0a60915dd70bde432e826b6abc526d",
            "1b8235f255a268f0a6fa8763e97eb3d22d149343d495da1160eff9703f2d07dd"),
    "abcdef0123456789": (
        "6412b7485ba26d3d1b6c290a8e1435b2959f03721874939b21782df17323d160",
        "24c7b46c1c6d9a21d32f5707be1380ab82db1054fde82865d5c9e3d968f287b2",
        "71de3dadfe268872326c35ac512164850860567aea0e7325e6b91a98f86533ad",
        "5704069021f61e41779e2ba6b932268316d6d2a6f064f997a22fef16d1eaeaca",
        "68ca1ea5a6acf4e9956daa101709b1eee6c1bb0df1de3b90d4602382a104c036",
        "2a375b656207123d10766e68b938b1812a4a6625ff83cb8d5e86f58a4be08353"),
    MSGS[3]: ("5e123990f11bbb5586613ffabdb58d47f64bb5f2fa115f8ea8df0188e0c9e1b5",
              "5e8553eb00438a0bb1e7faa59dec6d8087f9c8011e5fb8ed9df31cb6c0d4ac19",
              "7a94d45a198fb5daa381f45f2619ab279744efdd8bd8ed587fc5b65d6cea1df0",
              "30506fb7a32136694abd61b6113770270debe593027a968a01f271e146e60c18",
              "096e9c8bae6c06b554c1ee69383bb0e82267e064236b3a30608d4ed20b73ac5a",
              "1eb5a62612cafb32b16c3329794645b5b948d9f8ffe501d4e26b073fef6de355"),
    MSGS[4]: ("20f481e85da7a3bf60ac0fb11ed1d0558fc6f941b3ac5469aa8b56ec883d6d7d",
              "017d57fd257e9a78913999a23b52ca988157a81b09c5442501d07fed20869465",
              "02d606e2699b918ee36f2818f2bc5013e437e673c9f9b9cdc15fd0c5ee913970",
              "38920e9b988d1ab7449c0fa9a6058192c0c797bb3d42ac345724341a1aa98745",
              "1bc61845a138e912f047b5e70ba9606ba2a447a4dade024c8ef3dd42b7bbc5fe",
              "623d05e47b70e25f7f1d51dda6d7c23c9a18ce015fe3548df596ea9e38c69bf1"),
}

# RFC 9380 J.5.1 edwards25519_XMD:SHA-512_ELL2_RO_: msg -> (u0, u1, P.x, P.y)
EDWARDS25519_RO = {
    "": ("03fef4813c8cb5f98c6eef88fae174e6e7d5380de2b007799ac7ee712d203f3a",
         "780bdddd137290c8f589dc687795aafae35f6b674668d92bf92ae793e6a60c75",
         "3c3da6925a3c3c268448dcabb47ccde5439559d9599646a8260e47b1e4822fc6",
         "09a6c8561a0b22bef63124c588ce4c62ea83a3c899763af26d795302e115dc21"),
    "abc": ("5081955c4141e4e7d02ec0e36becffaa1934df4d7a270f70679c78f9bd57c227",
            "005bdc17a9b378b6272573a31b04361f21c371b256252ae5463119aa0b925b76",
            "608040b42285cc0d72cbb3985c6b04c935370c7361f4b7fbdb1ae7f8c1a8ecad",
            "1a8395b88338f22e435bbd301183e7f20a5f9de643f11882fb237f88268a5531"),
    "abcdef0123456789": (
        "285ebaa3be701b79871bcb6e225ecc9b0b32dff2d60424b4c50642636a78d5b3",
        "2e253e6a0ef658fedb8e4bd6a62d1544fd6547922acb3598ec6b369760b81b31",
        "6d7fabf47a2dc03fe7d47f7dddd21082c5fb8f86743cd020f3fb147d57161472",
        "53060a3d140e7fbcda641ed3cf42c88a75411e648a1add71217f70ea8ec561a6"),
    MSGS[3]: ("4fedd25431c41f2a606952e2945ef5e3ac905a42cf64b8b4d4a83c533bf321af",
              "02f20716a5801b843987097a8276b6d869295b2e11253751ca72c109d37485a9",
              "5fb0b92acedd16f3bcb0ef83f5c7b7a9466b5f1e0d8d217421878ea3686f8524",
              "2eca15e355fcfa39d2982f67ddb0eea138e2994f5956ed37b7f72eea5e89d2f7"),
    MSGS[4]: ("6e34e04a5106e9bd59f64aba49601bf09d23b27f7b594e56d5de06df4a4ea33b",
              "1c1c2cb59fc053f44b86c5d5eb8c1954b64976d0302d3729ff66e84068f5fd96",
              "0efcfde5898a839b00997fbe40d2ebe950bc81181afbd5cd6b9618aa336c1e8c",
              "6dc2fc04f266c5c27f236a80b14f92ccd051ef1ff027f26a07f8c0f327d8f995"),
}

DST_M = b"QUUX-V01-CS02-with-curve25519_XMD:SHA-512_ELL2_RO_"
DST_E = b"QUUX-V01-CS02-with-edwards25519_XMD:SHA-512_ELL2_RO_"


@pytest.mark.parametrize("msg", MSGS)
def test_curve25519_ro_vectors(msg):
    u0, u1, q0x, q1x, px, py = (int(v, 16) for v in CURVE25519_RO[msg])
    assert h2c.hash_to_field(msg.encode(), 2, DST_M) == [u0, u1]
    assert h2c.map_to_curve25519(u0)[0] == q0x
    assert h2c.map_to_curve25519(u1)[0] == q1x
    assert h2c.hash_to_curve25519(msg.encode(), DST_M) == (px, py)


@pytest.mark.parametrize("msg", MSGS)
def test_edwards25519_ro_vectors(msg):
    u0, u1, px, py = (int(v, 16) for v in EDWARDS25519_RO[msg])
    assert h2c.hash_to_field(msg.encode(), 2, DST_E) == [u0, u1]
    assert h2c.hash_to_edwards25519(msg.encode(), DST_E) == (px, py)


def test_fast_batch_matches_reference_and_rfc():
    msgs = [m.encode() for m in MSGS] + [os.urandom(i % 40) for i in range(300)]
    fast = h2c.hash_to_u_batch(msgs, DST_M)
    assert fast == h2c.hash_to_u_reference(msgs, DST_M)
    assert h2c.hash_to_u_batch([], DST_M) == b""
    # clear_cofactor of the fast output's point gives the RFC's P
    for m in MSGS:
        u = int.from_bytes(h2c.hash_to_u_batch([m.encode()], DST_M), "little")
        u0, u1 = h2c.hash_to_field(m.encode(), 2, DST_M)
        r = h2c.mont_add(h2c.map_to_curve25519(u0), h2c.map_to_curve25519(u1))
        assert r[0] == u
        assert h2c.mont_mul(8, r)[0] == int(CURVE25519_RO[m][4], 16)


def test_x25519_on_uncleared_point_equals_scalar_over_8_on_rfc_output():
    """X25519(k, u(R)) == u([clamp(k)/8] P) with P = hash_to_curve = [8]R."""
    for m in MSGS[:3]:
        k = os.urandom(32)
        u = h2c.hash_to_u_batch([m.encode()], DST_M)
        got = X25519PrivateKey.from_private_bytes(k).exchange(
            X25519PublicKey.from_public_bytes(u))
        c = int.from_bytes(k, "little")
        c = (c & ~7 & ~(1 << 255)) | (1 << 254)
        p = h2c.hash_to_curve25519(m.encode(), DST_M)
        assert int.from_bytes(got, "little") == h2c.mont_mul(c // 8, p)[0]
        assert h2c.x25519_ref(k, int.from_bytes(u, "little")) == int.from_bytes(got, "little")


def test_blinding_commutes_and_unblinding_pair():
    from psi.engine import x25519_many
    from psi.protocol import blinding_pair
    from secure_agg.rng import Drbg
    u = h2c.hash_to_u_batch([b"913502000728319549", b"x"], DST_M)
    a, b = os.urandom(32), os.urandom(32)
    assert x25519_many(a, x25519_many(b, u)) == x25519_many(b, x25519_many(a, u))
    r, t = blinding_pair(Drbg(b"s" * 32))
    assert x25519_many(t, x25519_many(a, x25519_many(r, u))) == x25519_many(a, u)
