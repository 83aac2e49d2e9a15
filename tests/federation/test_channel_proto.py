"""The committed generated gRPC code matches federation/channel/fedjoint.proto."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_current(tmp_path):
    pytest.importorskip("grpc_tools")
    src = ROOT / "federation" / "channel" / "fedjoint.proto"
    dst = tmp_path / "federation" / "channel"
    dst.mkdir(parents=True)
    shutil.copy(src, dst / "fedjoint.proto")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.",
                    "--grpc_python_out=.", "federation/channel/fedjoint.proto"],
                   cwd=tmp_path, check=True)
    for name in ("fedjoint_pb2.py", "fedjoint_pb2_grpc.py"):
        assert (dst / name).read_bytes() == (ROOT / "federation" / "channel" / name).read_bytes(), (
            f"{name} is stale: run `make proto` and commit the result")
