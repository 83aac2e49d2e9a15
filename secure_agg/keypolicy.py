"""One cipher/key policy and the one check of a peer's key against it.

Every algorithm that receives a public key from its peer builds the peer's cipher with
:func:`peer_public_cipher`; every job's own key size is checked with
:meth:`KeyPolicy.check_bits`. The rules, in one place:

* ``cipher = "plain"`` (no encryption) only when ``allow_plain`` (test nodes).
* Any other cipher must be in ``allowed_ciphers`` (``"paillier"``, ``"ou"``).
* Paillier keys must be within ``[min_key_bits, max_key_bits]``, OU keys within
  ``[ou_min_key_bits, ou_max_key_bits]``.
* Keys below :data:`SECURE_MIN_BITS` (2048) additionally need ``allow_test_keys``; such a
  key is flagged ``insecure_test_key`` for the engine. A policy minimum below 2048 is
  therefore only meaningful on a test node, and a test node whose minimum is 1024
  accepts a 1024-bit key (the minimum and the test flag no longer contradict).
* ``max_key_bits`` bounds what a peer can make this node compute or hold (a fake
  16384-bit modulus costs minutes of CPU and hundreds of MB).

Public-key descriptions cross in two forms, kept for wire compatibility of the
existing protocol versions: ``"full"`` (the key's JSON plus ``key_id``; SecureBoost v1)
and ``"modulus"`` (``n`` in hex; LR v1). :func:`peer_public_cipher` reads both. An OU
key crosses as ``{"scheme": "ou", "key_bits", "n", "g", "h"}`` (hex; ``"full"`` adds
``key_id``), each field length-limited and range-checked before use.
"""

from __future__ import annotations

from dataclasses import dataclass

from secure_agg.cipher import PlainCipher, PublicCipher

SECURE_MIN_BITS = 2048          #: below this a key is a test key
DEFAULT_MAX_KEY_BITS = 4096     #: largest key a peer may propose or send by default
ABSOLUTE_MAX_KEY_BITS = 8192    #: no policy may allow more (keygen time, memory)
SCHEMES = ("paillier", "ou", "plain")
#: the real ciphers a policy may allow-list (``plain`` is governed by ``allow_plain``)
CIPHERS = ("paillier", "ou")
#: the node.toml keys of each cipher's key-size range
BITS_KEYS = {"paillier": ("min_key_bits", "max_key_bits"),
             "ou": ("ou_min_key_bits", "ou_max_key_bits")}
MAX_MODULUS_HEX = ABSOLUTE_MAX_KEY_BITS // 4


class KeyPolicyError(PermissionError):
    """A key or cipher refused by this node's policy. ``rule`` names the rule broken:
    ``plain``, ``allowed_ciphers``, ``test_key``, the size key broken
    (:data:`BITS_KEYS`) or ``malformed``."""

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
    #: ciphers this node accepts (besides ``plain``, which ``allow_plain`` governs)
    allowed_ciphers: tuple[str, ...] = ("paillier",)
    ou_min_key_bits: int = SECURE_MIN_BITS
    ou_max_key_bits: int = DEFAULT_MAX_KEY_BITS

    def __post_init__(self):
        for scheme, (lo_key, hi_key) in BITS_KEYS.items():
            lo, hi = self.bits_range(scheme)
            if not 256 <= lo <= hi <= ABSOLUTE_MAX_KEY_BITS:
                raise ValueError(f"key policy: need 256 <= {lo_key} ({lo}) <= {hi_key} ({hi}) "
                                 f"<= {ABSOLUTE_MAX_KEY_BITS}")
        bad = [c for c in self.allowed_ciphers if c not in CIPHERS]
        if bad:
            raise ValueError(f"key policy: allowed_ciphers contains {bad[0]!r} (expected "
                             f"names from {', '.join(CIPHERS)})")

    def bits_range(self, scheme: str) -> tuple[int, int]:
        """``(min, max)`` key bits this node accepts for ``scheme``."""
        if scheme == "ou":
            return self.ou_min_key_bits, self.ou_max_key_bits
        return self.min_key_bits, self.max_key_bits

    def check_scheme(self, scheme: str, whose: str = "the job's") -> None:
        if scheme not in SCHEMES:
            raise KeyPolicyError(f"{whose} cipher {scheme!r} is unknown (expected one of "
                                 f"{', '.join(SCHEMES)})")
        if scheme == "plain":
            if not self.allow_plain:
                raise KeyPolicyError(f"{whose} cipher = 'plain' (no encryption) is refused by "
                                     "this node's policy (insecure test jobs are not allowed)",
                                     "plain")
        elif scheme not in self.allowed_ciphers:
            raise KeyPolicyError(f"{whose} cipher {scheme!r} is not in this node's [policy] "
                                 f"allowed_ciphers (allowed: "
                                 f"{', '.join(self.allowed_ciphers) or 'none'})",
                                 "allowed_ciphers")

    def check_bits(self, bits: object, whose: str = "the job's",
                   scheme: str = "paillier") -> bool:
        """Raise :class:`KeyPolicyError` unless a ``scheme`` key of ``bits`` is
        acceptable; returns whether it is a test key (below 2048 bits)."""
        if isinstance(bits, bool) or not isinstance(bits, int):
            raise KeyPolicyError(f"{whose} key size {bits!r} is not an integer")
        name = "OU" if scheme == "ou" else "Paillier"
        lo, hi = self.bits_range(scheme)
        lo_key, hi_key = BITS_KEYS.get(scheme, BITS_KEYS["paillier"])
        if bits > hi:
            raise KeyPolicyError(f"{whose} {name} key of {bits} bits is above this node's "
                                 f"maximum {hi_key} = {hi}", hi_key)
        if bits < lo:
            raise KeyPolicyError(f"{whose} {name} key of {bits} bits is below this node's "
                                 f"minimum {lo_key} = {lo}", lo_key)
        test_key = bits < SECURE_MIN_BITS
        if test_key and not self.allow_test_keys:
            raise KeyPolicyError(f"{whose} {name} key of {bits} bits is a test key (below "
                                 f"{SECURE_MIN_BITS}); this node does not allow test keys", "test_key")
        return test_key

    def check(self, scheme: str, bits: object, whose: str = "the job's") -> bool:
        """Scheme and size together; returns whether it is a test key."""
        self.check_scheme(scheme, whose)
        return False if scheme == "plain" else self.check_bits(bits, whose, scheme)


def scheme_of(cipher: PublicCipher) -> str:
    """``"plain"``, ``"ou"`` or ``"paillier"``."""
    if isinstance(cipher, PlainCipher):
        return "plain"
    from secure_agg.ou import OUPublicCipher
    return "ou" if isinstance(cipher, OUPublicCipher) else "paillier"


def describe_public_key(cipher, form: str = "full") -> dict:
    """What a peer needs to build this party's public cipher (no secret)."""
    scheme = scheme_of(cipher)
    if scheme in ("plain", "ou"):
        desc = {"scheme": scheme, "key_bits": int(cipher.key_bits)}
        if scheme == "ou":
            desc.update(cipher.public_key.fields())
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


def private_cipher(scheme: str, bits: int, rng=None, workers: int | None = 1,
                   insecure_test_key: bool = False):
    """A fresh private cipher of ``scheme`` (``"paillier"``, ``"ou"`` or ``"plain"``),
    its key derived from ``rng`` when one is given (a job replay regenerates it)."""
    if scheme == "plain":
        return PlainCipher(bits, workers=workers or 1)
    if scheme == "ou":
        from secure_agg.ou import OUPrivateCipher as Cipher
    elif scheme == "paillier":
        from secure_agg.paillier import PaillierPrivateCipher as Cipher
    else:
        raise KeyPolicyError(f"cipher {scheme!r} is unknown (expected one of "
                             f"{', '.join(SCHEMES)})")
    return Cipher.generate(bits, rng=rng, workers=workers,
                           insecure_test_key=insecure_test_key)


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
        own_scheme = scheme_of(own)
        if scheme != own_scheme:
            raise KeyPolicyError(f"the peer uses cipher {scheme!r} but this party uses "
                                 f"{own_scheme!r}")
        if isinstance(bits, int) and bits < min(own.key_bits, SECURE_MIN_BITS):
            raise KeyPolicyError(f"the peer's key of {bits} bits is weaker than this "
                                 f"party's {own.key_bits}-bit key")
    test_key = policy.check(str(scheme), bits, "the peer's")
    if scheme == "plain":
        return PlainCipher(bits, workers=workers)
    if scheme == "ou":
        return _peer_ou(desc, bits, test_key, workers)
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


def _peer_ou(desc: dict, bits: int, test_key: bool, workers: int) -> PublicCipher:
    from secure_agg.ou import OUPublicCipher
    from secure_agg.ou_keys import OUPublicKey
    try:
        key = OUPublicKey.from_fields(desc, insecure_test_key=test_key,
                                      max_hex=MAX_MODULUS_HEX)
    except ValueError as exc:
        raise KeyPolicyError(f"the peer's public key is refused: {exc}") from None
    if key.bits != bits:
        raise KeyPolicyError(f"the peer's key description says {bits} bits, the key has "
                             f"{key.bits}")
    return OUPublicCipher(key, workers=workers)
