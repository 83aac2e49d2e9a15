"""What bench/joint_replay.py and bench/resume.py share: their command line and a
SecureBoost job between two real nodes started in this process (real gRPC + mTLS on
127.0.0.1, test keys from tests/support/nodes.py)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # support.nodes: node.toml files and test keys


def parse_args(doc: str, trees: int, extra=()) -> argparse.Namespace:
    """--trees (default ``trees``), --key-bits, --json and the ``extra``
    ``(flag, type, default)`` options."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--trees", type=int, default=trees)
    for flag, typ, default in extra:
        ap.add_argument(flag, type=typ, default=default)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--json", dest="json_path", default=None)
    return ap.parse_args()


class SbJob:
    """node.toml files of two test nodes and the spec of a SecureBoost job between them."""

    def __init__(self, bank_toml: Path, plat_toml: Path, spec: dict):
        self.bank_toml, self.plat_toml, self.spec = bank_toml, plat_toml, spec

    @contextlib.contextmanager
    def nodes(self):
        """Both nodes running, as ``(bank, platform)``; stopped on exit."""
        from support.nodes import running_nodes
        with running_nodes(self.bank_toml, self.plat_toml) as nodes:
            yield nodes

    def submit(self, bank) -> tuple[str, float]:
        """The job submitted to the ``bank`` node: (job id, time.monotonic() before)."""
        from federation.admin import AdminClient
        t0 = time.monotonic()
        return AdminClient(bank.data_dir).call("submit", spec=self.spec)["job_id"], t0


@contextlib.contextmanager
def sb_job(args: argparse.Namespace):
    """A temporary folder with the two nodes' files and a SecureBoost job of
    ``args.trees`` trees (depth 3, 16 bins, Paillier ``args.key_bits``), as an
    :class:`SbJob`; the folder is removed on exit."""
    from support.nodes import make_party_keys, write_job, write_node_tomls

    from federation.config import load_job_spec
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bank_toml, plat_toml = write_node_tomls(root, keys=make_party_keys(root))
        job = write_job(root, "sb", "secureboost",
                        params={"n_trees": args.trees, "max_depth": 3, "max_bin": 16},
                        evaluation={"cipher": "paillier", "key_bits": args.key_bits})
        yield SbJob(bank_toml, plat_toml, load_job_spec(job).to_dict())
