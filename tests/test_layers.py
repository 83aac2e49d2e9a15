"""The layer rule of docs/DESIGN.md, enforced by reading imports (never by importing).

    runtime (federation minus its floor, fedjoint) -> algorithms (parties, psi)
                                                   -> {floor federation.link, secure_agg}

Every import counts: module level, function level (lazy), ``if TYPE_CHECKING:`` blocks
and ``importlib.import_module("...")`` / ``__import__("...")`` with a literal name.
Generated ``*_pb2*.py`` files are skipped. The checker lives in tests/support/layers.py;
``test_checker_catches_violations`` runs it on a synthetic tree so these tests cannot
pass vacuously.

Cycles: edges are the imports written in the source, with ``from pkg import name``
resolved to ``pkg.name`` when that is a module, else ``pkg``. The implicit "importing
``a.b.c`` runs ``a/__init__``" edges are deliberately not added: with them every package
whose ``__init__`` re-exports a submodule that imports a sibling would show a spurious
cycle ``a.b.c -> a.b -> a.b.c`` that Python resolves fine. An ``__init__``'s own
re-export imports are kept, so a submodule that explicitly imports a re-exported *name*
from its own package while that ``__init__`` imports it back is reported — that cycle is
real (it fails or succeeds depending on which module is imported first).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from support import layers as L

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tree():
    mods = L.product_files(ROOT)
    return mods, L.imports_of(ROOT, mods)


def _report(title: str, found: list[L.Imp]) -> str:
    return title + ":\n" + "\n".join("  " + i.where() for i in found)


def test_tree_is_scanned(tree):
    mods, imps = tree
    assert L.FLOOR in mods, "federation/link/ (the protocol floor) not found"
    for pkg in ("parties", "psi", "secure_agg", "federation"):
        assert any(L.under(m, pkg) for m in mods), f"no modules found under {pkg}/"
    assert len(imps) > len(mods), "suspiciously few imports parsed"


def test_floor_imports_only_stdlib_numpy_and_itself(tree):
    bad = L.floor_violations(tree[1])
    assert not bad, _report("federation.link may import only stdlib, numpy and "
                            "federation.link.*", bad)


def test_algorithms_import_only_floor_secure_agg_and_algorithms(tree):
    bad = L.algorithm_violations(tree[1])
    assert not bad, _report("parties.* / psi.* may import of the project only "
                            "federation.link, secure_agg, parties and psi", bad)


def test_bank_and_platform_never_import_each_other(tree):
    bad = L.role_violations(tree[1])
    assert not bad, _report("parties.bank and parties.provincial_platform import each "
                            "other (only parties.registry may know both)", bad)


def test_secure_agg_imports_nothing_of_the_project_but_itself(tree):
    bad = L.secure_agg_violations(tree[1])
    assert not bad, _report("secure_agg.* may import only stdlib, third-party and "
                            "secure_agg.*", bad)


def test_no_import_cycles(tree):
    mods, imps = tree
    cycles = L.find_cycles(imps, mods)
    assert not cycles, f"{len(cycles)} import cycle(s):\n" + "\n".join(
        "  " + L.format_cycle(c) for c in cycles)


def test_no_product_file_over_600_lines(tree):
    big = L.oversized(ROOT, tree[0])
    assert not big, f"product files over {L.MAX_LINES} lines:\n" + "\n".join(
        f"  {path}: {n} lines" for path, n in big)


SYNTHETIC = {
    "federation/__init__.py": "",
    "federation/config.py": "",
    "federation/link/__init__.py": "from .codec import X\nimport numpy\nimport grpc\n",
    "federation/link/codec.py": "def f():\n    from federation import config\n",
    "federation/channel/fedjoint_pb2.py": "import parties.bank.tree\n",  # generated: skipped
    "parties/__init__.py": "",
    "parties/registry.py": "import parties.bank.tree\nimport parties.provincial_platform.sb\n",
    "parties/bank/__init__.py": "",
    "parties/bank/tree.py": "from parties.provincial_platform import sb\nimport pandas\n",
    "parties/provincial_platform/__init__.py": "",
    "parties/provincial_platform/sb.py": "from federation.link import codec\n"
                                         "import federation.channel\n",
    "psi/__init__.py": "",
    "psi/a.py": "def lazy():\n    from . import b\n",
    "psi/b.py": "import importlib\nm = importlib.import_module('psi.c')\n",
    "psi/c.py": "from .a import lazy\n" + "x = 1\n" * 600,
    "secure_agg/__init__.py": "",
    "secure_agg/pool.py": "import os\nimport gmpy2\nfrom psi import a\n",
}


def test_checker_catches_violations(tmp_path):
    for rel, text in SYNTHETIC.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(textwrap.dedent(text))
    mods = L.product_files(tmp_path)
    assert "federation.channel.fedjoint_pb2" not in mods and "fedjoint" not in mods
    imps = L.imports_of(tmp_path, mods)
    pairs = lambda found: {(i.src, i.target, i.line) for i in found}  # noqa: E731

    assert pairs(L.floor_violations(imps)) == {
        ("federation.link", "grpc", 3), ("federation.link.codec", "federation.config", 2)}
    assert pairs(L.algorithm_violations(imps)) == {
        ("parties.provincial_platform.sb", "federation.channel", 2)}
    assert pairs(L.role_violations(imps)) == {
        ("parties.bank.tree", "parties.provincial_platform.sb", 1)}
    assert pairs(L.secure_agg_violations(imps)) == {("secure_agg.pool", "psi.a", 3)}
    cycles = L.find_cycles(imps, mods)
    assert [L.format_cycle(c) for c in cycles] == [
        "psi.a (psi/a.py:2) -> psi.b (psi/b.py:2) -> psi.c (psi/c.py:1) -> psi.a"]
    assert L.oversized(tmp_path, mods) == [("psi/c.py", 601)]
