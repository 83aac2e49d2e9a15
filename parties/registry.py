"""The algorithm registry: each algorithm declared once.

An entry names the algorithm, its kind (``train`` | ``transform`` | ``score``), its
params class, the bank's and the platform's role modules (both implementing
:mod:`parties.common.role`), its protocol table (version, message kinds, disclosures),
which parties hold a private key, whether the bank's labels are needed and what they
must be (``label_kind``: 0/1, any finite number or class values, from the job's params). The runtime
reaches algorithms only through :func:`get`; adding an algorithm is its own files plus
one :func:`register` call (here for the built-ins, or in a plug-in module).

Registration checks everything a job would trip over later: a known kind, a params
dataclass, role modules with the contract's functions and signatures, a declared protocol
table, a label kind when labels are needed. Errors are :class:`RegistryError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from federation.link import ProtocolTable
from parties.common.artifact import ModelPart
from parties.common.params import from_dict
from parties.common.role import ROLE_FUNCTIONS, check_role_module

KINDS = tuple(ROLE_FUNCTIONS)
PARTIES = ("bank", "platform")
#: what the bank's labels must be: 0/1, any finite number (a regression target), or
#: class values (multiclass: the loader maps them to indices 0..K-1, sorted)
LABEL_KINDS = ("binary", "continuous", "multiclass")


class RegistryError(LookupError):
    """An algorithm is unknown, or its declaration breaks the role contract."""


@dataclass(frozen=True)
class Algorithm:
    name: str
    kind: str                       # "train" | "transform" | "score"
    params: type                    # dataclass; its fields are the job's [params] keys
    bank: ModuleType
    platform: ModuleType
    protocol: ProtocolTable
    key_holders: tuple[str, ...]    # parties that generate a private key for the job
    needs_label: bool = True        # the bank's role receives y
    #: typed params -> "binary" | "continuous" | "multiclass" (LABEL_KINDS): what the
    #: bank's labels must be for a job with these params; required when needs_label
    label_kind: Callable[[Any], str] | None = None
    #: exceptions a role raises for a problem with the job itself (its data, params,
    #: the peer's key): the job fails with the message, not as an "internal error"
    job_errors: tuple[type[BaseException], ...] = ()
    #: what a report may show about a model part: ModelPart -> {"feature_importance":
    #: [{feature, gain, splits, ...}], "measure": ...} (parties.common.explain)
    explain: Callable[[ModelPart], dict] | None = None
    #: the roles take categorical features (PartyData.categories); otherwise a dataset
    #: with categorical columns is refused before any message crosses
    categorical: bool = False
    summary: str = ""
    #: online scoring (``fedjoint serve``): (bank module with ``scorer(model)``,
    #: platform module with ``answerer(model, setup)``), see parties.common.serving;
    #: None: the algorithm's models cannot be served
    serving: tuple[ModuleType, ModuleType] | None = None
    #: input names the roles cannot run without (PartyData.inputs); a job or pipeline
    #: stage that names none of them is refused when its file is read
    inputs: tuple[str, ...] = ()

    def missing_inputs(self, given) -> list[str]:
        """The required inputs ``given`` (input name -> reference) lacks."""
        return [n for n in self.inputs if n not in (given or {})]

    @property
    def version(self) -> str:
        return self.protocol.version

    def role(self, party: str) -> ModuleType:
        return self.bank if party == "bank" else self.platform

    def holds_key(self, party: str) -> bool:
        return party in self.key_holders

    def parse_params(self, values: dict, where: str):
        """The typed params object (``ParamError`` names the key and lists valid ones)."""
        return from_dict(self.params, dict(values or {}), where)

    def param_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.params)]

    def labels_for(self, params) -> tuple[str, str] | None:
        """``(label kind, what needs it)`` for a job with typed ``params``, e.g.
        ``("binary", "objective binary:logistic")``; None if the bank's role takes no
        labels. The kind is the algorithm's declaration, never inferred from the data."""
        if not self.needs_label:
            return None
        kind = self.label_kind(params)
        if kind not in LABEL_KINDS:
            raise RegistryError(f"algorithm {self.name!r}: label_kind gave {kind!r}, not one "
                                f"of {LABEL_KINDS}")
        objective = getattr(params, "objective", None)
        return kind, f"objective {objective}" if objective else self.name


_REGISTRY: dict[str, Algorithm] = {}


def register(algo: Algorithm) -> Algorithm:
    """Add ``algo`` after checking its declaration; returns it."""
    where = f"algorithm {algo.name!r}"
    if not algo.name or not algo.name.replace("_", "").isalnum() or algo.name != algo.name.lower():
        raise RegistryError(f"{where}: names are lowercase letters, digits and '_'")
    if algo.name in _REGISTRY and _REGISTRY[algo.name] is not algo:
        raise RegistryError(f"{where} is already registered")
    if algo.kind not in KINDS:
        raise RegistryError(f"{where}: kind {algo.kind!r} is not one of {KINDS}")
    if not dataclasses.is_dataclass(algo.params):
        raise RegistryError(f"{where}: params must be a dataclass, not {algo.params!r}")
    if not set(algo.key_holders) <= set(PARTIES):
        raise RegistryError(f"{where}: key_holders {algo.key_holders} must name parties "
                            f"from {PARTIES}")
    if algo.explain is not None and not callable(algo.explain):
        raise RegistryError(f"{where}: explain must be a function ModelPart -> dict")
    if not isinstance(algo.protocol, ProtocolTable):
        raise RegistryError(f"{where}: protocol must be a declared ProtocolTable")
    for party in PARTIES:
        try:
            check_role_module(algo.role(party), algo.kind, f"{where} ({party})")
        except TypeError as exc:
            raise RegistryError(str(exc)) from None
    if algo.needs_label and not callable(algo.label_kind):
        raise RegistryError(f"{where}: needs_label: declare label_kind (params -> one of "
                            f"{LABEL_KINDS})")
    _REGISTRY[algo.name] = algo
    return algo


def unregister(name: str) -> None:
    """Remove an algorithm (plug-in tests)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Algorithm:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RegistryError(f"unknown algorithm {name!r} (registered: "
                            f"{', '.join(names()) or 'none'})") from None


def names(kind: str | None = None) -> list[str]:
    return sorted(n for n, a in _REGISTRY.items() if kind is None or a.kind == kind)


def all_algorithms() -> list[Algorithm]:
    return [_REGISTRY[n] for n in names()]


# ------------------------------------------------------------------------ built-ins


def _builtins() -> None:
    from parties.bank import binning_woe as bank_bin
    from parties.bank import linreg as bank_linreg
    from parties.bank import lr as bank_lr
    from parties.bank import lr_serving as bank_lr_serve
    from parties.bank import secureboost as bank_sb
    from parties.bank import secureboost_serving as bank_sb_serve
    from parties.bank import selection as bank_sel
    from parties.bank import woe_lr as bank_woe_lr
    from parties.bank import woe_lr_serving as bank_woe_serve
    from parties.common import binning_woe_wire, lr_common, secureboost_wire, woe_lr
    from parties.common.explain import linear_coefficients, tree_importance
    from parties.common.linreg_common import LinRegParams
    from parties.common.lr_common import LRParams
    from parties.common.secureboost_params import SecureBoostParams
    from parties.common.selection import TABLE as SELECTION_TABLE
    from parties.common.selection import SelectionError, SelectionParams
    from parties.common.woe import BinningParams, WoeError
    from parties.provincial_platform import binning_woe as platform_bin
    from parties.provincial_platform import linreg as platform_linreg
    from parties.provincial_platform import lr as platform_lr
    from parties.provincial_platform import lr_serving as platform_lr_serve
    from parties.provincial_platform import secureboost as platform_sb
    from parties.provincial_platform import secureboost_serving as platform_sb_serve
    from parties.provincial_platform import selection as platform_sel
    from parties.provincial_platform import woe_lr as platform_woe_lr
    from parties.provincial_platform import woe_lr_serving as platform_woe_serve

    register(Algorithm(
        "secureboost", "train", SecureBoostParams, bank_sb, platform_sb,
        secureboost_wire.TABLE, key_holders=("bank",), explain=tree_importance,
        categorical=True,
        label_kind=SecureBoostParams.label_kind, job_errors=(ValueError, PermissionError),
        summary="lossless vertical gradient-boosted trees (XGBoost hist splits)",
        serving=(bank_sb_serve, platform_sb_serve)))
    register(Algorithm(
        "logistic_regression", "train", LRParams, bank_lr, platform_lr,
        lr_common.TABLE, key_holders=("bank", "platform"), explain=linear_coefficients,
        label_kind=LRParams.label_kind, job_errors=(lr_common.LRError,),
        summary="vertical logistic regression (binary, multinomial or one-vs-rest), two "
                "Paillier keys, no third party",
        serving=(bank_lr_serve, platform_lr_serve)))
    # speaks logistic regression's protocol (same message table and version): its
    # residual is the exact squared-loss one, d = z_b + z_p - y (docs/linreg.md)
    register(Algorithm(
        "linear_regression", "train", LinRegParams, bank_linreg, platform_linreg,
        lr_common.TABLE, key_holders=("bank", "platform"), explain=linear_coefficients,
        label_kind=lambda params: "continuous", job_errors=(lr_common.LRError,),
        summary="vertical linear (ridge) regression, exact gradient, two Paillier keys"))
    register(Algorithm(
        "binning", "transform", BinningParams, bank_bin, platform_bin,
        binning_woe_wire.TABLE, key_holders=("bank",), label_kind=BinningParams.label_kind,
        job_errors=(WoeError, ValueError, PermissionError),
        summary="federated quantile / equal-width / monotonic optimal binning with WOE "
                "and IV (platform columns under the bank's Paillier key)"))
    register(Algorithm(
        "woe_lr", "train", woe_lr.WoeLRParams, bank_woe_lr, platform_woe_lr, woe_lr.TABLE,
        key_holders=("bank", "platform"), explain=linear_coefficients, inputs=("binning",),
        label_kind=lambda params: "binary", job_errors=(lr_common.LRError,),
        summary="logistic regression on both parties' WOE-encoded columns (binning input), "
                "converted to a points scorecard (pdo, base_score, base_odds)",
        serving=(bank_woe_serve, platform_woe_serve)))
    register(Algorithm(
        "selection", "transform", SelectionParams, bank_sel, platform_sel, SELECTION_TABLE,
        key_holders=(), needs_label=False, job_errors=(SelectionError,), inputs=("binning",),
        summary="feature selection on a binning input: IV threshold / top-k, correlation "
                "of the bank's WOE columns, PSI stability train vs validation"))


_builtins()
