"""The layers of ARCHITECTURE.md hold: import-linter's contracts in pyproject.toml (front ends
above the service, above jobs, above the engine, above runtime and models, above the
foundation; the CLI reaches the HTTP server and the UI only through ``dreamloom.serving``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "broken" in result.stdout and "0 broken" in result.stdout
