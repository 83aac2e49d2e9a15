"""Pinned signing keys: the Ed25519 keys a transcript's signatures must verify under.

Pins come from the API (key objects, raw bytes, hex keys or SHA-256 fingerprints),
from ``--pin NAME=KEY`` options, or from a node.toml (this node's signing key file
and its ``[peer] signing_public_key``). Replay pins from the party's own node.toml.
"""

from __future__ import annotations

from pathlib import Path

from federation.audit.findings import CannotRun, is_hex
from federation.transcript import public_key_bytes


def normalise_pins(pinned_keys: dict | None) -> dict[str, str]:
    """name -> pinned value (lowercase hex: raw public key or its SHA-256 fingerprint;
    ``sha256:`` prefixes are accepted)."""
    out: dict[str, str] = {}
    for name, key in (pinned_keys or {}).items():
        if isinstance(key, str):
            v = key.strip().lower().removeprefix("sha256:").replace(":", "")
            if not is_hex(v, 64):
                raise CannotRun(f"pinned key for {name!r} is not 64 hex digits "
                                "(an Ed25519 public key or its SHA-256 fingerprint)")
            out[name] = v
        else:
            out[name] = public_key_bytes(key).hex()
    return out


def load_signing_public_hex(path: str | Path) -> str:
    """Public half (hex) of an Ed25519 signing key file (PEM/PKCS8 or 32 raw bytes)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CannotRun(f"{path}: signing key not readable ({exc.strerror})") from None
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(raw, password=None)
        elif len(raw) == 32:
            key = Ed25519PrivateKey.from_private_bytes(raw)
        else:
            key = serialization.load_der_private_key(raw, password=None)
    except (ValueError, TypeError):
        raise CannotRun(f"{path}: not an unencrypted Ed25519 private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CannotRun(f"{path}: not an Ed25519 private key")
    return public_key_bytes(key).hex()


def pins_from_cli(pins: tuple[str, ...], config_path: str | None) -> dict:
    """name -> key from ``NAME=KEY`` strings (``--pin``) and, given a node.toml, its
    own signing key and its ``[peer] signing_public_key`` (hex, or a key file)."""
    out: dict[str, str] = {}
    for p in pins:
        if "=" not in p:
            raise CannotRun(f"--pin {p!r}: expected NAME=KEY (hex public key or "
                            "sha256 fingerprint)")
        name, key = p.split("=", 1)
        out[name.strip()] = key.strip()
    if config_path:
        from federation import config

        try:
            cfg = config.load_node_config(config_path)
        except (config.ConfigError, OSError) as exc:
            raise CannotRun(str(exc)) from None
        out.setdefault(cfg.name, load_signing_public_hex(cfg.keys.signing_key))
        peer_key = cfg.peer.signing_public_key.strip()
        if not peer_key:
            raise CannotRun(f"{config_path}: [peer] signing_public_key is empty: no key to "
                            f"pin for {cfg.peer.name}")
        if not is_hex(peer_key.lower().removeprefix("sha256:"), 64):
            kp = Path(peer_key)
            if not kp.is_absolute():
                kp = Path(config_path).resolve().parent / kp
            peer_key = _read_public_key_file(kp)
        out.setdefault(cfg.peer.name, peer_key)
    return out


def _read_public_key_file(path: Path) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CannotRun(f"{path}: peer signing key not readable ({exc.strerror})") from None
    text = raw.strip()
    if is_hex(text.decode("ascii", "replace").lower(), 64):
        return text.decode().lower()
    try:
        key = (serialization.load_pem_public_key(raw) if text.startswith(b"-----BEGIN")
               else Ed25519PublicKey.from_public_bytes(raw))
    except ValueError:
        raise CannotRun(f"{path}: not an Ed25519 public key") from None
    return public_key_bytes(key).hex()
