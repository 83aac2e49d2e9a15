"""ID normalisation, USCC validation, policies and CSV loading errors."""

import pytest

from psi.ids import (
    DuplicateIdError,
    IdInputError,
    IdValidationError,
    _prepare_loop,
    is_valid_uscc,
    load_ids_csv,
    normalise,
    prepare_ids,
    uscc_check_char,
)

# Real codes from public business registrations (GB 32100-2015 check character valid).
VALID = ["91350200776049653A", "91440101MA5CJQ4N59", "913502000728319549",
         "123502001549897397", "9135021359498494XQ", "91350213678251743X",
         "914403001922038216", "91440300708461136T", "91330100799655058B"]
INVALID = ["91350203M0001QAY9B",   # wrong check character
           "913502000728319548",   # last digit changed
           "91350200776049653",    # 17 chars
           "9135020077604965 3A",  # space inside
           "91350200776O49653A",   # letter O is not in the charset
           "91350200776049653Z",   # Z never a check char
           ""]


def test_uscc_known_codes():
    for c in VALID:
        assert is_valid_uscc(c), c
    for c in INVALID:
        assert not is_valid_uscc(c), c
    assert uscc_check_char("91350200776049653") == "A"
    assert uscc_check_char("9135020077604965I") is None


def test_normalisation_fullwidth_trim_case():
    fw = "\u3000９１４４０３００７０８４６１１３６ｔ "  # full-width digits, ideographic space
    assert normalise(fw, "uscc") == "91440300708461136T"
    assert normalise("  ACME Ltd ", "string") == "acme ltd"
    assert normalise("ＡＣＭＥ", "string") == "acme"
    p = prepare_ids([fw, "91440300708461136t"], "uscc", duplicates="dedupe")
    assert p.ids == ["91440300708461136T"] and p.duplicate_rows == [1]


def test_invalid_policy_reports_rows_not_ids():
    raw = [VALID[0], INVALID[0], VALID[1], "", VALID[2]]
    with pytest.raises(IdValidationError) as ei:
        prepare_ids(raw, "uscc", invalid="fail")
    assert "row(s) 1, 3" in str(ei.value) and INVALID[0] not in str(ei.value)
    p = prepare_ids(raw, "uscc", invalid="drop")
    assert p.ids == [VALID[0], VALID[1], VALID[2]]
    assert p.rows.tolist() == [0, 2, 4] and p.invalid_rows == [1, 3]
    assert p.stats()["n_invalid"] == 2


def test_duplicate_policy():
    raw = [VALID[0], VALID[1], " " + VALID[0].lower()]
    with pytest.raises(DuplicateIdError, match="row\\(s\\) 2"):
        prepare_ids(raw, "uscc")
    p = prepare_ids(raw, "uscc", duplicates="dedupe")
    assert p.rows.tolist() == [0, 1] and p.stats()["n_duplicate"] == 1


def test_digest_changes_with_content():
    a = prepare_ids(VALID[:3]).digest()
    assert a == prepare_ids(VALID[:3]).digest()
    assert a != prepare_ids(VALID[:2]).digest()
    assert a != prepare_ids(VALID[:3], "string").digest()


def test_csv_loading_errors(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("id,x\n" + "\n".join(f"{c},1" for c in VALID) + "\n", encoding="utf-8")
    assert load_ids_csv(good) == VALID
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(IdInputError, match="empty.csv: file is empty"):
        load_ids_csv(empty)
    hdr = tmp_path / "hdr.csv"
    hdr.write_text("id,x\n")
    with pytest.raises(IdInputError, match="header only"):
        load_ids_csv(hdr)
    with pytest.raises(IdInputError, match="no column 'uscc'.*columns: id, x"):
        load_ids_csv(good, "uscc")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"id\n" + VALID[0].encode() + b"\n\xff\xfe91\n")
    with pytest.raises(IdInputError, match="bad.csv: line 3: bytes are not valid UTF-8"):
        load_ids_csv(bad)
    short = tmp_path / "short.csv"
    short.write_text("x,id\n1,a\n2\n")
    with pytest.raises(IdInputError, match="short.csv: line 3"):
        load_ids_csv(short, "id")
    with pytest.raises(IdInputError, match="file not found"):
        load_ids_csv(tmp_path / "nope.csv")


def test_raw_digest_is_unambiguous_and_policy_bound():
    from psi.ids import raw_digest

    def d(raw, id_type="string", invalid="fail", duplicates="fail"):
        return raw_digest(raw, id_type, invalid, duplicates)
    assert d(["a", "b"]) == d(["a", "b"])
    assert len({d(["a\nb", "c"]), d(["a", "b\nc"]), d(["a", "b", "c"]), d(["a\nb\nc"]),
                d([]), d([""]), d(["", ""]), d([None]), d(["a", "b"], invalid="drop"),
                d(["a", "b"], duplicates="dedupe"), d(["a", "b"], id_type="uscc")}) == 11


def test_raw_digest_in_chunks_hashes_the_joined_column(monkeypatch):
    """The chunked digest is the SHA-256 of the whole joined column (caches built
    before it are still found), also when the non-string / newline fallback is met
    in a later chunk."""
    import hashlib

    from psi import ids as ids_mod

    def whole(raw):   # the one-join formula
        h = hashlib.sha256(f"fedjoint-raw-digest-v2\0{ids_mod.norm_version('string')}\0"
                           f"fail\0fail\0{len(raw)}\0".encode())
        strs = [r if isinstance(r, str) else f"\0{type(r).__name__}" for r in raw]
        if strs != raw or any("\n" in r for r in raw):
            h.update(b"lengths\0" + b"".join(len(x).to_bytes(8, "little") for x in strs))
        h.update("\n".join(strs).encode("utf-8", "surrogatepass"))
        return h.hexdigest()
    monkeypatch.setattr(ids_mod, "DIGEST_CHUNK", 3)
    base = [f"id{i}" for i in range(10)] + ["", "\udc80x"]
    for raw in (base, base[:3], base[:4], [], [""], base + ["a\nb"], base + [None],
                tuple(base)):
        assert ids_mod.raw_digest(raw, "string", "fail", "fail") == whole(list(raw))


def test_vectorised_uscc_check_matches_scalar():
    import random

    from psi.ids import _uscc_valid_mask, is_valid_uscc
    rnd = random.Random(5)
    chars = "0123456789ABCDEFGHJKLMNPQRTUWXYZIOSVa"
    xs = ["".join(rnd.choice(chars) for _ in range(rnd.choice([17, 18, 18, 19])))
          for _ in range(5000)]
    xs += [b + uscc_check_char(b) for b in (f"913{i:014d}" for i in range(500))]
    xs += ["９１３００００００００００００００００", None, ""]
    for s, v in zip(xs, _uscc_valid_mask(xs), strict=True):
        if isinstance(s, str) and len(s) == 18 and s.isascii():
            assert v == is_valid_uscc(s), s
        else:
            assert not v


def test_packed_preparation_equals_the_reference_loop():
    """The vectorised USCC path (18-character ASCII entries) keeps, drops, dedupes and
    reports exactly what the one-by-one loop does, and packs the kept codes."""
    import random

    import numpy as np
    rnd = random.Random(7)
    raw = VALID * 3 + [c for c in INVALID if len(c) == 18]
    raw += [c.lower() for c in VALID[:4]]            # normalised to a duplicate
    raw += ["91440101ma5cjq4n59".upper()[:-1] + "9"]  # charset ok, check char wrong
    raw += [" 9135020077604965A", "91350200776049653a", "9135020077604965\t3"]
    rnd.shuffle(raw)
    got = prepare_ids(raw, "uscc", "drop", "dedupe")
    want = _prepare_loop(raw, "uscc")
    assert (got.ids, got.rows.tolist(), got.invalid_rows, got.duplicate_rows) == want
    assert got.packed is not None and got.packed.dtype == np.uint8
    assert [r.tobytes().decode() for r in got.packed] == got.ids
    clean = prepare_ids(VALID)
    assert clean.ids == VALID and clean.packed.shape == (len(VALID), 18)
    # other shapes take the loop (no packed form): mixed lengths, non-ASCII, non-str
    for other in (VALID + ["９１３５０２０００７２８３１９５４９"], VALID + [None], VALID[:1] + ["x"],
                  VALID + ["9135020077604965\n3"]):
        got = prepare_ids(other, "uscc", "drop", "dedupe")
        assert got.packed is None
        assert got.ids == _prepare_loop(other, "uscc")[0]
    assert prepare_ids(VALID, "string").packed is None


def test_packed_ids_blind_like_their_strings():
    """What the engine sends for packed rows equals what it sends for the str IDs."""
    from psi.engine import Engine
    from psi.protocol import DEFAULT_DST
    prep = prepare_ids(VALID * 2, "uscc", "fail", "dedupe")
    eng = Engine(1)
    args = (DEFAULT_DST.encode(), bytes(range(32)), 4)
    assert list(eng.hash_blind_witnessed_stream(prep.packed, *args)) == \
        list(eng.hash_blind_witnessed_stream(prep.ids, *args))


def test_string_ids_joined_preparation_equals_the_reference_loop():
    """``id_type="string"`` normalises the joined column at once (psi.ids.
    _prepare_strings_joined); on random IDs from an alphabet of case, width,
    whitespace, combining and Hangul characters it keeps, dedupes and reports exactly
    what the one-by-one loop does."""
    import random

    from psi.ids import _prepare_strings_joined
    rnd = random.Random(11)
    alphabet = ["A", "a", "ß", "ﬁ", "Ａ", "\u3000", " ", "\t", "\r", "\x1c", "\u2028",
                "\u00a0", "e\u0301", "\u0301", "é", "İ", "ς", "Σ", "ǅ", "ᄀ", "\u1161",
                "가", "x", "1", "１", "\u200b"]
    tried = 0
    for _ in range(600):
        raw = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 4)))
               for _ in range(rnd.randint(1, 25))]
        got = _prepare_strings_joined(raw)
        if got is not None:
            tried += 1
            assert list(got[:1]) + [got[1].tolist()] + list(got[2:]) == \
                list(_prepare_loop(raw, "string")), raw
    assert tried > 500
    for other in (["a", None], ["a\nb", "c"]):   # the loop handles these
        assert _prepare_strings_joined(other) is None
    got = prepare_ids([" Foo", "ＦＯＯ", "bar", "", "BAR "], "string", "drop", "dedupe")
    assert (got.ids, got.rows.tolist(), got.invalid_rows, got.duplicate_rows) == \
        (["foo", "bar"], [0, 2], [3], [1, 4])


def test_uscc_duplicates_among_structured_codes():
    """Consecutive codes (as registries issue them) with and without repeats: the
    vectorised duplicate check agrees with the loop (its hash must not collide on
    structure, or the slower sort path would run for every such column)."""
    import numpy as np

    from psi.ids import _first_occurrences, _row_hash, _row_words
    codes = [f"913{i:014d}" for i in range(20000)]
    codes = [c + uscc_check_char(c) for c in codes]
    rows = np.frombuffer("".join(codes).encode(), dtype=np.uint8).reshape(-1, 18)
    assert len(np.unique(_row_hash(_row_words(rows)))) == len(codes)
    assert _first_occurrences(rows).tolist() == list(range(len(codes)))
    raw = codes + codes[5:9] + codes[:1]
    got = prepare_ids(raw, "uscc", "fail", "dedupe")
    assert (got.ids, got.rows.tolist(), got.invalid_rows, got.duplicate_rows) == \
        _prepare_loop(raw, "uscc")
