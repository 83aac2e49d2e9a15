"""Enterprise ID preparation before PSI: loading, normalisation, validation, duplicates.

Normalisation (version :data:`NORMALISATION_VERSION`, recorded in every PSI job and
checked against the peer's in the PSI hello) is, in this order:

1. Unicode NFKC -- folds full-width forms to half-width (``"９１３５"`` -> ``"9135"``,
   ``"ＡＢ"`` -> ``"AB"``, U+3000 ideographic space -> space) and other compatibility
   characters;
2. trim leading/trailing whitespace (``str.strip``);
3. case: ``id_type="uscc"`` upper-cases (the code's canonical form);
   ``id_type="string"`` applies ``str.casefold``.

``id_type="uscc"`` then validates the 18-character Unified Social Credit Code
(GB 32100-2015): charset ``0-9 A-H J-N P-R T-U W-Y`` (no I, O, S, V, Z), and the check
character ``C18 = 31 - (sum_{i=1..17} c_i * w_i mod 31)`` (31 -> ``0``), with weights
``w_i = 3^(i-1) mod 31`` = 1 3 9 27 19 26 16 17 20 29 25 13 8 24 10 30 28.
Empty IDs are invalid for every id_type.

Invalid IDs are counted and reported by row number only (0-based index into the
party's own list; CSV loaders also give the file line). They are never sent to the
peer: the policy ``invalid="drop"`` leaves them out, ``invalid="fail"`` raises
:class:`IdValidationError` before anything is sent. Duplicates (after normalisation):
``duplicates="dedupe"`` keeps the first occurrence and counts the rest,
``duplicates="fail"`` raises.

What each party learns: nothing -- this is local preparation; only counts leave the
module (and they stay in the local job record).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

NORMALISATION_VERSION = "fedjoint-idnorm-v1:nfkc,strip,case"
ID_TYPES = ("uscc", "string")
POLICIES = ("fail", "drop")
DUP_POLICIES = ("fail", "dedupe")

USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUE = {c: i for i, c in enumerate(USCC_CHARSET)}
USCC_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))
MAX_REPORTED_ROWS = 20


class IdInputError(ValueError):
    """Bad ID input (file, column, encoding, validation, duplicates). Local only."""


class IdValidationError(IdInputError):
    pass


class DuplicateIdError(IdInputError):
    pass


def norm_version(id_type: str) -> str:
    return f"{NORMALISATION_VERSION}/{id_type}"


def normalise(raw: str, id_type: str = "uscc") -> str:
    s = unicodedata.normalize("NFKC", raw).strip()
    return s.upper() if id_type == "uscc" else s.casefold()


def uscc_check_char(first17: str) -> str | None:
    """The GB 32100-2015 check character for 17 code characters (None if bad charset)."""
    total = 0
    for ch, w in zip(first17, USCC_WEIGHTS, strict=True):
        v = _USCC_VALUE.get(ch)
        if v is None:
            return None
        total += v * w
    return USCC_CHARSET[(31 - total % 31) % 31]


def is_valid_uscc(code: str) -> bool:
    """True for a normalised 18-character code with a correct check character."""
    if len(code) != 18:
        return False
    c = uscc_check_char(code[:17])
    return c is not None and code[17] == c


@dataclass
class PreparedIds:
    """Normalised IDs ready for hashing, with what was left out and why."""

    ids: list[str]                  # normalised, in original order, invalid/dups removed
    rows: np.ndarray                # int64: original row index of each kept ID
    n_input: int
    invalid_rows: list[int] = field(default_factory=list)
    duplicate_rows: list[int] = field(default_factory=list)
    id_type: str = "uscc"
    # the kept IDs' UTF-8 bytes as an (n, width) uint8 matrix when they all have one
    # width (USCC codes); lets the engine ship rows to its workers without per-ID objects
    packed: np.ndarray | None = None

    @property
    def norm_version(self) -> str:
        return norm_version(self.id_type)

    def digest(self) -> str:
        """SHA-256 of the prepared ID list (content address for caches)."""
        h = hashlib.sha256(self.norm_version.encode() + b"\0")
        for s in self.ids:
            h.update(s.encode())
            h.update(b"\n")
        return h.hexdigest()

    def stats(self) -> dict:
        return {"n_input": self.n_input, "n_used": len(self.ids),
                "n_invalid": len(self.invalid_rows), "n_duplicate": len(self.duplicate_rows),
                "invalid_rows_sample": self.invalid_rows[:MAX_REPORTED_ROWS],
                "duplicate_rows_sample": self.duplicate_rows[:MAX_REPORTED_ROWS],
                "norm_version": self.norm_version}


_USCC_TABLE = np.full(256, 255, dtype=np.uint8)
_USCC_TABLE[np.frombuffer(USCC_CHARSET.encode(), dtype=np.uint8)] = np.arange(31)


def _uscc_valid_mask(raw: Sequence) -> np.ndarray:
    """Vectorised :func:`is_valid_uscc` of each *raw* entry taken as already normalised.

    ``prepare_ids`` uses it only for entries that normalisation leaves unchanged (the
    common case: 18 ASCII upper-case characters); others go through the scalar check.
    """
    n = len(raw)
    mask = np.zeros(n, dtype=bool)
    idx = [i for i, r in enumerate(raw) if type(r) is str and len(r) == 18 and r.isascii()]
    if not idx:
        return mask
    buf = np.frombuffer("".join(raw[i] for i in idx).encode("ascii"),
                        dtype=np.uint8).reshape(-1, 18)
    vals = _USCC_TABLE[buf]
    ok = (vals != 255).all(axis=1)
    w = np.asarray(USCC_WEIGHTS, dtype=np.int64)
    total = vals[:, :17].astype(np.int64) @ w
    check = (31 - total % 31) % 31
    ok &= vals[:, 17] == check
    mask[np.asarray(idx, dtype=np.int64)] = ok
    return mask


def _rows_text(rows: list[int]) -> str:
    more = f" (+{len(rows) - MAX_REPORTED_ROWS} more)" if len(rows) > MAX_REPORTED_ROWS else ""
    return ", ".join(str(r) for r in rows[:MAX_REPORTED_ROWS]) + more


def prepare_ids(raw: Sequence[str], id_type: str = "uscc", invalid: str = "fail",
                duplicates: str = "fail") -> PreparedIds:
    """Normalise and validate ``raw``; apply the invalid/duplicate policies."""
    if id_type not in ID_TYPES:
        raise ValueError(f"id_type must be one of {ID_TYPES}, not {id_type!r}")
    if invalid not in POLICIES:
        raise ValueError(f"invalid-ID policy must be one of {POLICIES}, not {invalid!r}")
    if duplicates not in DUP_POLICIES:
        raise ValueError(f"duplicate policy must be one of {DUP_POLICIES}, not {duplicates!r}")
    packed = None
    fast = _prepare_uscc_packed(raw) if id_type == "uscc" else _prepare_strings_joined(raw)
    if fast is None:
        out, rows, bad, dups = _prepare_loop(raw, id_type)
    elif id_type == "uscc":
        out, rows, bad, dups, packed = fast
    else:
        out, rows, bad, dups = fast
    if bad and invalid == "fail":
        raise IdValidationError(
            f"{len(bad)} invalid {id_type} ID(s) at row(s) {_rows_text(bad)} "
            "(0-based); set the invalid-ID policy to 'drop' to leave them out")
    if dups and duplicates == "fail":
        raise DuplicateIdError(
            f"{len(dups)} duplicate ID(s) (after normalisation) at row(s) {_rows_text(dups)} "
            "(0-based); set the duplicate policy to 'dedupe' to keep first occurrences")
    return PreparedIds(out, np.asarray(rows, dtype=np.int64), len(raw), bad, dups, id_type,
                       packed)


def _prepare_loop(raw: Sequence, id_type: str) -> tuple[list, list, list, list]:
    """The reference preparation, one ID at a time: (ids, rows, invalid, duplicates)."""
    out: list[str] = []
    rows: list[int] = []
    bad: list[int] = []
    dups: list[int] = []
    seen: set[str] = set()
    uscc = id_type == "uscc"
    valid = _uscc_valid_mask(raw) if uscc else None
    for i, r in enumerate(raw):
        if not isinstance(r, str):
            bad.append(i)
            continue
        s = normalise(r, id_type)
        if not s or (uscc and not (valid[i] if s is r or s == r else is_valid_uscc(s))):
            bad.append(i)
            continue
        if s in seen:
            dups.append(i)
            continue
        seen.add(s)
        out.append(s)
        rows.append(i)
    return out, rows, bad, dups


_MIX_MUL = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (a bijection of uint64), elementwise."""
    x = x ^ (x >> np.uint64(30))
    x *= _MIX_MUL[0]
    x ^= x >> np.uint64(27)
    x *= _MIX_MUL[1]
    return x ^ (x >> np.uint64(31))


def _prepare_strings_joined(raw: Sequence) -> tuple | None:
    """:func:`_prepare_loop` for ``id_type="string"`` without a per-ID Python loop, or
    None (then the loop runs).

    Normalises the whole column at once: ``"\n".join``, one NFKC (skipped when the
    column is ASCII, which NFKC leaves unchanged) and one casefold of the joined text,
    split, ``str.strip`` per piece (C-level ``map``). This equals normalising each ID
    alone: U+000A is a starter that composes with nothing and no character's NFKC or
    case folding contains it, so the pieces do not interact -- and the split must give
    back exactly one piece per ID, else this returns None (as it does for a non-str
    entry or an ID containing a newline). Strip and casefold commute (no whitespace
    character has a case mapping, no folding yields whitespace). Duplicates: the first
    occurrence of each normalised ID, from a ``set`` (and only if it finds repeats or
    empty IDs, a ``dict`` of first rows), both built in C.
    """
    n = len(raw)
    try:
        joined = "\n".join(raw)
    except TypeError:  # a non-str entry
        return None
    if not n or joined.count("\n") != n - 1:
        return None
    if joined.isascii():   # NFKC leaves ASCII alone; its casefold is lower()
        joined = joined.lower()
    else:
        joined = unicodedata.normalize("NFKC", joined).casefold()
    parts = joined.split("\n")
    if len(parts) != n:
        return None
    ids = list(map(str.strip, parts))
    del joined, parts
    distinct = set(ids)
    if len(distinct) == n and "" not in distinct:  # the usual case
        return ids, np.arange(n, dtype=np.int64), [], []
    del distinct
    first = dict(zip(reversed(ids), range(n - 1, -1, -1), strict=True))  # -> smallest row
    bad: list[int] = []
    if "" in first:  # empty after normalisation: invalid, never a duplicate
        del first[""]
        bad = np.flatnonzero(np.fromiter(map(len, ids), dtype=np.int64, count=n) == 0
                             ).tolist()
    kept = np.sort(np.fromiter(first.values(), dtype=np.int64, count=len(first)))
    is_dup = np.ones(n, dtype=bool)
    is_dup[kept] = False
    is_dup[bad] = False
    return [ids[i] for i in kept.tolist()], kept, bad, np.flatnonzero(is_dup).tolist()


def _row_words(rows: np.ndarray) -> list[np.ndarray]:
    """The 8 + 8 + 2-byte little-endian words of each row of a (k, 18) uint8 matrix."""
    return [np.ascontiguousarray(rows[:, a:b]).view(dt).ravel()
            for a, b, dt in ((0, 8, "<u8"), (8, 16, "<u8"), (16, 18, "<u2"))]


def _row_hash(words: list[np.ndarray]) -> np.ndarray:
    """A 64-bit hash of each row from its :func:`_row_words` (splitmix64 chained)."""
    return _mix64(_mix64(_mix64(words[0]) ^ words[1]) ^ words[2].astype(np.uint64))


def _first_occurrences(rows: np.ndarray) -> np.ndarray:
    """Ascending positions of the first occurrence of each distinct row of an (k, 18)
    uint8 matrix: if a 64-bit hash of each row's 8 + 8 + 2-byte words has no repeat,
    all rows; else a stable sort on the words, then adjacent compares. (The hash is
    splitmix64 chained over the words: structured codes such as consecutive numbers
    do not collide, so the sort-and-compare runs only where there are duplicates.)"""
    words = _row_words(rows)
    mix = _row_hash(words)
    mix.sort()
    if not (mix[1:] == mix[:-1]).any():  # distinct hashes: distinct rows (the usual case)
        return np.arange(len(rows))
    order = np.lexsort(words[::-1])  # stable: equal rows stay in row order
    differs = np.zeros(len(order) - 1, dtype=bool)
    for w in words:
        s = w[order]
        differs |= s[1:] != s[:-1]
    return np.sort(order[np.concatenate(([True], differs))])


def _prepare_uscc_packed(raw: Sequence) -> tuple | None:
    """:func:`_prepare_loop` for USCC codes without a per-ID Python loop, or None.

    Applies when every entry is an 18-character ASCII ``str`` (the CSV loader's usual
    output): the column is joined once and checked as an (n, 18) byte matrix. An entry
    whose characters are all in the USCC charset is unchanged by normalisation (NFKC,
    strip and upper-casing leave ``0-9 A-Y`` alone), so it is valid iff its check
    character is right; the few others go through :func:`normalise` one by one.
    Duplicates: first occurrences of equal rows (:func:`_first_occurrences`).
    Returns the same lists as the loop plus the kept codes packed as an (n_kept, 18)
    uint8 array.
    """
    n = len(raw)
    try:
        joined = "\n".join(raw)
    except TypeError:  # a non-str entry
        return None
    if not n or len(joined) != 19 * n - 1 or not joined.isascii() or \
            joined.count("\n") != n - 1:
        return None
    buf = np.frombuffer((joined + "\n").encode("ascii"), dtype=np.uint8).reshape(n, 19)
    if not (buf[:, 18] == 10).all():  # some entry is not 18 characters long
        return None
    codes = buf[:, :18]
    vals = _USCC_TABLE[codes]
    ok = np.ones(n, dtype=bool)
    ok[np.flatnonzero(vals.ravel() == 255) // 18] = False  # a character outside the charset
    total = np.zeros(n, dtype=np.int32)
    for i, w in enumerate(USCC_WEIGHTS):
        total += vals[:, i] * np.int32(w)
    good = ok & (vals[:, 17] == (31 - total % 31) % 31)
    ok_charset_bad_check = np.flatnonzero(ok & ~good)
    other = np.flatnonzero(~ok)  # outside the charset as given: normalise, then check
    fixed = {}
    for i in other.tolist():
        s = normalise(raw[i], "uscc")
        if is_valid_uscc(s):
            fixed[i] = s
    if fixed:
        codes = codes.copy()
        for i, s in fixed.items():
            codes[i] = np.frombuffer(s.encode("ascii"), dtype=np.uint8)
        good[np.fromiter(fixed, dtype=np.int64, count=len(fixed))] = True
    bad = np.sort(np.concatenate([ok_charset_bad_check, np.setdiff1d(other, list(fixed))]))
    cand = np.flatnonzero(good)
    kept = cand[_first_occurrences(codes[cand] if len(cand) < n else codes)]
    dups = np.setdiff1d(cand, kept, assume_unique=True) if len(kept) < len(cand) else \
        kept[:0]
    packed = np.ascontiguousarray(codes[kept])
    if len(kept) == n:
        out = list(raw)
    else:
        out = np.asarray(raw, dtype=object)[kept].tolist()
    for j in np.flatnonzero(np.isin(kept, list(fixed))).tolist() if fixed else ():
        out[j] = fixed[int(kept[j])]
    return out, kept, bad.astype(np.int64).tolist(), dups.tolist(), packed


#: IDs per ``"\n".join`` in :func:`raw_digest` (the GIL is let go between chunks);
#: small, so a chunk's strings are still in cache when joined: with 65,536 a shuffled
#: 10M-ID column cost 3.6 s of CPU instead of one join's ~2 s
DIGEST_CHUNK = 1 << 11


def _hash_joined(h, raw: Sequence[str]) -> bool:
    """``h.update("\n".join(raw).encode())`` chunk by chunk; False (``h`` spoilt) if an
    entry is not a string or contains a newline."""
    it, sep = iter(raw), b""
    while part := list(itertools.islice(it, DIGEST_CHUNK)):
        try:
            joined = "\n".join(part)
        except TypeError:
            return False
        if joined.count("\n") != len(part) - 1:
            return False
        h.update(sep)
        h.update(joined.encode("utf-8", "surrogatepass"))
        sep = b"\n"
    return True


def raw_digest(raw: Sequence[str], id_type: str, invalid: str, duplicates: str) -> str:
    """SHA-256 of the raw ID column plus everything that shapes its preparation.

    Lets a platform recognise an unchanged dataset (and reuse its OPRF cache) without
    re-normalising millions of IDs: it runs in the platform's online phase, so it is
    a ``"\n".join`` and one hash (~0.1 s per million IDs), in chunks of
    :data:`DIGEST_CHUNK` IDs hashing the same bytes (one join of 10M IDs held the GIL
    for seconds on a loaded machine: the channel's heartbeats stopped and the peer
    gave up). The encoding is unambiguous: the count is hashed, and if any ID is not a
    string or contains a newline, every length is hashed too.
    """
    head = (f"fedjoint-raw-digest-v2\0{norm_version(id_type)}\0{invalid}\0"
            f"{duplicates}\0{len(raw)}\0").encode()
    h = hashlib.sha256(head)
    if _hash_joined(h, raw):
        return h.hexdigest()
    h = hashlib.sha256(head)
    strs = [r if isinstance(r, str) else f"\0{type(r).__name__}" for r in raw]
    h.update(b"lengths\0")
    h.update(np.fromiter(map(len, strs), dtype=np.int64, count=len(strs)).tobytes())
    h.update("\n".join(strs).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def load_ids_csv(path: str | os.PathLike, column: str = "id") -> list[str]:
    """Read the ``column`` of a UTF-8 CSV file. Errors name the file and row/line."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise IdInputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise IdInputError(f"{path}: is a directory, expected a CSV file") from None
    if not data.strip():
        raise IdInputError(f"{path}: file is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise IdInputError(f"{path}: line {line}: bytes are not valid UTF-8 "
                           f"(byte offset {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise IdInputError(f"{path}: file is empty") from None
    except csv.Error as exc:
        raise IdInputError(f"{path}: line 1: malformed CSV header: {exc}") from None
    names = [h.strip() for h in header]
    if column not in names:
        raise IdInputError(f"{path}: no column {column!r} in header (columns: "
                           f"{', '.join(names[:20])})")
    col = names.index(column)
    ids: list[str] = []
    try:
        for row in reader:
            if not row:  # blank line
                continue
            if col >= len(row):
                raise IdInputError(f"{path}: line {reader.line_num}: row has {len(row)} "
                                   f"field(s), no value for column {column!r}")
            ids.append(row[col])
    except csv.Error as exc:
        raise IdInputError(f"{path}: line {reader.line_num}: malformed CSV: {exc}") from None
    if not ids:
        raise IdInputError(f"{path}: header only, no data rows")
    return ids
