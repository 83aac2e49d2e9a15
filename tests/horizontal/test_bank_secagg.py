"""A dishonest aggregator against the bank's SecAgg handler (parties.horizontal.bank).

The bank's SecAgg client is rebuilt from ``context.state`` for every Flower message, so
the single-use rules of SecAgg must survive that: a second, different unmask request in
a round (which could reveal both shares of one bank and so its update) and a second
secure sum of the same (phase, round) vector (two sums over different bank sets give
one bank's update as their difference) are refused. Three banks, driven stage by stage
by the library's own SecAggServer, the way parties.horizontal.aggregate.SecureSum does.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import RecordDict

from parties.horizontal.aggregate import secagg_params, session_id
from parties.horizontal.bank import _secagg
from secure_agg.secagg import SecAggError, SecAggServer, decode_message, encode
from secure_agg.secagg_wire import UnmaskRequest

N, DIM = 3, 4


class FakeBank:
    """Only what _secagg asks of a bank in an unsigned round: its vector."""

    side = None

    def __init__(self, cid: int):
        self.vec = np.full(DIM, 0.25 * (cid + 1))

    def checked(self, phase, cfg, clip):
        return self.vec


def one_round(states, banks, group: str, round_no: int, unmask_only=None):
    """One SecAgg sum over ``banks`` (cid -> FakeBank) through their handlers."""
    params = secagg_params(len(banks), 2, DIM, "fit", 4.0, 16, session_id("job", group))
    server = SecAggServer(params, clients=set(banks))
    head = {"phase": "fit", "n": params.num_clients, "t": params.threshold, "dim": DIM,
            "clip": params.clip, "bits": params.bits, "mod_bits": params.mod_bits,
            "session": params.session, "signed": False, "names": json.dumps([""] * N)}

    def ask(stage, cfg_of, receive):
        for c in banks:
            receive(decode_message(_secagg(banks[c], stage, cfg_of(c), states[c])))

    ask("advertise", lambda c: {**head, "cid": c}, server.receive_advertise)
    keys = encode(server.key_list())
    ask("share_keys", lambda c: {"msg": keys}, server.receive_share_keys)
    bundles = server.share_bundles()
    ask("masked_input", lambda c: {"msg": encode(bundles[c]), "round": round_no},
        server.receive_masked_input)
    req = encode(server.unmask_request())
    ask("unmask", lambda c: {"msg": req}, server.receive_unmask)
    return server.result(), req


def test_the_bank_refuses_a_second_unmask_and_a_second_sum_of_one_vector():
    banks = {c: FakeBank(c) for c in range(N)}
    states = {c: RecordDict() for c in range(N)}
    res, req = one_round(states, banks, "fit-1", 1)
    np.testing.assert_allclose(res.total, sum(b.vec for b in banks.values()), atol=1e-3)
    # the same request again (a re-delivered message) is answered the same way
    again = decode_message(_secagg(banks[0], "unmask", {"msg": req}, states[0]))
    first = decode_message(_secagg(banks[0], "unmask", {"msg": req}, states[0]))
    assert encode(again) == encode(first)
    # a different one (bank 2 now "dropped": its s-key share on top of its b-share)
    evil = encode(UnmaskRequest(survivors=(0, 1), dropped=(2,)))
    with pytest.raises(SecAggError, match="second, different unmask request"):
        _secagg(banks[0], "unmask", {"msg": evil}, states[0])
    # a new session for the same fit round, over banks 0 and 1 only: refused at
    # masked input, before any masked vector leaves the bank
    with pytest.raises(SecAggError, match="second secure sum of this bank's fit/1"):
        one_round(states, {0: banks[0], 1: banks[1]}, "fit-1-again", 1)
    # the next round is a new vector: accepted
    res2, _ = one_round(states, banks, "fit-2", 2)
    assert sorted(res2.included) == [0, 1, 2]
