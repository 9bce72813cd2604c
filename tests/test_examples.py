"""The README's quick start keeps working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs_and_checks_its_promises():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "operator: query (2, 64, 14, 14) -> (2, 64, 14, 14)" in result.stdout
    assert "last frame unchanged: True" in result.stdout
    assert "offset conv receives gradient: True" in result.stdout
