"""Render an HTML file in Debian's headless Chromium and read what the page reported."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest


def rendered_series(page: Path, tmp_path: Path) -> int:
    """How many plot series the browser laid out (the report's own render check).
    Skips the calling test when Chromium is not installed (.ci/run installs it)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    out = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--dump-dom",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=True)
    m = re.search(r'data-rendered-series="(\d+)"', out.stdout)
    assert m, "the report's script did not run in the browser"
    return int(m.group(1))
