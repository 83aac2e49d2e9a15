"""Key files of both ciphers through secure_agg.keyfile: byte-identical to the files
written before the shared module existed (tests/data/keyfiles, generated from the seed
below by the previous per-cipher code), loadable, and private ones refused unless 0600."""

import os
import shutil
from pathlib import Path

import pytest

from secure_agg import keys, ou_keys
from secure_agg.rng import Drbg

DATA = Path(__file__).parent.parent / "data" / "keyfiles"
SEED = b"fedjoint-keyfile-fixture-v1"
CASES = [(keys, 512, "paillier", "paillier512"), (ou_keys, 768, "ou", "ou768")]


@pytest.mark.parametrize("mod,bits,label,stem", CASES, ids=[c[2] for c in CASES])
def test_key_files_unchanged(tmp_path, mod, bits, label, stem):
    pub, sk = mod.generate_keypair(bits, rng=Drbg(SEED, label), insecure_test_key=True)
    pub.save(tmp_path / "k.pub")
    sk.save(tmp_path / "k.key")
    assert (tmp_path / "k.pub").read_bytes() == (DATA / f"{stem}.pub").read_bytes()
    assert (tmp_path / "k.key").read_bytes() == (DATA / f"{stem}.key").read_bytes()
    assert os.stat(tmp_path / "k.key").st_mode & 0o777 == 0o600

    old = tmp_path / "old.key"
    shutil.copyfile(DATA / f"{stem}.key", old)
    os.chmod(old, 0o640)
    with pytest.raises(PermissionError, match="chmod 600"):
        type(sk).load(old, insecure_test_key=True)
    os.chmod(old, 0o600)
    back = type(sk).load(old, insecure_test_key=True)
    assert back.key_id == sk.key_id and back.p == sk.p and back.q == sk.q
    assert type(pub).load(DATA / f"{stem}.pub", insecure_test_key=True) == pub


@pytest.mark.parametrize("cls", [keys.PaillierPublicKey, ou_keys.OUPublicKey],
                         ids=["paillier", "ou"])
def test_bad_key_files_named(tmp_path, cls):
    path = tmp_path / "k.pub"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        cls.load(path)
    path.write_text('{"kind": "something-else", "version": 1}')
    with pytest.raises(ValueError, match="expected kind"):
        cls.load(path)
