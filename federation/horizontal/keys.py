"""Key material of horizontal jobs (Flower's, beside each node's fedjoint keys).

* the platform: a CA (``horizontal-ca.crt`` / ``.key``) and the SuperLink's TLS
  certificate signed by it (``superlink.crt`` / ``.key``, SANs: the given hosts). Banks
  get ``horizontal-ca.crt`` (``[horizontal] aggregator_ca``).
* a bank: its SuperNode authentication key, EC P-384 in OpenSSH format
  (``<bank>.supernode`` 0600, ``<bank>.supernode.pub``, which the platform lists under
  ``[horizontal.banks.<bank>] supernode_key``; the SuperLink accepts only registered
  keys, ``--enable-supernode-auth``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federation.keys import _write

_PEM, _PKCS8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
_NONE = serialization.NoEncryption()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _sans(hosts: list[str]) -> x509.SubjectAlternativeName:
    out: list[x509.GeneralName] = []
    for h in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(out)


def init_platform_keys(out_dir: str | Path, hosts: list[str], days: int = 825) -> dict:
    """CA + SuperLink certificate for ``hosts`` (names or IPs the banks dial)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f for k, f in (("ca_cert", "horizontal-ca.crt"),
                                     ("ca_key", "horizontal-ca.key"),
                                     ("tls_cert", "superlink.crt"),
                                     ("tls_key", "superlink.key"))}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite existing key files: {', '.join(existing)}")
    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("fedjoint horizontal CA"))
          .issuer_name(_name("fedjoint horizontal CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start)
          .not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(hosts[0]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(end).add_extension(_sans(hosts), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(paths["ca_key"], ca_key.private_bytes(_PEM, _PKCS8, _NONE), True)
    _write(paths["ca_cert"], ca.public_bytes(_PEM), False)
    _write(paths["tls_key"], key.private_bytes(_PEM, _PKCS8, _NONE), True)
    _write(paths["tls_cert"], cert.public_bytes(_PEM), False)
    return {k: str(v) for k, v in paths.items()}


def init_supernode_key(bank: str, out_dir: str | Path) -> dict:
    """The bank's SuperNode authentication key pair (EC P-384, OpenSSH format)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    priv, pub = out / f"{bank}.supernode", out / f"{bank}.supernode.pub"
    existing = [str(p) for p in (priv, pub) if p.exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite existing key files: {', '.join(existing)}")
    k = ec.generate_private_key(ec.SECP384R1())
    _write(priv, k.private_bytes(_PEM, serialization.PrivateFormat.OpenSSH, _NONE), True)
    _write(pub, k.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                            serialization.PublicFormat.OpenSSH) + b"\n", False)
    return {"supernode_key": str(priv), "supernode_pub": str(pub)}
