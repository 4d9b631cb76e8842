"""The import contracts in pyproject.toml's [tool.importlinter] hold (the domain imports neither
Textual nor mitmproxy, formats do not import the recorder, commands and the UI sit on top).

Runs `lint-imports` from this interpreter's environment, so the suite (and CI, which runs it)
enforces them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    config = ROOT / "pyproject.toml"
    contracts = tomllib.loads(config.read_text())["tool"]["importlinter"]["contracts"]
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Every contract in the file was checked, and none was broken.
    assert f"Contracts: {len(contracts)} kept, 0 broken." in output, output
