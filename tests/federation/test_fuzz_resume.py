"""Property-based fuzzing of what the resume exchange reads from the peer (issue 12
parts 5-6; docs/resume.md, "The exchange"; docs/fuzzing.md).

Peer bytes reach three decoders, each fed here arbitrary and mutated valid JSON (the
channel has already decoded the body to a dict within ``limits.max_json_*``):

* the control request ``job.resume`` at either node (:meth:`Resumer.on_request`): the
  answer is always a JSON-able dict with a boolean ``ok``, never an internal error, and
  a ``go`` starts a run only for a checkpoint this node holds with the counts it holds;
* the bank's reading of the platform's replies to ``query`` / ``go`` (``_drive``, with
  :func:`federation.node.checkpoint.choose`): the resume either starts from a checkpoint
  both hold with mirrored counts, or is refused (:class:`ResumeRefused`);
* the first live message of a resumed run, ``job.resume`` (:class:`ResumeLink`): the
  run continues only if the peer names the same checkpoint with mirrored counts, else a
  ``ProtocolError``.

The node's job store, channel and job runner are stand-ins (nothing here is about
them); the code under test is the node's own.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from federation import job_protocol as J
from federation.link import Link, ProtocolError, decode_payload, encode_payload
from federation.node import resume as R
from federation.node.checkpoint import ResumeLink, ResumePlan, choose

JOB = "j-20261202-aa"
MINE = [{"n": n, "stage": "train", "step": n, "sent": 10 * n, "received": 10 * n + 1,
         "file": f"{n:064x}"} for n in (1, 2, 3)]

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                         allow_infinity=False) | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=4),
    max_leaves=20)
_count = st.integers(-2, 40) | st.booleans() | st.none() | st.text(max_size=3) | _json


def _mirror(p: dict) -> dict:
    return {**p, "sent": p["received"], "received": p["sent"]}


# a peer checkpoint list: mirrored copies of ours, mutated field by field, and garbage
_peer_point = st.one_of(
    st.sampled_from(MINE).map(_mirror),
    st.builds(lambda p, k, v: {**_mirror(p), k: v}, st.sampled_from(MINE),
              st.sampled_from(["n", "stage", "step", "sent", "received", "file"]), _count),
    st.dictionaries(st.sampled_from(["n", "stage", "step", "sent", "received"]), _count),
    _json)
_peer_points = st.lists(_peer_point, max_size=5)


def _mirrored(p: dict, peer: list) -> bool:
    return any(isinstance(q, dict) and q.get("n") == p["n"] and type(q.get("n")) is int
               and (q.get("sent"), q.get("received"), q.get("stage"), q.get("step")) ==
               (p["received"], p["sent"], p["stage"], p["step"]) for q in peer)


@given(_peer_points)
def test_choose_picks_only_a_mirrored_checkpoint_we_hold(theirs):
    got = choose(MINE, theirs)
    assert got is None or (got in MINE and _mirrored(got, theirs))
    # the last such one (a peer naming a checkpoint twice: its last entry counts)
    last = {q["n"]: q for q in theirs if isinstance(q, dict) and type(q.get("n")) is int}
    better = [p for p in MINE if (got is None or p["n"] > got["n"])
              and _mirrored(p, [last.get(p["n"])])]
    assert not better, better


def test_choose_found_by_fuzzing():
    assert choose(MINE, [{"n": [1]}, {"n": {"a": 1}}]) is None   # unhashable n
    assert choose(MINE, [{**_mirror(MINE[0]), "n": True}]) is None


# ---- the control request, at the platform and at the bank ---------------------------


class _Jobs(SimpleNamespace):
    def __init__(self):
        super().__init__(on_interrupted=None, stopping=threading.Event(), launched=[])

    def stop_live(self, job_id, reason, timeout=30.0):
        return None

    def prepare_resume(self, job_id, plan, reason):
        return None

    def abandon_resume(self, job_id):
        return None

    def launch(self, job_id, plan=None):
        self.launched.append(plan)


def _resumer(party: str, replies=None) -> tuple[R.Resumer, _Jobs]:
    store = SimpleNamespace(get=lambda job_id: SimpleNamespace(state="interrupted"),
                            transition=lambda *a, **k: None)
    peer = "bank-a" if party == "platform" else "platform-b"
    cfg = SimpleNamespace(party=party, name=f"{party}-x", peer=SimpleNamespace(name=peer))
    replies = list(replies or [])
    channel = SimpleNamespace(request=lambda kind, body, timeout=None: (
        replies.pop(0) if replies else {}))
    ctx = SimpleNamespace(cfg=cfg, data_dir=Path("/nonexistent/fedjoint-fuzz"), store=store,
                          log=lambda *a, **k: None, channel=channel)
    jobs = _Jobs()
    r = R.Resumer(ctx, jobs)
    r._held = lambda job_id: [dict(p) for p in MINE]
    return r, jobs


_phase = st.sampled_from(["query", "go", "fail", "drive", "nope"]) | _json
_body = st.one_of(
    st.fixed_dictionaries({"job_id": st.just(JOB), "phase": _phase},
                          optional={"checkpoint": _count, "sent": _count,
                                    "received": _count, "reason": _json,
                                    "checkpoints": _peer_points}),
    st.builds(lambda p, k, v: {"job_id": JOB, "phase": "go", "checkpoint": p["n"],
                               "sent": p["sent"], "received": p["received"], k: v},
              st.sampled_from(MINE), st.sampled_from(["checkpoint", "sent", "received"]),
              _count),
    st.dictionaries(st.text(max_size=10), _json, max_size=5))


def _check_reply(reply) -> None:
    assert isinstance(reply, dict) and type(reply.get("ok")) is bool, reply
    assert "internal error" not in str(reply.get("reason", "")), reply
    encode_payload(reply)                      # it goes back over the channel as JSON


@given(_body)
def test_platform_answers_every_resume_request(body):
    r, jobs = _resumer("platform")
    reply = r.on_request(json.loads(json.dumps(body)))
    _check_reply(reply)
    if jobs.launched:              # a run starts only for a checkpoint held as named
        plan = jobs.launched[0]
        assert reply["ok"] and body.get("phase") == "go"
        p = next(p for p in MINE if p["n"] == plan.checkpoint)
        for k, field in (("checkpoint", "n"), ("sent", "sent"), ("received", "received")):
            assert type(body[k]) is int and body[k] == p[field]


@given(_body)
def test_bank_answers_every_resume_request(body):
    r, _ = _resumer("bank", replies=[{"ok": True, "checkpoints": [_mirror(p) for p in MINE]},
                                     {"ok": True}])
    _check_reply(r.on_request(json.loads(json.dumps(body))))


_reply = st.one_of(
    st.fixed_dictionaries({"ok": st.booleans() | _json},
                          optional={"checkpoints": _peer_points | _json, "final": _json,
                                    "reason": _json}),
    _json)


@given(_reply, _reply)
def test_bank_reads_any_platform_reply(query_reply, go_reply):
    r, jobs = _resumer("bank", replies=[query_reply, go_reply])
    try:
        out = r.resume(JOB, "fuzz")
    except R.ResumeRefused as exc:
        assert str(exc)
        assert not jobs.launched
        return
    assert out["ok"] is True and len(jobs.launched) == 1
    theirs = query_reply["checkpoints"]
    assert _mirrored(next(p for p in MINE if p["n"] == out["checkpoint"]), theirs)


# ---- the first live message of a resumed run ------------------------------------------


class _Live(Link):
    def __init__(self, answer: bytes):
        self.job_id, self.party, self.peer = JOB, "bank-a", "platform-b"
        self._answer, self.sent = answer, []

    def send(self, kind, payload):
        self.sent.append(kind)

    def recv(self, kind, timeout=None):
        return decode_payload("json", self._answer)


@given(st.one_of(
    st.builds(lambda k, v: {"checkpoint": 2, "sent": 21, "received": 20, k: v},
              st.sampled_from(["checkpoint", "sent", "received"]), _count),
    st.dictionaries(st.text(max_size=10), _json, max_size=4)))
def test_resume_message_from_the_peer(answer):
    plan = ResumePlan(2, 20, 21, MINE[1]["file"])
    link = ResumeLink(_Live(json.dumps(answer).encode()), ".", None)
    link.plan, link._confirmed = plan, False
    try:
        link._go_live()
    except ProtocolError as exc:
        assert J.K_RESUME in str(exc)
        return
    assert (answer.get("checkpoint"), answer.get("sent"), answer.get("received")) == \
        (2, 21, 20)
