"""The layers are a contract that bites: import-linter passes on the tree and fails when a
lower layer imports a higher one, or connectors and sinks import each other (docs:
architecture.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "connectors", "sinks", "batch", "feedvault")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_tree_keeps_its_layers(tmp_path: Path) -> None:
    result = _lint(_copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "forbidden", "contract"),
    [
        ("engine/records.py", "import feedvault.cli", "feedvault > batch"),
        ("engine/clock.py", "import sinks.writer", "feedvault > batch"),
        ("connectors/wire.py", "import sinks.keys", "feedvault > batch"),
        ("sinks/keys.py", "import connectors.registry", "feedvault > batch"),
        ("sinks/keys.py", "import batch.job", "feedvault > batch"),
        ("batch/csvutil.py", "import feedvault.config", "feedvault > batch"),
        ("batch/csvutil.py", "import connectors.session", "batch uses only pure connectors"),
    ],
)
def test_a_forbidden_import_breaks_the_contract(
    tmp_path: Path, module: str, forbidden: str, contract: str
) -> None:
    root = _copy_tree(tmp_path)
    path = root / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{forbidden}  # noqa\n", "utf-8")
    result = _lint(root)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if "BROKEN" in line]
    assert any(contract in line for line in broken), result.stdout
