"""Typed algorithm parameters from job.toml tables, with errors that name the key.

A params dataclass's fields are its canonical ``[params]`` keys. It may declare, as
class attributes (``typing.ClassVar``):

* ``ALIASES`` - names people already know (XGBoost, scikit-learn, older fedjoint names)
  mapped to a canonical field: ``{"eta": "learning_rate"}``, or to an :class:`Alias`
  that also converts the value (``scale_pos_weight = w`` -> ``class_weight =
  {"0": 1, "1": w}``);
* ``REFUSED`` - names that are known but mean nothing for the algorithm or would need a
  protocol change, mapped to the reason given (never silently ignored);
* ``ARTIFACT_NAMES`` / ``ADDED_FIELDS`` - see :func:`artifact_params`.

Aliases are resolved once, at parse time (:func:`canonical_params`): the canonical dict
is what the bank proposes and both nodes store. One concept has one canonical name in
every algorithm that has it (``learning_rate``, ``reg_lambda``, ``reg_alpha``, ``seed``,
``class_weight``...).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass


class ParamError(ValueError):
    """A job parameter is unknown, of the wrong type or out of range."""


class UnknownParam(ParamError):
    """A key that is neither a field, an alias nor a refused name."""

    def __init__(self, message: str, key: str, suggestions: list[str]):
        super().__init__(message)
        self.key, self.suggestions = key, suggestions


@dataclass(frozen=True)
class Alias:
    """An alias whose value is converted (``convert`` raises ParamError on bad input)."""

    canonical: str
    convert: Callable[[object], object] | None = None


def _type_ok(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def aliases(cls) -> dict[str, Alias]:
    """``cls``'s aliases, each as an :class:`Alias` (checked against its fields)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for name, target in dict(getattr(cls, "ALIASES", {}) or {}).items():
        a = target if isinstance(target, Alias) else Alias(target)
        if a.canonical not in fields or name in fields:
            raise TypeError(f"{cls.__name__}.ALIASES[{name!r}] -> {a.canonical!r}: an alias "
                            "must name a field and must not be one")
        out[name] = a
    return out


def refused(cls) -> dict[str, str]:
    return dict(getattr(cls, "REFUSED", {}) or {})


def _distance(a: str, b: str) -> int:
    """Optimal-string-alignment edit distance (a swap of two letters counts once)."""
    a, b = a.lower().replace("-", "_"), b.lower().replace("-", "_")
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def close_matches(key: str, names) -> list[str]:
    """The names nearest to ``key`` if within a typo of it (at most 3): one edit for
    keys of 3 to 7 letters, len/4 edits for longer ones; never a merely similar word
    (``reg_alpha`` is not a typo of ``reg_lambda``)."""
    limit = 0 if len(key) < 3 else 1 if len(key) <= 7 else len(key) // 4
    scored = sorted((_distance(key, n), n) for n in names)
    if not scored or scored[0][0] > limit:
        return []
    return [n for d, n in scored if d == scored[0][0]][:3]


def valid_keys(cls) -> str:
    """The canonical keys, then the aliases (``eta = learning_rate``), for messages."""
    names = ", ".join(f.name for f in dataclasses.fields(cls))
    al = aliases(cls)
    if not al:
        return names
    return names + "; aliases: " + ", ".join(f"{k} = {a.canonical}" for k, a in al.items())


def canonical_params(cls, values: dict, where: str) -> tuple[dict, list[tuple[str, str]]]:
    """``values`` with every alias replaced by its canonical key (keys in the order
    given; values converted where the alias says so) and the ``(alias, canonical)``
    pairs that were resolved. Unknown and refused keys, and one parameter given under
    two names, are :class:`ParamError`."""
    fields = [f.name for f in dataclasses.fields(cls)]
    al, ref = aliases(cls), refused(cls)
    out: dict = {}
    given_as: dict[str, str] = {}
    resolved = []
    for key, value in values.items():
        if key in fields:
            canon = key
        elif key in al:
            canon = al[key].canonical
            if al[key].convert is not None:
                try:
                    value = al[key].convert(value)
                except ParamError as exc:
                    raise ParamError(f"{where}: {key} = {value!r}: {exc}") from None
            resolved.append((key, canon))
        elif key in ref:
            raise ParamError(f"{where}: {key} is not accepted: {ref[key]}")
        else:
            near = close_matches(key, fields + list(al))
            shown = [f"{n!r}" + (f" (= {al[n].canonical})" if n in al else "") for n in near]
            hint = f"; did you mean {' or '.join(shown)}?" if near else ""
            raise UnknownParam(f"{where}: unknown key {key!r}{hint}", key, near)
        if canon in given_as:
            raise ParamError(f"{where}: {given_as[canon]!r} and {key!r} are the same "
                             f"parameter ({canon}); give it once")
        given_as[canon] = key
        out[canon] = value
    return out, resolved


def from_dict(cls, values: dict, where: str):
    """Build dataclass ``cls`` from ``values`` (aliases resolved by
    :func:`canonical_params`); unknown keys get a closest-match hint.

    ``where`` names the source, e.g. ``"job.toml [params]"``. Range checks belong in
    the dataclass's ``__post_init__`` (raise ParamError naming the field).
    """
    values, _ = canonical_params(cls, values, where)
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if not _type_ok(value, hints[key]):
            raise ParamError(f"{where}: {key} = {value!r} is not a valid {hints[key]}")
    try:
        return cls(**values)
    except ParamError as exc:
        raise ParamError(f"{where}: {exc}") from None


def artifact_params(p) -> dict:
    """The params a model part records (its digest covers them), in a form that stays
    stable as the vocabulary grows: fields renamed after a format was fixed keep their
    recorded name (``ARTIFACT_NAMES``: canonical -> recorded), and fields added later
    (``ADDED_FIELDS``) appear only when set to something other than their default, so
    parts of jobs that do not use them are byte-identical to before."""
    cls = type(p)
    out = dataclasses.asdict(p)
    for f in dataclasses.fields(cls):
        if f.name in getattr(cls, "ADDED_FIELDS", ()) and out[f.name] == f.default:
            del out[f.name]
    for canon, recorded in dict(getattr(cls, "ARTIFACT_NAMES", {}) or {}).items():
        if canon in out:
            out[recorded] = out.pop(canon)
    return out


def positive_class_weight(value) -> dict:
    """``scale_pos_weight = w`` (XGBoost) as ``class_weight = {"0": 1.0, "1": w}``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ParamError("expected a number > 0 (the weight of the positive class)")
    return {"0": 1.0, "1": float(value)}


def check_class_weight(cw, max_weight: float, any_keys: bool = False) -> None:
    """``None`` | ``"balanced"`` | ``{"0": w0, "1": w1}`` with weights in (0, max);
    ``any_keys``: a multiclass table, its keys the class values (checked with the data)."""
    if cw is None:
        return
    if isinstance(cw, str):
        if cw != "balanced":
            raise ParamError(f"class_weight = {cw!r}; expected \"balanced\" or a table")
        return
    if not isinstance(cw, dict):
        raise ParamError(f"class_weight = {cw!r}; expected \"balanced\" or a table")
    keys = {str(k) for k in cw}
    if not any_keys and not keys <= {"0", "1"}:
        raise ParamError(f"class_weight keys must be \"0\" and \"1\", got {sorted(keys)}")
    for k, v in cw.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < max_weight:
            raise ParamError(f"class_weight[{k!r}] = {v!r} must be in (0, {max_weight:g})")


#: XGBoost's ``scale_pos_weight``, an alias of ``class_weight`` in every algorithm
SCALE_POS_WEIGHT = Alias("class_weight", positive_class_weight)

_NO_TREES = "a tree parameter; logistic_regression trains no trees"
#: tree-ensemble names refused by algorithms that grow no trees
TREE_ONLY = {
    **{k: f"{_NO_TREES} (its passes over the data are epochs)"
       for k in ("n_trees", "n_estimators", "num_boost_round")},
    **{k: _NO_TREES for k in ("max_depth", "gamma", "min_split_loss", "max_delta_step",
                              "min_child_weight", "max_bin", "colsample_bytree",
                              "subsample")},
}
#: scikit-learn names of linear models that have no one-to-one canonical key
LINEAR_MODEL_REFUSED = {
    "alpha": "ambiguous: XGBoost's alpha is the L1 penalty (reg_alpha), scikit-learn's "
             "SGDClassifier alpha the penalty strength (L2 by default: reg_lambda); name "
             "the one you mean",
    "C": "scikit-learn's inverse penalty strength: set reg_lambda = 1 / (C * n) for n "
         "training rows",
    "penalty": "set reg_lambda (L2) and/or reg_alpha (L1)",
}
