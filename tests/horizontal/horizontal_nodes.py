"""node.toml files for horizontal tests: a platform (the aggregator) and N banks."""

from __future__ import annotations

from pathlib import Path

from support.nodes import _toml_value

from federation.keys import init_party_keys


def _value(v) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml_value(x)}' for k, x in v.items()) + " }"
    return _toml_value(v)


def sign_pub(root: Path, bank: str) -> str:
    return str(root / "keys" / bank / f"{bank}.sign.pub")


def write_horizontal_nodes(root: Path, frames: dict, *, bank_extra: dict | None = None,
                           platform_extra: dict | None = None,
                           platform_tail: list[str] | None = None) -> tuple[Path, dict]:
    """platform.toml and one <bank>.toml per frame (its CSV beside it); bank_extra maps
    a bank to extra [horizontal] keys. Returns (platform.toml, {bank: toml})."""
    keys = {n: init_party_keys(n, root / "keys" / n) for n in ["platform", *frames]}

    def node(name, party, peer, extra_tables, horizontal, tail=()):
        k, pk = keys[name], keys[peer]
        lines = ["[node]", f'party = "{party}"', f'name = "{name}"',
                 'listen = "127.0.0.1:1"', f'data_dir = "{name}-data"', "",
                 "[keys]", f"tls_key = {_toml_value(k['tls_key'])}",
                 f"tls_cert = {_toml_value(k['tls_cert'])}",
                 f"signing_key = {_toml_value(k['signing_key'])}", "",
                 "[peer]", f'name = "{peer}"', 'address = "127.0.0.1:2"',
                 f"cert = {_toml_value(pk['tls_cert'])}",
                 f'cert_fingerprint = "{pk["cert_fingerprint"]}"',
                 f"signing_public_key = {_toml_value(pk['signing_pub'])}", "", *extra_tables,
                 "[horizontal]", *(f"{a} = {_value(b)}" for a, b in horizontal.items()),
                 "", *tail, ""]
        p = root / f"{name}.toml"
        p.write_text("\n".join(lines))
        return p

    first = next(iter(frames))
    platform = node("platform", "platform", first, ["[datasets.none]", 'path = "none.csv"',
                                                   'id_column = "id"', ""],
                    platform_extra or {}, platform_tail or [])
    tomls = {}
    for name, df in frames.items():
        csv = root / f"{name}.csv"
        df.to_csv(csv, index=False)
        h = {"join": True, "dataset": "loans", **(bank_extra or {}).get(name, {})}
        tomls[name] = node(name, "bank", "platform",
                           ["[datasets.loans]", f"path = {_toml_value(str(csv))}",
                            'id_column = "id"', 'label_column = "y"', ""], h)
    return platform, tomls, keys
