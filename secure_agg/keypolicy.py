"""One cipher/key policy and the one check of a peer's key against it.

Every algorithm that receives a public key from its peer builds the peer's cipher with
:func:`peer_public_cipher`; every job's own key size is checked with
:meth:`KeyPolicy.check_bits`. The rules, in one place:

* ``cipher = "plain"`` (no encryption) only when ``allow_plain`` (test nodes).
* Paillier keys must be within ``[min_key_bits, max_key_bits]``.
* Keys below :data:`SECURE_MIN_BITS` (2048) additionally need ``allow_test_keys``; such a
  key is flagged ``insecure_test_key`` for the engine. A policy minimum below 2048 is
  therefore only meaningful on a test node, and a test node whose minimum is 1024
  accepts a 1024-bit key (the minimum and the test flag no longer contradict).
* ``max_key_bits`` bounds what a peer can make this node compute or hold (a fake
  16384-bit modulus costs minutes of CPU and hundreds of MB).

Public-key descriptions cross in two forms, kept for wire compatibility of the
existing protocol versions: ``"full"`` (the key's JSON plus ``key_id``; SecureBoost v1)
and ``"modulus"`` (``n`` in hex; LR v1). :func:`peer_public_cipher` reads both.
"""

from __future__ import annotations

from dataclasses import dataclass

from secure_agg.cipher import PlainCipher, PublicCipher

SECURE_MIN_BITS = 2048          #: below this a key is a test key
DEFAULT_MAX_KEY_BITS = 4096     #: largest key a peer may propose or send by default
ABSOLUTE_MAX_KEY_BITS = 8192    #: no policy may allow more (keygen time, memory)
SCHEMES = ("paillier", "plain")
MAX_MODULUS_HEX = ABSOLUTE_MAX_KEY_BITS // 4


class KeyPolicyError(PermissionError):
    """A key or cipher refused by this node's policy. ``rule`` names the rule broken:
    ``plain``, ``test_key``, ``min_key_bits``, ``max_key_bits`` or ``malformed``."""

    def __init__(self, message: str, rule: str = "malformed"):
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True)
class KeyPolicy:
    """What keys and ciphers this node accepts, for its own key and its peer's."""

    min_key_bits: int = SECURE_MIN_BITS
    max_key_bits: int = DEFAULT_MAX_KEY_BITS
    allow_plain: bool = False
    allow_test_keys: bool = False

    def __post_init__(self):
        if not 256 <= self.min_key_bits <= self.max_key_bits <= ABSOLUTE_MAX_KEY_BITS:
            raise ValueError(f"key policy: need 256 <= min_key_bits ({self.min_key_bits}) <= "
                             f"max_key_bits ({self.max_key_bits}) <= {ABSOLUTE_MAX_KEY_BITS}")

    def check_scheme(self, scheme: str, whose: str = "the job's") -> None:
        if scheme not in SCHEMES:
            raise KeyPolicyError(f"{whose} cipher {scheme!r} is unknown (expected one of "
                                 f"{', '.join(SCHEMES)})")
        if scheme == "plain" and not self.allow_plain:
            raise KeyPolicyError(f"{whose} cipher = 'plain' (no encryption) is refused by "
                                 "this node's policy (insecure test jobs are not allowed)", "plain")

    def check_bits(self, bits: object, whose: str = "the job's") -> bool:
        """Raise :class:`KeyPolicyError` unless a Paillier key of ``bits`` is acceptable;
        returns whether it is a test key (below 2048 bits)."""
        if isinstance(bits, bool) or not isinstance(bits, int):
            raise KeyPolicyError(f"{whose} key size {bits!r} is not an integer")
        if bits > self.max_key_bits:
            raise KeyPolicyError(f"{whose} Paillier key of {bits} bits is above this node's "
                                 f"maximum max_key_bits = {self.max_key_bits}", "max_key_bits")
        if bits < self.min_key_bits:
            raise KeyPolicyError(f"{whose} Paillier key of {bits} bits is below this node's "
                                 f"minimum min_key_bits = {self.min_key_bits}", "min_key_bits")
        test_key = bits < SECURE_MIN_BITS
        if test_key and not self.allow_test_keys:
            raise KeyPolicyError(f"{whose} Paillier key of {bits} bits is a test key (below "
                                 f"{SECURE_MIN_BITS}); this node does not allow test keys", "test_key")
        return test_key

    def check(self, scheme: str, bits: object, whose: str = "the job's") -> bool:
        """Scheme and size together; returns whether it is a test key."""
        self.check_scheme(scheme, whose)
        return self.check_bits(bits, whose) if scheme == "paillier" else False


def describe_public_key(cipher, form: str = "full") -> dict:
    """What a peer needs to build this party's public cipher (no secret)."""
    if isinstance(cipher, PlainCipher):
        desc = {"scheme": "plain", "key_bits": cipher.key_bits}
        if form == "full":
            desc["key_id"] = cipher.key_id
        return desc
    if form == "modulus":
        return {"scheme": "paillier", "key_bits": int(cipher.key_bits),
                "n": format(int(cipher.n), "x")}
    if form != "full":
        raise ValueError(f"unknown key description form {form!r}")
    return {"scheme": "paillier", "public_key": cipher.public().public_key.to_json(),
            "key_bits": cipher.key_bits, "key_id": cipher.key_id}


def peer_public_cipher(desc: object, policy: KeyPolicy, workers: int = 1, *,
                       own: PublicCipher | None = None) -> PublicCipher:
    """The peer's public cipher from its description, if ``policy`` accepts it.

    ``own``: this party's own cipher when it holds one (LR): the peer must then use the
    same scheme and a key no weaker than ``min(own, 2048)`` bits.
    """
    if not isinstance(desc, dict):
        raise KeyPolicyError("the peer's key description is not an object")
    scheme, bits = desc.get("scheme"), desc.get("key_bits")
    if own is not None:
        own_scheme = "plain" if isinstance(own, PlainCipher) else "paillier"
        if scheme != own_scheme:
            raise KeyPolicyError(f"the peer uses cipher {scheme!r} but this party uses "
                                 f"{own_scheme!r}")
        if isinstance(bits, int) and bits < min(own.key_bits, SECURE_MIN_BITS):
            raise KeyPolicyError(f"the peer's key of {bits} bits is weaker than this "
                                 f"party's {own.key_bits}-bit key")
    test_key = policy.check(str(scheme), bits, "the peer's")
    if scheme == "plain":
        return PlainCipher(bits, workers=workers)
    from secure_agg.keys import PaillierPublicKey
    from secure_agg.paillier import PaillierPublicCipher
    try:
        if "public_key" in desc:
            text = desc["public_key"]
            if not isinstance(text, str) or len(text) > MAX_MODULUS_HEX + 512:
                raise ValueError("malformed public key")
            key = PaillierPublicKey.from_json(text, insecure_test_key=test_key)
        else:
            n_hex = desc.get("n")
            if not isinstance(n_hex, str) or not 0 < len(n_hex) <= MAX_MODULUS_HEX:
                raise ValueError("missing or malformed modulus")
            n = int(n_hex, 16)
            if n.bit_length() != bits or n % 2 == 0:
                raise ValueError("modulus does not match its declared size")
            key = PaillierPublicKey(n, insecure_test_key=test_key)
    except ValueError as exc:
        raise KeyPolicyError(f"the peer's public key is refused: {exc}") from None
    if key.bits != bits:
        raise KeyPolicyError(f"the peer's key description says {bits} bits, the key has "
                             f"{key.bits}")
    return PaillierPublicCipher(key, workers=workers)
