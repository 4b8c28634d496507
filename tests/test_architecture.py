"""The import contracts of pyproject.toml ([tool.importlinter]): layers, and no import cycles."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")

pytestmark = pytest.mark.skipif(LINT is None, reason="import-linter is not installed (pip install -e '.[test]')")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LINT, "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root,
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "", "PYTHONPATH": str(root), "HOME": str(root)})


def test_import_contracts_are_kept():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    """The contract can fail: a component that imports the trainer is reported."""
    for name in ("metaprompt", "episodes"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    soft = tmp_path / "metaprompt" / "prompts" / "soft.py"
    soft.write_text(soft.read_text() + "\nimport metaprompt.run.train  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "metaprompt.prompts.soft -> metaprompt.run.train" in result.stdout
