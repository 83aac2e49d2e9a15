"""Party key material: TLS key + self-signed certificate, Ed25519 signing key.

``fedjoint keys init --party NAME --out DIR`` calls :func:`init_party_keys`, which writes

* ``NAME.tls.key``   EC P-256 private key, PKCS#8 PEM, mode 0600
* ``NAME.tls.crt``   self-signed X.509 certificate (public; give it to the peer)
* ``NAME.sign.key``  Ed25519 private key, PKCS#8 PEM, mode 0600
* ``NAME.sign.pub``  Ed25519 public key, SubjectPublicKeyInfo PEM (public; give it to the peer)

and returns the paths and the two fingerprints. Fingerprints are SHA-256, printed as
upper-case hex pairs joined by colons (``AB:CD:...``, the ``openssl x509 -fingerprint``
form): of the DER certificate, and of the raw 32-byte Ed25519 public key. Operators
exchange the two public files and compare the fingerprints over a second channel
(phone); each node.toml then pins the peer's certificate fingerprint and signing key.

The node loads its own material with :func:`load_local_identity` and its peer's with
:func:`load_peer_identity`; both raise :class:`KeyFileError` naming the file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PARTY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
#: DNS name present in every certificate fedjoint creates; clients use it as the TLS
#: target name (the peer's address is usually an IP or a name not in the cert).
TLS_NAME = "fedjoint.peer"


class KeyFileError(ValueError):
    """A key or certificate file is missing, unreadable or malformed (message names it)."""


def format_fingerprint(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


def normalize_fingerprint(text: str) -> str:
    """Accept ``AB:CD..``, ``abcd..``, ``sha256:..`` forms; return the canonical one."""
    if not isinstance(text, str):
        raise ValueError(f"fingerprint must be a string, not {type(text).__name__}")
    t = text.strip()
    if t.lower().startswith("sha256:"):
        t = t[7:]
    h = re.sub(r"[\s:]", "", t).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", h):
        raise ValueError(f"not a SHA-256 fingerprint (64 hex digits, optional colons): {text!r}")
    return format_fingerprint(bytes.fromhex(h))


def cert_der(cert_pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)


def cert_fingerprint(cert: bytes) -> str:
    """SHA-256 fingerprint of a certificate given as PEM or DER bytes."""
    der = cert_der(cert) if cert.lstrip().startswith(b"-----BEGIN") else cert
    return format_fingerprint(hashlib.sha256(der).digest())


def signing_fingerprint(pub: Ed25519PublicKey | bytes) -> str:
    """SHA-256 fingerprint of the raw 32-byte Ed25519 public key."""
    raw = pub if isinstance(pub, bytes) else pub.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return format_fingerprint(hashlib.sha256(raw).digest())


def signing_pub_hex(pub: Ed25519PublicKey) -> str:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def _write(path: Path, data: bytes, private: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    fd = os.open(path, flags, 0o600 if private else 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    if private:
        os.chmod(path, 0o600)


def make_self_signed_cert(party: str, key: ec.EllipticCurvePrivateKey, days: int = 825,
                          issuer_key=None, issuer_cert: x509.Certificate | None = None
                          ) -> x509.Certificate:
    """Self-signed (or, for tests, issuer-signed) certificate for ``party``."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fedjoint {party}"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, party)])
    now = _dt.datetime.now(_dt.timezone.utc)
    issuer = issuer_cert.subject if issuer_cert is not None else name
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(TLS_NAME),
                                                    x509.DNSName(f"{party.lower()}.fedjoint")]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=True,
                                     crl_sign=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    return builder.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())


def init_party_keys(party: str, out_dir: str | os.PathLike, *, days: int = 825) -> dict:
    """Create the four key files for ``party`` in ``out_dir``; refuse to overwrite.

    Returns ``{"party", "tls_key", "tls_cert", "signing_key", "signing_pub"`` (paths as
    str), ``"cert_fingerprint", "signing_fingerprint", "signing_pub_hex"}``.
    """
    if not PARTY_RE.match(party or ""):
        raise ValueError(f"party name {party!r}: expected letters, digits, '_', '.', '-'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "tls_key": out / f"{party}.tls.key",
        "tls_cert": out / f"{party}.tls.crt",
        "signing_key": out / f"{party}.sign.key",
        "signing_pub": out / f"{party}.sign.pub",
    }
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite existing key files: {', '.join(existing)}")
    tls_key = ec.generate_private_key(ec.SECP256R1())
    cert = make_self_signed_cert(party, tls_key, days)
    sk = Ed25519PrivateKey.generate()
    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    _write(paths["tls_key"], tls_key.private_bytes(serialization.Encoding.PEM, pkcs8, none), True)
    _write(paths["tls_cert"], cert.public_bytes(serialization.Encoding.PEM), False)
    _write(paths["signing_key"], sk.private_bytes(serialization.Encoding.PEM, pkcs8, none), True)
    _write(paths["signing_pub"], sk.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), False)
    result: dict = {"party": party, **{k: str(v) for k, v in paths.items()}}
    result["cert_fingerprint"] = cert_fingerprint(cert.public_bytes(serialization.Encoding.DER))
    result["signing_fingerprint"] = signing_fingerprint(sk.public_key())
    result["signing_pub_hex"] = signing_pub_hex(sk.public_key())
    return result


# ---------------------------------------------------------------- loading


def _read(path: str | os.PathLike, what: str, private: bool = False) -> bytes:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{what} file not found: {p}") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} file {p}: {exc.strerror}") from None
    if private and os.name == "posix" and p.stat().st_mode & 0o077:
        raise KeyFileError(f"{what} file {p} is readable by group/others "
                           f"(mode {oct(p.stat().st_mode & 0o777)}); run chmod 600 {p}")
    return data


def load_certificate(path: str | os.PathLike) -> bytes:
    """PEM bytes of a certificate file (validated)."""
    data = _read(path, "TLS certificate")
    try:
        x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise KeyFileError(f"TLS certificate file {path} is not a PEM certificate: {exc}") from None
    return data


def load_tls_key(path: str | os.PathLike) -> bytes:
    """PEM bytes of a TLS private key file (validated, must be mode 0600)."""
    data = _read(path, "TLS private key", private=True)
    try:
        serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"TLS private key file {path} is not an unencrypted PEM key: "
                           f"{type(exc).__name__}") from None
    return data


def load_signing_key(path: str | os.PathLike) -> Ed25519PrivateKey:
    data = _read(path, "signing key", private=True)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"signing key file {path} is not an unencrypted PEM key: "
                           f"{type(exc).__name__}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"signing key file {path} holds a {type(key).__name__}, "
                           "expected an Ed25519 private key")
    return key


def parse_signing_pubkey(text: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM or 64 hex digits (raw key)."""
    if isinstance(text, str):
        t = text.strip()
        if re.fullmatch(r"[0-9a-fA-F]{64}", t):
            return Ed25519PublicKey.from_public_bytes(bytes.fromhex(t))
        text = t.encode()
    key = serialization.load_pem_public_key(text)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"expected an Ed25519 public key, got {type(key).__name__}")
    return key


def load_signing_pubkey(path: str | os.PathLike) -> Ed25519PublicKey:
    data = _read(path, "signing public key")
    try:
        return parse_signing_pubkey(data.decode("ascii", "replace"))
    except ValueError as exc:
        raise KeyFileError(f"signing public key file {path}: {exc}") from None


def cert_dns_names(cert_pem: bytes) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return list(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        return []


@dataclass(frozen=True)
class LocalIdentity:
    """This party's key material as the channel needs it."""

    party: str
    tls_cert_pem: bytes
    tls_key_pem: bytes = field(repr=False)
    signing_key: Ed25519PrivateKey = field(repr=False)
    tls_cert_path: str | None = None
    tls_key_path: str | None = field(default=None, repr=False)

    @property
    def cert_fingerprint(self) -> str:
        return cert_fingerprint(self.tls_cert_pem)

    @property
    def signing_fingerprint(self) -> str:
        return signing_fingerprint(self.signing_key.public_key())


@dataclass(frozen=True)
class PeerIdentity:
    """The pinned peer: its certificate (used as the only trusted root) and signing key."""

    party: str
    tls_cert_pem: bytes
    cert_fingerprint: str
    signing_public_key: Ed25519PublicKey = field(repr=False)

    @property
    def signing_fingerprint(self) -> str:
        return signing_fingerprint(self.signing_public_key)

    @property
    def tls_name(self) -> str:
        names = cert_dns_names(self.tls_cert_pem)
        return TLS_NAME if TLS_NAME in names or not names else names[0]


def load_local_identity(party: str, tls_cert: str | os.PathLike, tls_key: str | os.PathLike,
                        signing_key: str | os.PathLike) -> LocalIdentity:
    cert = load_certificate(tls_cert)
    key = load_tls_key(tls_key)
    cert_pub = x509.load_pem_x509_certificate(cert).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_pub = serialization.load_pem_private_key(key, None).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert_pub != key_pub:
        raise KeyFileError(f"TLS key {tls_key} does not match certificate {tls_cert}")
    return LocalIdentity(party, cert, key, load_signing_key(signing_key),
                         str(tls_cert), str(tls_key))


def make_peer_identity(party: str, cert_pem: bytes, cert_fingerprint_pin: str,
                       signing_pub: Ed25519PublicKey, signing_fingerprint_pin: str | None = None,
                       *, source: str = "peer certificate") -> PeerIdentity:
    """Check the peer's certificate (and optionally signing key) against the pins."""
    pin = normalize_fingerprint(cert_fingerprint_pin)
    actual = cert_fingerprint(cert_pem)
    if actual != pin:
        raise KeyFileError(f"{source} has fingerprint {actual}, but the pinned fingerprint "
                           f"is {pin}")
    if signing_fingerprint_pin is not None:
        spin = normalize_fingerprint(signing_fingerprint_pin)
        if signing_fingerprint(signing_pub) != spin:
            raise KeyFileError(f"peer signing key has fingerprint "
                               f"{signing_fingerprint(signing_pub)}, pinned {spin}")
    return PeerIdentity(party, cert_pem, pin, signing_pub)


def load_peer_identity(party: str, tls_cert: str | os.PathLike, cert_fingerprint_pin: str,
                       signing_pub: str | os.PathLike | Ed25519PublicKey,
                       signing_fingerprint_pin: str | None = None) -> PeerIdentity:
    """Load the peer's public certificate and signing key and check them against the pins.

    ``signing_pub`` is a path to the peer's ``.sign.pub`` file, or an already parsed key
    (e.g. from 64 hex digits in node.toml via :func:`parse_signing_pubkey`).
    """
    cert = load_certificate(tls_cert)
    pub = signing_pub if isinstance(signing_pub, Ed25519PublicKey) else load_signing_pubkey(
        signing_pub)
    return make_peer_identity(party, cert, cert_fingerprint_pin, pub, signing_fingerprint_pin,
                              source=f"peer certificate {tls_cert}")
