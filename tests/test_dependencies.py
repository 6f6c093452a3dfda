"""Dependencies where they are used (pyproject.toml): ``pip install feedvault`` streams,
replays and verifies; the batch jobs, the load test's chart and the local S3 server are extras,
and a command that needs a missing one says which to install, in one line.

A missing library is made unimportable the way Python itself allows: ``None`` in
``sys.modules`` makes ``import`` raise ImportError, in a real ``feedvault`` process; nothing of
feedvault is replaced.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from feedvault.loadtest_chart import INSTALL_HINT as CHART_HINT
from tests.harness import base_env

EXTRAS_LIBRARIES = ("pyarrow", "numpy", "matplotlib", "moto", "tqdm")


def feedvault_without(
    modules: str | tuple[str, ...], *argv: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """``feedvault ARGV`` in a process where ``modules`` cannot be imported."""
    blocked = (modules,) if isinstance(modules, str) else modules
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({blocked!r})); "
        "from feedvault.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        env=base_env(**env),
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_the_stream_replay_verify_and_fake_exchange_paths_import_no_extra() -> None:
    code = (
        "import feedvault.cli, feedvault.runner, feedvault.replay, connectors.fake.server, "
        "sinks.verify; import sys; "
        f"print(sorted(m for m in {EXTRAS_LIBRARIES!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert ast.literal_eval(done.stdout.strip()) == []


def test_the_demo_streams_and_verifies_without_the_batch_and_chart_extras(tmp_path: Path) -> None:
    """``feedvault demo`` (fake exchange, local S3, stream, verify, in one process) runs whole
    with none of the batch and chart extras' libraries importable."""
    done = feedvault_without(
        ("pyarrow", "numpy", "matplotlib", "tqdm"),
        "demo",
        "--seconds",
        "3",
        "--output",
        str(tmp_path / "demo"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert any((tmp_path / "demo").rglob("*.ndjson.gz"))


@pytest.mark.parametrize(
    ("module", "user"), [("matplotlib", "the load test's chart"), ("tqdm", "its progress bar")]
)
def test_a_load_test_without_the_chart_extra_names_it(
    tmp_path: Path, module: str, user: str
) -> None:
    report = tmp_path / "report"
    done = feedvault_without(module, "loadtest", "--duration", "1", "--report", str(report))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        f"feedvault loadtest: configuration error: {module}: is not installed; "
        f"{user} needs it: {CHART_HINT}"
    ]
    assert CHART_HINT == "pip install 'feedvault[chart]'"
    assert not report.exists(), "nothing started, nothing written"


def test_a_batch_job_without_pyarrow_names_the_batch_extra(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = feedvault_without(
        "pyarrow",
        "batch",
        "compact",
        "--out",
        f"file://{out}/",
        INPUT_BUCKET="feedvault-in",
        INPUT_PREFIX="streaming/",
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        "feedvault batch: configuration error: pyarrow: is not installed; batch jobs need it: "
        "pip install 'feedvault[batch]'"
    ]
    assert not out.exists(), "nothing written"
