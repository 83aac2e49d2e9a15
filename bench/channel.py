"""Channel benchmark: fedjoint PeerChannel (mutual TLS, signed envelopes, SHA-256,
acks) against plain grpcio without TLS, measured in the same run on 127.0.0.1.

* round trip: median over N sequential exchanges of a small message (64 bytes):
  bank ``send`` -> platform ``recv`` -> platform ``send`` -> bank ``recv``. The plain
  reference is a unary echo call with the same payload.
* throughput: a 256 MiB payload from ``send`` until the receiver's ``recv`` returns the
  verified bytes (sender hashing + signing, chunking, TLS, receiver hashing and
  reassembly included). The plain reference streams the same bytes in 4 MiB messages
  to a server that reassembles them. Median of several transfers after a warm-up.

Both parties run in this one process (2 gRPC servers, 2 clients), so the figures include
GIL contention a real two-machine deployment would not have.

    python bench/channel.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402

from federation.channel import ChannelSettings  # noqa: E402
from federation.channel import fedjoint_pb2 as pb  # noqa: E402
from federation.channel import fedjoint_pb2_grpc as pbg  # noqa: E402
from federation.channel.testing import channel_pair  # noqa: E402

SMALL = b"x" * 64
CHUNK = 4 << 20


def bench_fedjoint(n_rt: int, big: bytes, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        a, b, _, _ = channel_pair(d, settings=ChannelSettings())
        try:
            la, lb = a.link("bench-rt"), b.link("bench-rt")

            def echo(n: int) -> None:
                for _ in range(n):
                    lb.send("bench.pong", lb.recv("bench.ping"))

            warm = 200
            th = threading.Thread(target=echo, args=(n_rt + warm,), daemon=True)
            th.start()
            rtts = []
            for i in range(n_rt + warm):
                t0 = time.perf_counter()
                la.send("bench.ping", SMALL)
                la.recv("bench.pong")
                if i >= warm:
                    rtts.append(time.perf_counter() - t0)
            th.join()
            lt, lr = a.link("bench-big"), b.link("bench-big")
            rates = []
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                lt.send("bench.big", big)
                got = lr.recv("bench.big")
                dt = time.perf_counter() - t0
                assert len(got) == len(big)
                del got
                lt.flush(30)
                if i:  # first transfer is a warm-up
                    rates.append(len(big) / dt / 1e6)
            ping = a.ping(20)
        finally:
            a.stop(0)
            b.stop(0)
    return {"rt_median_ms": statistics.median(rtts) * 1e3,
            "rt_p90_ms": sorted(rtts)[int(0.9 * len(rtts))] * 1e3,
            "throughput_MBps": statistics.median(rates), "throughput_runs": rates,
            "control_ping_ms": ping["latency_ms"]}


class _Echo(pbg.PeerLinkServicer):
    def Control(self, request, context):  # noqa: N802
        return pb.ControlReply(ok=True, body=request.body)

    def Messages(self, request_iterator, context):  # noqa: N802
        parts = [f.data for f in request_iterator]
        data = b"".join(parts)
        yield pb.Reply(ack=len(data))


def bench_plain(n_rt: int, big: bytes, repeats: int, tls_keys: dict | None = None) -> dict:
    opts = [("grpc.max_send_message_length", CHUNK + 65536),
            ("grpc.max_receive_message_length", CHUNK + 65536)]
    server = grpc.server(futures.ThreadPoolExecutor(8), options=opts)
    pbg.add_PeerLinkServicer_to_server(_Echo(), server)
    if tls_keys:
        cert = Path(tls_keys["tls_cert"]).read_bytes()
        key = Path(tls_keys["tls_key"]).read_bytes()
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=cert, require_client_auth=True))
        channel = grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(
            cert, key, cert), options=opts + [("grpc.ssl_target_name_override", "fedjoint.peer")])
    else:
        port = server.add_insecure_port("127.0.0.1:0")
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=opts)
    server.start()
    try:
        stub = pbg.PeerLinkStub(channel)
        req = pb.ControlRequest(kind="bench.ping", body=SMALL)
        for _ in range(200):
            stub.Control(req)
        rtts = []
        for _ in range(n_rt):
            t0 = time.perf_counter()
            stub.Control(req)
            rtts.append(time.perf_counter() - t0)
        view = memoryview(big)

        def frames():
            for off in range(0, len(big), CHUNK):
                yield pb.Frame(data=bytes(view[off:off + CHUNK]))

        rates = []
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            replies = list(stub.Messages(frames()))
            dt = time.perf_counter() - t0
            assert replies[0].ack == len(big)
            if i:
                rates.append(len(big) / dt / 1e6)
    finally:
        channel.close()
        server.stop(0)
    return {"rt_median_ms": statistics.median(rtts) * 1e3,
            "rt_p90_ms": sorted(rtts)[int(0.9 * len(rtts))] * 1e3,
            "throughput_MBps": statistics.median(rates), "throughput_runs": rates}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (for make bench)")
    ap.add_argument("--json", metavar="PATH", help="write results as JSON")
    ap.add_argument("--mib", type=int, default=256, help="payload size in MiB (default 256)")
    args = ap.parse_args(argv)
    n_rt = 1000
    repeats = 2 if args.quick else 5
    big = os.urandom(args.mib << 20)
    from federation.channel.testing import make_keys
    with tempfile.TemporaryDirectory() as d:
        keys = make_keys(d, "ref")
        plain = bench_plain(n_rt, big, repeats)
        plain_tls = bench_plain(n_rt, big, repeats, keys)
    ours = bench_fedjoint(n_rt, big, repeats)
    rows = [("plain grpcio, no TLS (reference)", plain),
            ("plain grpcio, mutual TLS", plain_tls),
            ("fedjoint channel (mTLS, signed, acked)", ours)]
    print(f"channel benchmark: {n_rt} sequential round trips of {len(SMALL)} B; "
          f"{args.mib} MiB payload, median of {repeats} after warm-up; "
          f"python {platform.python_version()}, grpcio {grpc.__version__}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'':42s} {'RT median ms':>12s} {'RT p90 ms':>10s} {'MB/s':>8s}")
    for name, r in rows:
        print(f"{name:42s} {r['rt_median_ms']:12.3f} {r['rt_p90_ms']:10.3f} "
              f"{r['throughput_MBps']:8.0f}")
    print(f"fedjoint / plain: round trip x{ours['rt_median_ms'] / plain['rt_median_ms']:.2f}, "
          f"throughput x{ours['throughput_MBps'] / plain['throughput_MBps']:.2f}; "
          f"targets: RT <= 1 ms -> {'met' if ours['rt_median_ms'] <= 1 else 'MISSED'}, "
          f">= 200 MB/s -> {'met' if ours['throughput_MBps'] >= 200 else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "n_round_trips": n_rt, "small_bytes": len(SMALL), "payload_mib": args.mib,
            "repeats": repeats, "grpcio": grpc.__version__, "cpus": os.cpu_count(),
            "plain_grpc_no_tls": plain, "plain_grpc_tls": plain_tls, "fedjoint": ours,
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
