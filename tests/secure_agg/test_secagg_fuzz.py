"""Property-based fuzzing of the secure-aggregation decoders and receivers.

For arbitrary bytes and for mutated valid messages of every kind (signed forms included): ``decode_message``
returns a typed message that re-encodes to the same bytes, or raises SecAggError --
never another exception. Decoded messages fed to the stage that receives them are
accepted or refused with SecAggError only.
"""

from hypothesis import given
from hypothesis import strategies as st
from support.secagg_round import Round

from secure_agg import secagg_wire as wire
from secure_agg.secagg import SecAggError, decode_message, encode


def _valid_messages() -> dict[str, bytes]:
    r = Round(n=4, t=3, dim=6)
    r.through("share")
    r.mask(ids=[0, 1, 2])
    out = {"AdvertiseKeys": encode(r.sent["advertise"][1]), "KeyList": encode(r.keys),
           "ShareKeys": encode(r.sent["share_keys"][2]), "ShareBundle": encode(r.bundles[0]),
           "MaskedInput": encode(r.sent["masked_input"][0]),
           "UnmaskRequest": encode(r.request)}
    out["UnmaskShares"] = encode(r.clients[1].unmask(r.request))
    signed = Round(n=4, t=3, dim=6, signed=True)
    signed.advertise()
    out["AdvertiseKeys signed"] = encode(signed.sent["advertise"][0])
    out["KeyList signed"] = encode(signed.keys)
    return out


VALID = _valid_messages()
assert {m[5] for m in VALID.values()} == set(wire._TAGS.values()) | set(
    wire.SIGNED_TAGS.values())


@st.composite
def mutated(draw):
    data = bytearray(VALID[draw(st.sampled_from(sorted(VALID)))])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete", "count"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 8))]
        elif len(data) > i + 4:  # overwrite 4 bytes: lying counts / ids
            data[i:i + 4] = draw(st.binary(min_size=4, max_size=4))
    return bytes(data)


def _decode_or_refuse(data: bytes):
    try:
        msg = decode_message(data)
    except SecAggError:
        return None
    assert type(msg) in wire._TAGS
    assert encode(msg) == data
    return msg


@given(st.binary(max_size=300))
def test_arbitrary_bytes(data):
    _decode_or_refuse(data)


@given(st.sampled_from(sorted(set(wire._TAGS.values()) | set(wire.SIGNED_TAGS.values()))),
       st.binary(max_size=400))
def test_arbitrary_bodies_behind_a_valid_header(tag, body):
    _decode_or_refuse(wire.MAGIC + bytes([wire.VERSION, tag]) + body)


@given(mutated())
def test_mutated_valid_messages(data):
    _decode_or_refuse(data)


def test_valid_messages_round_trip():
    for name, data in VALID.items():
        assert type(decode_message(data)).__name__ == name.split()[0]
        assert encode(decode_message(data)) == data


@given(mutated())
def test_receivers_accept_or_refuse_with_secagg_error(data):
    """A mutated message reaches the stage-2 client and server, the stage-1 server,
    and a signed round's stage-0 server and stage-1 client (fresh rounds each time)."""
    msg = _decode_or_refuse(data)
    if msg is None:
        return
    r = Round(n=4, t=3, dim=6).through("share")
    sr = Round(n=4, t=3, dim=6, signed=True)
    sr.clients[0].advertise()
    calls = [lambda: r.clients[0].masked_input(msg, r.updates[0]),
             lambda: r.server.receive_masked_input(msg),
             lambda: r.server.receive_share_keys(msg),
             lambda: sr.server.receive_advertise(msg),
             lambda: sr.clients[0].share_keys(msg)]
    for call in calls:
        try:
            call()
        except SecAggError:
            pass
