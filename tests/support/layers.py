"""Import-graph checker behind tests/test_layers.py (reads source with ``ast``; imports nothing).

An import is every ``import x`` / ``from x import y`` anywhere in a file (module level,
inside functions, under ``if TYPE_CHECKING:`` or ``try:``) plus every
``importlib.import_module("x")`` / ``import_module("x")`` / ``__import__("x")`` whose first
argument is a string literal. ``from pkg import name`` resolves to ``pkg.name`` when that
is a module of the scanned tree, else to ``pkg``; relative imports resolve against the
importing module's package.
"""

from __future__ import annotations

import ast
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("federation", "fedjoint", "parties", "psi", "secure_agg")
# Top-level names that belong to this repository: never "third party".
PROJECT_TOPS = frozenset(PACKAGES) | {"tests", "bench", "examples", "support"}
MAX_LINES = 600


@dataclass(frozen=True)
class Imp:
    src: str     # importing module
    path: str    # its file, relative to the root
    line: int
    target: str  # imported module, absolute and resolved

    def where(self) -> str:
        return f"{self.path}:{self.line}: {self.src} imports {self.target}"


def is_generated(p: Path) -> bool:
    return "_pb2" in p.name


def product_files(root: Path) -> dict[str, Path]:
    """Module name -> file for every non-generated .py under the packages that exist."""
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        if not (root / pkg).is_dir():
            continue
        for p in sorted((root / pkg).rglob("*.py")):
            if "__pycache__" in p.parts or is_generated(p):
                continue
            parts = list(p.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = p
    return mods


def _absolute(mod: str, is_pkg: bool, level: int, name: str | None) -> str:
    if not level:
        return name or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _literal_import(node: ast.Call) -> str | None:
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    if name not in ("import_module", "__import__") or not node.args:
        return None
    a = node.args[0]
    return a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None


def imports_of(root: Path, mods: dict[str, Path]) -> list[Imp]:
    out: list[Imp] = []
    for mod, p in mods.items():
        rel, is_pkg = str(p.relative_to(root)), p.name == "__init__.py"
        tree = ast.parse(p.read_text(encoding="utf-8"), filename=rel)
        for n in ast.walk(tree):
            if isinstance(n, ast.Import):
                out += [Imp(mod, rel, n.lineno, a.name) for a in n.names]
            elif isinstance(n, ast.ImportFrom):
                base = _absolute(mod, is_pkg, n.level, n.module)
                for a in n.names:
                    sub = f"{base}.{a.name}"
                    out.append(Imp(mod, rel, n.lineno, sub if sub in mods else base))
            elif isinstance(n, ast.Call) and (lit := _literal_import(n)):
                dots = len(lit) - len(lit.lstrip("."))
                out.append(Imp(mod, rel, n.lineno,
                               _absolute(mod, is_pkg, dots, lit[dots:] or None)))
    return out


def kind(target: str) -> str:
    top = target.split(".")[0]
    if top in PROJECT_TOPS:
        return "project"
    return "stdlib" if top in sys.stdlib_module_names else "third_party"


def under(mod: str, *prefixes: str) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


FLOOR = "federation.link"
ALGORITHMS = ("parties", "psi")


def floor_violations(imps: list[Imp]) -> list[Imp]:
    """federation.link.* -> stdlib, numpy, federation.link.* only."""
    return [i for i in imps if under(i.src, FLOOR) and not (
        kind(i.target) == "stdlib" or under(i.target, "numpy", FLOOR))]


def algorithm_violations(imps: list[Imp]) -> list[Imp]:
    """parties.*, psi.* -> no project module except the floor, secure_agg, parties, psi."""
    return [i for i in imps if under(i.src, *ALGORITHMS) and kind(i.target) == "project"
            and not under(i.target, FLOOR, "secure_agg", *ALGORITHMS)]


def role_violations(imps: list[Imp]) -> list[Imp]:
    """parties.bank.* and parties.provincial_platform.* never import each other."""
    bank, plat = "parties.bank", "parties.provincial_platform"
    return [i for i in imps if (under(i.src, bank) and under(i.target, plat))
            or (under(i.src, plat) and under(i.target, bank))]


def secure_agg_violations(imps: list[Imp]) -> list[Imp]:
    """secure_agg.* -> stdlib, third party, secure_agg.* only."""
    return [i for i in imps if under(i.src, "secure_agg") and kind(i.target) == "project"
            and not under(i.target, "secure_agg")]


def find_cycles(imps: list[Imp], mods: dict[str, Path]) -> list[list[Imp]]:
    """One shortest cycle through every module that lies on a cycle, deduplicated.

    Edges are only the imports written in the source. Importing ``a.b.c`` also runs
    ``a/__init__`` and ``a/b/__init__``, but those implicit parent edges are *not* added:
    with them, every package whose ``__init__`` re-exports a submodule that imports a
    sibling would form a spurious cycle (``a.b.c -> a.b -> a.b.c``) that Python resolves
    fine, since the parent is already in ``sys.modules``. A package ``__init__``'s own
    re-export imports are kept, so a submodule that explicitly imports its own package
    (``from a.b import X`` where X is a re-exported name, not a submodule) while that
    ``__init__`` imports the submodule back *is* reported: that one breaks on import order.
    """
    edges: dict[str, dict[str, Imp]] = {}
    for i in imps:
        if i.target in mods and i.target != i.src:
            edges.setdefault(i.src, {}).setdefault(i.target, i)
    seen: set[tuple[str, ...]] = set()
    cycles: list[list[Imp]] = []
    for start in sorted(edges):
        prev: dict[str, Imp] = {}
        queue = deque([start])
        while queue:  # BFS for the shortest path start -> ... -> start
            cur = queue.popleft()
            for nxt, imp in sorted(edges.get(cur, {}).items()):
                if nxt == start or nxt not in prev:
                    prev[nxt] = imp
                    if nxt == start:
                        queue.clear()
                        break
                    queue.append(nxt)
        if start not in prev:
            continue
        path, node = [], start
        while True:
            path.append(prev[node])
            node = prev[node].src
            if node == start:
                break
        path.reverse()
        names = [p.src for p in path]
        k = names.index(min(names))
        key = tuple(names[k:] + names[:k])
        if key not in seen:
            seen.add(key)
            cycles.append(path[k:] + path[:k])
    return cycles


def format_cycle(cycle: list[Imp]) -> str:
    hops = " -> ".join(f"{i.src} ({i.path}:{i.line})" for i in cycle)
    return f"{hops} -> {cycle[0].src}"


def oversized(root: Path, mods: dict[str, Path], limit: int = MAX_LINES) -> list[tuple[str, int]]:
    counts = [(str(p.relative_to(root)), len(p.read_text(encoding="utf-8").splitlines()))
              for p in mods.values()]
    return sorted((c for c in counts if c[1] > limit), key=lambda c: -c[1])
