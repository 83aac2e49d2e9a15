"""Party key files: modes, fingerprints, loading errors that name the file."""

import os
import stat

import pytest

from federation.keys import (
    KeyFileError,
    cert_fingerprint,
    init_party_keys,
    load_local_identity,
    load_peer_identity,
    load_signing_key,
    normalize_fingerprint,
    parse_signing_pubkey,
    signing_fingerprint,
)


def test_init_writes_private_files_0600_and_fingerprints(tmp_path):
    k = init_party_keys("bank", tmp_path)
    for name in ("tls_key", "signing_key"):
        assert stat.S_IMODE(os.stat(k[name]).st_mode) == 0o600
    for name in ("tls_cert", "signing_pub"):
        assert os.path.exists(k[name])
    with open(k["tls_cert"], "rb") as fh:
        assert cert_fingerprint(fh.read()) == k["cert_fingerprint"]
    assert len(k["cert_fingerprint"].split(":")) == 32
    pub = parse_signing_pubkey(k["signing_pub_hex"])
    assert signing_fingerprint(pub) == k["signing_fingerprint"]
    local = load_local_identity("bank", k["tls_cert"], k["tls_key"], k["signing_key"])
    assert local.cert_fingerprint == k["cert_fingerprint"]
    assert "PRIVATE" not in repr(local)
    with pytest.raises(FileExistsError):
        init_party_keys("bank", tmp_path)


def test_fingerprint_forms_normalise():
    fp = "ab" * 32
    assert normalize_fingerprint(fp) == normalize_fingerprint("SHA256:" + ":".join(["AB"] * 32))
    with pytest.raises(ValueError):
        normalize_fingerprint("abcd")


def test_load_errors_name_the_file(tmp_path):
    k = init_party_keys("platform", tmp_path)
    missing = tmp_path / "nope.key"
    with pytest.raises(KeyFileError, match="nope.key"):
        load_signing_key(missing)
    os.chmod(k["signing_key"], 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_signing_key(k["signing_key"])
    os.chmod(k["signing_key"], 0o600)
    with pytest.raises(KeyFileError, match="pinned fingerprint"):
        load_peer_identity("platform", k["tls_cert"], "00" * 32, k["signing_pub"])
    with pytest.raises(KeyFileError, match="signing key"):
        load_peer_identity("platform", k["tls_cert"], k["cert_fingerprint"], k["signing_pub"],
                           "11" * 32)
    bad = tmp_path / "bad.crt"
    bad.write_text("not a cert")
    with pytest.raises(KeyFileError, match="bad.crt"):
        load_peer_identity("platform", bad, k["cert_fingerprint"], k["signing_pub"])
