"""Render an HTML file in Debian's headless Chromium and read what the page reported."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest


def _dump_dom(page: Path, tmp_path: Path) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    out = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--dump-dom",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=True)
    return out.stdout


def page_state(page: Path, tmp_path: Path) -> dict:
    """What the report's own render check wrote on ``<body>`` once the browser laid the
    page out: ``{"series": total plotted series with a non-empty bounding box, "plots":
    {data-plot name: such series}, "sections": [section ids, in order]}``. Skips the
    calling test when Chromium is not installed (.ci/run installs it)."""
    dom = _dump_dom(page, tmp_path)
    got = {}
    for attr in ("rendered-series", "plots", "sections"):
        m = re.search(rf'data-{attr}="([^"]*)"', dom)
        assert m, "the report's script did not run in the browser"
        got[attr] = json.loads(html.unescape(m.group(1)))
    return {"series": got["rendered-series"], "plots": got["plots"],
            "sections": got["sections"]}


def rendered_series(page: Path, tmp_path: Path) -> int:
    """How many plot series the browser laid out (the report's own render check)."""
    return page_state(page, tmp_path)["series"]
