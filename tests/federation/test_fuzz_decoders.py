"""Property-based fuzzing of the decoders that read a peer's bytes (issue 12 part 6).

Each property: arbitrary (or mutated valid) input -> either the decoded value meets the
decoder's documented invariants, or exactly its documented error type; never another
exception. ``make test`` runs the short "fast" profile, ``make fuzz`` the long one
(tests/conftest.py, docs/fuzzing.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import DecodeError
from hypothesis import assume, given
from hypothesis import strategies as st

import federation.channel.fedjoint_pb2 as pb
from federation.channel.frames import (
    BadFrame,
    Incoming,
    envelope_pb,
    message_frames,
    parse_envelope,
    parse_frame,
    serialize_frame,
    take_chunk,
    verify_signature,
)
from federation.config import ConfigError, job_spec_from_dict
from federation.link import Envelope, ProtocolError
from federation.link.codec import JSON_LIMITS, JsonLimits, decode_payload, encode_payload
from federation.transcript.reader import load
from federation.transcript.records import TranscriptError

# ---- payload codec -------------------------------------------------------------------


def _depth(o) -> int:
    if isinstance(o, dict):
        return 1 + max((_depth(v) for v in o.values()), default=0)
    if isinstance(o, list):
        return 1 + max((_depth(v) for v in o), default=0)
    return 0


def _max_int_digits(o) -> int:
    if isinstance(o, bool):
        return 0
    if isinstance(o, int):
        return len(str(abs(o)))
    vals = o.values() if isinstance(o, dict) else o if isinstance(o, list) else ()
    return max((_max_int_digits(v) for v in vals), default=0)


def _check_decoded(ptype: str, data: bytes, limits: JsonLimits, out) -> None:
    """The documented invariants of a successfully decoded payload."""
    if ptype == "bin":
        assert type(out) is bytes and out == data
    elif ptype == "npy":
        assert isinstance(out, np.ndarray)
        assert not out.dtype.hasobject and out.dtype.kind in "biuf"
        assert out.nbytes <= len(data)
        assert out.flags.writeable  # copied out, not a view of the message
        kind, again = encode_payload(out)  # round-trips as the sender would send it
        # (encode_payload sends a 0-d array as shape (1,): np.ascontiguousarray)
        expect = out if out.ndim else out.reshape(1)
        assert kind == "npy" and np.array_equal(decode_payload("npy", again), expect,
                                                equal_nan=out.dtype.kind == "f")
    else:
        assert type(out) is dict and len(data) <= limits.max_bytes
        assert _depth(out) <= limits.max_depth
        assert _max_int_digits(out) <= limits.max_int_digits
        encode_payload(out)  # finite numbers only: allow_nan=False would raise


def _decode(ptype: str, data: bytes, limits: JsonLimits = JSON_LIMITS) -> None:
    try:
        out = decode_payload(ptype, data, limits)
    except ProtocolError:
        return
    _check_decoded(ptype, data, limits, out)


def _npy_header(descr, fortran, shape, version=(1, 0), raw_dict=None) -> bytes:
    d = raw_dict if raw_dict is not None else repr(
        {"descr": descr, "fortran_order": fortran, "shape": shape})
    h = d.encode("latin1", "replace")
    hl = 4 if version != (1, 0) else 2
    pad = (-(6 + 2 + hl + len(h) + 1)) % 64
    h = h + b" " * pad + b"\n"
    return (b"\x93NUMPY" + bytes(version) + len(h).to_bytes(hl, "little") + h)


_DESCRS = ["|b1", "|u1", "|i1", "<i4", ">i4", "<u8", "<f8", ">f4", "<f2", "<c16", "|O",
           "<U4", "|S3", "|V8", "<M8[s]", "<m8[D]", "x", "<i0", "<f99", ""]
_dims = st.one_of(st.integers(0, 6), st.integers(-3, 3), st.sampled_from(
    [2 ** 31, 2 ** 32, 2 ** 40, 2 ** 62, 2 ** 63, 2 ** 64, 10 ** 30]))


@given(st.binary(max_size=300))
def test_npy_arbitrary_bytes(data):
    _decode("npy", data)


@given(st.sampled_from(_DESCRS), st.booleans(),
       st.lists(_dims, max_size=5).map(tuple) | st.sampled_from([(1,) * 70, (0,) * 65]),
       st.sampled_from([(1, 0), (2, 0), (3, 0), (0, 9)]), st.integers(0, 80),
       st.binary(max_size=16))
def test_npy_lying_headers_never_allocate_or_escape(descr, fortran, shape, version, n,
                                                    fill):
    """Arbitrary dtypes, shapes (negative, huge, huge with a 0) and data lengths: a
    header announcing terabytes is refused on its size before numpy allocates."""
    data = _npy_header(descr, fortran, shape, version) + (fill * (n // max(1, len(fill)) + 1)
                                                          )[:n]
    _decode("npy", data)


@pytest.mark.parametrize("shape,n", [((-1, -1), 1), ((-2, -3), 6), ((2 ** 40, 2 ** 40, 0), 0),
                                     ((1,) * 70, 1)])
def test_npy_shapes_found_by_fuzzing(shape, n):
    """Regressions: (-1, -1) announced 1 byte (its product) and reached reshape, which
    raised ValueError; so did a zero-sized shape beyond numpy's maximum size."""
    with pytest.raises(ProtocolError, match="malformed npy payload"):
        decode_payload("npy", _npy_header("|u1", False, shape) + b"x" * n)


@given(st.text(max_size=120), st.binary(max_size=40))
def test_npy_garbage_header_dicts(header, tail):
    _decode("npy", _npy_header(None, None, None, raw_dict=header) + tail)


_arrays = st.sampled_from(["|b1", "|u1", "<i2", ">i8", "<f4", ">f8"]).flatmap(
    lambda dt: st.lists(st.integers(0, 4), max_size=3).flatmap(
        lambda shape: st.binary(min_size=math.prod(shape) * np.dtype(dt).itemsize,
                                max_size=math.prod(shape) * np.dtype(dt).itemsize).map(
            lambda b: np.frombuffer(b, dtype=dt).reshape(shape))))


def _mutate(data: bytes, draw) -> bytes:
    """One of: flip bytes, truncate, insert, delete a range, duplicate a range."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete", "dup"]))
        i = draw(st.integers(0, max(0, len(b))))
        if op == "flip" and b:
            i = min(i, len(b) - 1)
            b[i] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del b[i:]
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del b[i:i + draw(st.integers(1, 16))]
        elif op == "dup":
            b[i:i] = b[i:i + draw(st.integers(1, 16))]
    return bytes(b)


@given(_arrays, st.booleans(), st.data())
def test_npy_mutated_valid_payloads(arr, fortran, data):
    if fortran:
        arr = np.asfortranarray(arr)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    raw = buf.getvalue()
    out = decode_payload("npy", raw)
    assert out.dtype == arr.dtype and np.array_equal(out, arr, equal_nan=True)
    _decode("npy", _mutate(raw, data.draw))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                         allow_infinity=False) | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=4),
    max_leaves=30)
_small_limits = st.builds(JsonLimits, max_bytes=st.integers(0, 4096),
                          max_depth=st.integers(0, 6), max_int_digits=st.integers(1, 30))


@given(st.binary(max_size=300), _small_limits | st.just(JSON_LIMITS))
def test_json_arbitrary_bytes(data, limits):
    _decode("json", data, limits)


@given(st.dictionaries(st.text(max_size=8), _json_values, max_size=5),
       _small_limits | st.just(JSON_LIMITS), st.data())
def test_json_valid_and_mutated(obj, limits, data):
    raw = json.dumps(obj).encode()
    _decode("json", raw, limits)
    _decode("json", _mutate(raw, data.draw), limits)


@given(st.integers(1, 4000), st.sampled_from(["[", "{\"a\":", "[{\"b\":["]),
       st.sampled_from(["1", "-" + "9" * 5000, "1e999", "NaN", "-Infinity", "\"x\""]))
def test_json_bombs(depth, opener, leaf):
    closer = "".join({"[": "]", "{": "}"}[c] for c in opener if c in "[{")[::-1]
    raw = ("{\"k\":" + opener * depth + leaf + closer * depth + "}").encode()
    _decode("json", raw)


@given(st.text(max_size=12), st.binary(max_size=40))
def test_unknown_ptypes_and_bin(ptype, data):
    _decode(ptype, data)
    _decode("bin", data)


# ---- channel frames -> envelopes -----------------------------------------------------

JOB, PEER = "job-1", "platform"
_KEY = Ed25519PrivateKey.generate()
_PEER = SimpleNamespace(party=PEER, signing_public_key=_KEY.public_key())
MAX_BYTES, MIN_CHUNK, CHUNK = 4096, 16, 64


def _signed(seq_: int, kind_: str, payload: bytes, **over) -> pb.Envelope:
    env = Envelope(JOB, seq_, PEER, kind_, "bin", len(payload), Envelope.digest(payload))
    env = Envelope(**{**env.__dict__, "signature": _KEY.sign(env.signing_bytes())})
    e = envelope_pb(env)
    for k, v in over.items():
        setattr(e, k, v)
    return e


def receive(raws: list[bytes]) -> list[tuple[Envelope, bytes]]:
    """What ``Stream.read_stream`` does with the peer's frames, minus the threads: parse
    each (gRPC's request deserializer), then the envelope, sequence, signature, chunk and
    digest checks. Raises BadFrame, or DecodeError for a frame protobuf cannot parse
    (gRPC then fails the call)."""
    cur, delivered, out = None, 0, []
    for raw in raws:
        f = parse_frame(raw)
        if type(f) is memoryview:
            take_chunk(cur, f, MIN_CHUNK)
        else:
            if f.abort or f.close:
                continue
            if f.HasField("envelope"):
                if cur is not None:
                    raise BadFrame("payload ended early")
                env = parse_envelope(f.envelope, JOB, PEER, MAX_BYTES)
                if env.seq < delivered + 1:
                    cur = Incoming(env, skip=True)
                elif env.seq != delivered + 1:
                    raise BadFrame("out-of-order sequence number")
                else:
                    verify_signature(env, _PEER)
                    cur = Incoming(env, skip=False)
            if f.data:
                take_chunk(cur, f.data, MIN_CHUNK)
        if cur is not None and cur.received == cur.env.length:
            done, cur = cur, None
            if not done.skip:
                out.append((done.env, done.payload()))
                delivered = done.env.seq
    return out


def _check_delivered(msgs) -> None:
    for i, (env, data) in enumerate(msgs, 1):
        assert env.seq == i and env.job_id == JOB and env.sender == PEER
        assert len(data) == env.length <= MAX_BYTES
        assert hashlib.sha256(data).digest() == env.sha256
        _KEY.public_key().verify(env.signature, env.signing_bytes())


def _receive_checked(raws) -> None:
    try:
        msgs = receive(raws)
    except (BadFrame, DecodeError):
        return
    _check_delivered(msgs)


def _wire(payloads: list[bytes]) -> list[bytes]:
    raws = []
    for seq, p in enumerate(payloads, 1):
        raws += [serialize_frame(f) for f in message_frames(_signed(seq, "t.msg", p), p,
                                                              CHUNK)]
    return raws


_payloads = st.lists(st.binary(max_size=300), min_size=1, max_size=3)


@given(_payloads)
def test_valid_frames_are_delivered_intact(payloads):
    msgs = receive(_wire(payloads))
    assert [d for _, d in msgs] == payloads
    _check_delivered(msgs)


@given(st.lists(st.binary(max_size=200), max_size=6))
def test_random_frames(raws):
    _receive_checked(raws)


@given(_payloads, st.data())
def test_mutated_frames(payloads, data):
    raws = _wire(payloads)
    draw = data.draw
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["bytes", "drop", "dup", "swap", "insert"]))
        i = draw(st.integers(0, len(raws) - 1)) if raws else 0
        if not raws:
            break
        if op == "bytes":
            raws[i] = _mutate(raws[i], draw)
        elif op == "drop":
            del raws[i]
        elif op == "dup":
            raws.insert(i, raws[i])
        elif op == "swap":
            j = draw(st.integers(0, len(raws) - 1))
            raws[i], raws[j] = raws[j], raws[i]
        else:
            raws.insert(i, draw(st.binary(max_size=40)))
    _receive_checked(raws)


@given(st.binary(max_size=80), st.fixed_dictionaries({}, optional={
    "job_id": st.text(max_size=70), "seq": st.integers(0, 2 ** 64 - 1),
    "sender": st.text(max_size=70), "kind": st.text(max_size=70),
    "ptype": st.text(max_size=8), "length": st.integers(0, 2 ** 64 - 1),
    "sha256": st.binary(max_size=40), "signature": st.binary(max_size=70)}))
def test_lying_envelope_fields(payload, over):
    e = _signed(1, "t.msg", payload, **over)
    _receive_checked([serialize_frame(pb.Frame(envelope=e, data=payload))])


# ---- transcript loader ---------------------------------------------------------------

_HEADER = json.dumps({"format": "fedjoint-transcript", "type": "job", "v": 1},
                     sort_keys=True, separators=(",", ":")).encode()


@pytest.fixture(scope="module")
def transcript_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-transcripts")


def _load_checked(path, raw: bytes) -> None:
    path.write_bytes(raw)
    try:
        t = load(path)
    except TranscriptError:
        return
    assert t.records and len(t.lines) == len(t.records)
    assert all(isinstance(r, dict) for r in t.records)


@given(st.binary(max_size=400))
def test_transcript_arbitrary_bytes(transcript_dir, raw):
    _load_checked(transcript_dir / "t.jsonl", raw)


@given(st.lists(st.dictionaries(st.text(max_size=6), _json_values, max_size=4),
                max_size=4), st.data())
def test_transcript_corrupted_lines(transcript_dir, recs, data):
    lines = [_HEADER] + [json.dumps(r, sort_keys=True, separators=(",", ":")).encode()
                         for r in recs]
    raw = b"\n".join(lines) + b"\n"
    _load_checked(transcript_dir / "t.jsonl", _mutate(raw, data.draw))


@given(st.integers(1, 50000), st.sampled_from([b"[", b"{\"a\":"]), st.booleans())
def test_transcript_bombs(transcript_dir, depth, opener, first):
    closer = b"]" if opener == b"[" else b"}"
    bomb = opener * depth + b"1" + closer * depth
    lines = [bomb] if first else [_HEADER, bomb]
    _load_checked(transcript_dir / "t.jsonl", b"\n".join(lines) + b"\n")
    _load_checked(transcript_dir / "t.jsonl",
                  b"\n".join([_HEADER, b"{\"n\":" + b"7" * (4300 + depth % 3000) + b"}"])
                  + b"\n")


@pytest.mark.parametrize("line", [b"[" * 100000 + b"]" * 100000, b"1" * 5000,
                                  b"{\"n\":" + b"7" * 5000 + b"}"])
@pytest.mark.parametrize("first", [True, False])
def test_transcript_lines_found_by_fuzzing(transcript_dir, line, first):
    """Regressions: a deeply nested line raised RecursionError and a 5000-digit number
    ValueError (Python's int digit limit) out of load()."""
    lines = [line] if first else [_HEADER, line]
    with pytest.raises(TranscriptError):
        load(_write(transcript_dir / "r.jsonl", b"\n".join(lines) + b"\n"))


def _write(path, raw: bytes):
    path.write_bytes(raw)
    return path


# ---- job specs from the peer ---------------------------------------------------------

_VALID_JOB = {
    "job": {"name": "lr-1", "algorithm": "logistic_regression", "dataset": "loans",
            "peer_dataset": "enterprises"},
    "evaluation": {"test_fraction": 0.25, "cipher": "plain", "key_bits": 1024},
}
_keys = st.sampled_from(["job", "psi", "params", "evaluation", "name", "algorithm",
                         "dataset", "peer_dataset", "test_fraction", "cipher", "key_bits",
                         "n_trees", "max_depth", "epochs", "id_type", "stages",
                         "train_algorithm", "features", "seed"]) | st.text(max_size=6)


def _spec_checked(raw) -> None:
    try:
        spec = job_spec_from_dict(raw, "proposal fuzz")
    except ConfigError:
        return
    # invariants: a typed spec that survives its own round trip
    again = job_spec_from_dict(spec.to_dict(), "again")
    assert again.to_dict() == spec.to_dict()


def test_the_seed_job_spec_is_valid():
    _spec_checked(_VALID_JOB)
    job_spec_from_dict(_VALID_JOB)


@given(st.dictionaries(_keys, _json_values | st.dictionaries(_keys, _json_values,
                                                             max_size=6), max_size=6))
def test_job_spec_arbitrary_objects(raw):
    _spec_checked(raw)


@given(_json_values)
def test_job_spec_any_json_value(raw):
    """A proposal's ``spec`` is whatever JSON the peer sent (control: ``body["spec"]``)."""
    _spec_checked(raw)


@pytest.mark.parametrize("raw", [5, True, 1.5, None])
def test_job_spec_values_found_by_fuzzing(raw):
    """Regression: a number or boolean spec raised TypeError ('argument of type 'int'
    is not iterable'), which the proposal handler does not catch."""
    with pytest.raises(ConfigError, match="must be a table"):
        job_spec_from_dict(raw, "proposal fuzz")


_PARAM_KEYS = st.sampled_from(["n_trees", "max_depth", "epochs", "batch_size",
                               "learning_rate", "early_stopping", "objective", "alpha",
                               "l2", "bins", "min_child_weight", "features", "stages",
                               "missing", "subsample"]) | _keys


@given(st.sampled_from(["job", "evaluation", "params", "psi"]), _keys | _PARAM_KEYS,
       _json_values, st.booleans(),
       st.sampled_from(["logistic_regression", "linear_regression", "secureboost", "psi",
                        "score", "nope"]),
       st.dictionaries(_PARAM_KEYS, _json_values, max_size=3))
def test_job_spec_mutated_valid(table, key, value, delete, algorithm, params):
    raw = json.loads(json.dumps(_VALID_JOB))
    raw["job"]["algorithm"] = algorithm
    if params:
        raw["params"] = params
    t = raw.setdefault(table, {})
    if delete and key in t:
        del t[key]
    else:
        t[key] = value
    _spec_checked(raw)


@given(st.dictionaries(st.sampled_from(["algorithm", "name", "dataset", "peer_dataset",
                                        "params", "evaluation", "psi", "stages"]),
                       _json_values, max_size=8))
def test_job_spec_flat_form(raw):
    assume(raw)
    raw.setdefault("algorithm", "logistic_regression")
    _spec_checked(raw)


# ---- admin requests (bytes from local processes on loopback) --------------------------

_ADMIN_CODES = {200, 400, 401, 404, 405, 408, 413, 414, 431, 501, 505}


@pytest.fixture(scope="module")
def admin(tmp_path_factory):
    from federation.admin import AdminServer
    from federation.config.limits import Limits

    srv = AdminServer("127.0.0.1", 0, tmp_path_factory.mktemp("fuzz-admin"),
                      {"echo": lambda a: {"args": a}},
                      limits=Limits(admin_timeout_s=1.0, admin_max_request_bytes=4096))
    srv.start()
    yield srv
    # the server still answers a proper call after everything the fuzzers sent
    from federation.admin import AdminClient
    assert AdminClient(srv.data_dir, timeout=5).call("echo", n=1) == {"args": {"n": 1}}
    srv.stop()


def _admin_send(srv, raw: bytes) -> bytes:
    import socket
    host, port = srv.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        try:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)  # EOF: the server never waits on a short request
        except OSError:  # the server closed first (e.g. refused the request line)
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(f"admin server hung on {raw[:200]!r}") from None
    return out


def _admin_checked(srv, raw: bytes) -> None:
    out = _admin_send(srv, raw)
    if not out:
        return  # closed without a reply (e.g. an empty or cut request line)
    if not out.startswith(b"HTTP/1."):
        # a request line without a version is HTTP/0.9 to http.server: its error page
        # comes without a status line
        assert b"<title>Error response</title>" in out, out[:300]
        code = int(out.split(b"Error code: ", 1)[1][:3])
        assert code in _ADMIN_CODES, out[:300]
        return
    head, _, rest = out.partition(b"\r\n\r\n")
    code = int(head.split(b" ", 2)[1])
    assert code in _ADMIN_CODES, out[:300]
    length = next((int(h.split(b":", 1)[1]) for h in head.split(b"\r\n")[1:]
                   if h.lower().startswith(b"content-length:")), None)
    if code == 200 and length is not None:
        body = json.loads(rest[:length])  # further bytes: replies to pipelined requests
        assert "ok" in body
        if body["ok"]:
            assert isinstance(body["result"]["args"], dict)


def _admin_request(token: str, body: bytes, path: str = "/v1/echo") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


@given(st.binary(max_size=300))
def test_admin_arbitrary_bytes(admin, raw):
    _admin_checked(admin, raw)


@given(st.dictionaries(st.text(max_size=6), _json_values, max_size=4),
       st.sampled_from(["/v1/echo", "/v1/nope", "/", "/v1/" + "e" * 300]), st.data())
def test_admin_mutated_requests(admin, args, path, data):
    raw = _admin_request(admin.token, json.dumps(args).encode(), path)
    _admin_checked(admin, _mutate(raw, data.draw) if data.draw(st.booleans()) else raw)


@given(st.sampled_from(["-1", "abc", "99999999999999999999", "4097", "0", "", "1e3",
                        " 5", "5, 5"]), st.binary(max_size=40))
def test_admin_lying_content_length(admin, length, body):
    raw = (f"POST /v1/echo HTTP/1.1\r\nAuthorization: Bearer {admin.token}\r\n"
           f"Content-Length: {length}\r\n\r\n").encode() + body
    _admin_checked(admin, raw)
