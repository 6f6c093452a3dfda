"""The configuration reference (docs: configuration.md) is complete and true.

``feedvault.settings_reference`` is rendered into docs/configuration.md by the site's build hook.
These tests prove it cannot drift from the code:

* every environment variable the packages read (found by scanning their source for the reads:
  ``Env.raw/required/integer/number/flag/choice``, ``environ.get``, the helpers that take a
  variable name, and every variable a ``ConfigError`` names) has an entry, and every entry is
  read somewhere;
* every default shown is the value a loader yields when the variable is unset;
* every numeric range shown is ``engine.settings.RANGES``' own description;
* the hook replaces the page's marker with the rendered tables.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from batch.compact_job import CompactParameters
from batch.computation import RiskParameters
from batch.config import load_batch_config
from batch.ecommerce_job import EcommerceJob
from batch.sample_cli import prepare_sample
from connectors.books.registry import FEEDS, get_book_feed
from connectors.registry import PROTOCOLS
from engine.settings import RANGES, Env
from feedvault.config import load_stream_config
from feedvault.settings_reference import (
    REST_SNAPSHOT_EXCHANGES,
    REST_URL_FAMILY,
    SETTINGS,
    WS_URL_FAMILY,
    by_name,
    render_markdown,
    render_value,
)
from sinks.keys import DEFAULT_KEY_TEMPLATE

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "connectors", "sinks", "batch", "feedvault")
NAME = r'"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)"'
READS = (
    re.compile(r"\.(?:raw|required|integer|number|flag|choice)\(\s*" + NAME),
    re.compile(r"\benviron\.get\(\s*" + NAME),
    re.compile(r"\benviron\[\s*" + NAME + r"\s*\](?!\s*=[^=])"),
    re.compile(r"\b_\w+\(\s*(?:env|environ),\s*" + NAME),
    re.compile(r"\bs3_destination\(\s*\w+,\s*" + NAME + r",\s*" + NAME),
    re.compile(r"\bConfigError\(\s*" + NAME),
)
"""The ways the packages read a variable (or name one in a configuration error)."""
WS_URL_READ = re.compile(r'f"\{exchange\.upper\(\)\}_WS_URL"')
REST_URL_READ = re.compile(r'f"\{exchange\.upper\(\)\}_REST_URL"')

NOT_SETTINGS = {
    "PYTHONPATH": "the load test extends its children's module path; not a feedvault setting",
    "FILE": "replay's positional argument, named in its configuration error",
    "JOB": "batch's and sample's positional argument, named in their configuration errors",
    "COMPRESSION_LEVEL": "make_encoder's level argument (no variable sets it), named in its error",
}


def _source_reads() -> dict[str, set[str]]:
    """Variable name -> the files that read it."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            for pattern in READS:
                for match in pattern.finditer(text):
                    for name in match.groups():
                        found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_variable_read_is_in_the_reference() -> None:
    reference = by_name()
    missing = {
        name: sorted(files)
        for name, files in _source_reads().items()
        if name not in reference and name not in NOT_SETTINGS
    }
    assert not missing, f"variables read but not in feedvault/settings_reference.py: {missing}"


def test_every_reference_entry_is_read_somewhere() -> None:
    reads = _source_reads()
    families = (WS_URL_FAMILY, REST_URL_FAMILY)
    ours = [s.name for s in SETTINGS if s.reader == "feedvault" and s.name not in families]
    assert [name for name in ours if name not in reads] == []
    assert all(s.reader in ("feedvault", "aws-sdk") for s in SETTINGS)
    assert all(s.name.startswith("AWS_") for s in SETTINGS if s.reader == "aws-sdk")


def test_the_ws_url_family_is_read_and_lists_every_exchange() -> None:
    config = (ROOT / "feedvault" / "config.py").read_text(encoding="utf-8")
    assert WS_URL_READ.search(config), "the <EXCHANGE>_WS_URL read moved: update the scan"
    family = by_name()[WS_URL_FAMILY]
    for exchange in PROTOCOLS:
        assert f"`{exchange.upper()}_WS_URL`" in family.meaning


def test_the_rest_url_family_is_read_and_lists_every_rest_snapshot_exchange() -> None:
    config = (ROOT / "feedvault" / "config.py").read_text(encoding="utf-8")
    assert REST_URL_READ.search(config), "the <EXCHANGE>_REST_URL read moved: update the scan"
    family = by_name()[REST_URL_FAMILY]
    rest_feeds = [name for name in FEEDS if get_book_feed(name).rest_url is not None]
    assert sorted(rest_feeds) == sorted(REST_SNAPSHOT_EXCHANGES)
    for exchange in REST_SNAPSHOT_EXCHANGES:
        assert f"`{exchange.upper()}_REST_URL`" in family.meaning


def test_the_scan_finds_the_reads_it_is_meant_to_find() -> None:
    """The scan would miss a moved read silently; prove it sees each way of reading."""
    reads = _source_reads()
    for name in ("WINDOW_SECONDS", "STREAMS", "CAPTURE", "OVERFLOW", "S3_BUCKET", "OUTPUT_PREFIX"):
        assert name in reads
    for name in ("S3_SSE", "COMPUTATION_MU", "COMPACT_FROM", "INPUT_BUCKET"):
        assert name in reads  # read through a helper taking the variable's name
    assert "NOT_A_VARIABLE" not in reads


def test_names_are_unique_and_every_ranged_variable_is_listed() -> None:
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    variables = {name for name in RANGES if not name.startswith("--")}
    assert variables <= set(names)


@pytest.mark.parametrize("name", sorted(n for n in RANGES if not n.startswith("--")))
def test_numeric_ranges_are_the_engines_own(name: str) -> None:
    assert RANGES[name].describe() in by_name()[name].accepted


# -- defaults: what a loader yields with the variable unset ------------------------------------

STREAM_ENV = {
    "S3_BUCKET": "bucket",
    "S3_PREFIX": "p/",
    "MAX_RUNTIME_SECONDS": "1",
    "STREAMS": "binance:BTCUSDT",
}


def _stream_defaults() -> dict[str, Any]:
    c = load_stream_config(STREAM_ENV)
    return {
        "WINDOW_SECONDS": c.sink.window_seconds,
        "WINDOW_MAX_BYTES": c.sink.window_max_bytes,
        "WINDOW_MAX_RECORDS": c.sink.window_max_records,
        "FORMAT": c.sink.format,
        "UPLOAD_CONCURRENCY": c.sink.upload_concurrency,
        "UPLOAD_RETRY_SECONDS": c.sink.upload_retry_seconds,
        "S3_MULTIPART_THRESHOLD": c.sink.multipart_threshold,
        "SPILL_DIR": c.runtime.spill_dir,
        "QUEUE_MAXSIZE": c.queue_maxsize,
        "OVERFLOW": c.overflow,
        "STALE_SECONDS": c.stale_seconds,
        "BINANCE_STREAM": c.binance_stream,
        "WS_TRANSPORT": c.ws_transport,
        "CAPTURE": c.capture,
        "CHANNELS": c.channels,
        "STOP_GRACE_SECONDS": c.runtime.stop_grace_seconds,
        "STATS_INTERVAL_SECONDS": c.runtime.stats_interval_seconds,
        "METRICS": c.runtime.metrics,
        "LOG_LEVEL": c.runtime.log_level,
    }


def _job_defaults(tmp_path: Path) -> dict[str, Any]:
    risk = RiskParameters.from_env(Env({}))
    _, _, seed = prepare_sample("ecommerce", {}, tmp_path.as_uri() + "/", None)
    compact = CompactParameters.from_env(Env({"COMPACT_FROM": "2026-01-05"}))
    return {
        "BOOK_SNAPSHOT_LEVELS": compact.snapshot_levels,
        "BOOK_SNAPSHOT_INTERVAL": compact.snapshot_interval,
        "COMPUTATION_SEED": risk.seed,
        "COMPUTATION_PATHS": risk.paths,
        "COMPUTATION_S0": risk.s0,
        "COMPUTATION_MU": risk.mu,
        "COMPUTATION_SIGMA": risk.sigma,
        "COMPUTATION_NOTIONAL": risk.notional,
        "COMPUTATION_HORIZONS": risk.horizons,
        "COMPUTATION_CONFIDENCE": risk.confidence,
        "SAMPLE_SEED": seed,
        "NO_NEW_INPUT": EcommerceJob.from_env(Env({})).no_new_input,
    }


def test_every_default_is_the_loaders_value(tmp_path: Path) -> None:
    actual = {**_stream_defaults(), **_job_defaults(tmp_path)}
    with_default = {s.name: s.default for s in SETTINGS if s.default is not None}
    assert set(with_default) == set(actual), "a default the test does not check, or lost"
    for name, default in with_default.items():
        assert default == actual[name], name
        assert type(default) is type(actual[name]), name


def test_batch_runtime_defaults_match_the_streams() -> None:
    """The lifecycle settings are one read (engine.settings.runtime_settings) for every
    command: a batch run's defaults are the stream's, which the reference shows once."""
    batch = load_batch_config(
        "computation", {"OUTPUT_BUCKET": "bucket", "OUTPUT_PREFIX": "p/"}, needs_input=False
    )
    stream = load_stream_config(STREAM_ENV)
    assert batch.runtime == stream.runtime


def test_defaults_without_a_value_say_what_happens() -> None:
    for setting in SETTINGS:
        assert setting.shown_default, f"{setting.name} shows no default"
    assert DEFAULT_KEY_TEMPLATE in by_name()["KEY_TEMPLATE"].shown_default
    log_format = by_name()["LOG_FORMAT"].shown_default
    assert load_stream_config(STREAM_ENV, is_tty=False).runtime.log_format in log_format
    assert load_stream_config(STREAM_ENV, is_tty=True).runtime.log_format in log_format


def test_the_rendered_tables_show_each_default_and_range() -> None:
    page = render_markdown()
    for setting in SETTINGS:
        row = next(line for line in page.splitlines() if line.startswith(f"| `{setting.name}` |"))
        if setting.default is not None:
            assert f"`{render_value(setting.default, setting.unit)}`" in row
        if setting.name in RANGES:
            assert RANGES[setting.name].describe() in row
    assert render_value(64 * 1024 * 1024, "bytes") == "64 MiB (67108864)"
    assert render_value(20.0, "s") == "20 s"
    assert render_value(200_000) == "200,000"


def _hook() -> Any:
    spec = importlib.util.spec_from_file_location("hook", ROOT / "docs/hooks/configuration.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hook_fills_the_configuration_page() -> None:
    hook = _hook()
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert hook.MARKER in text
    page = SimpleNamespace(file=SimpleNamespace(src_uri="configuration.md"))
    rendered = hook.on_page_markdown(text, page, None, None)
    assert hook.MARKER not in rendered
    assert render_markdown() in rendered
    other = SimpleNamespace(file=SimpleNamespace(src_uri="index.md"))
    assert hook.on_page_markdown(hook.MARKER, other, None, None) == hook.MARKER


def test_the_hook_refuses_a_page_without_its_marker() -> None:
    from mkdocs.exceptions import PluginError

    page = SimpleNamespace(file=SimpleNamespace(src_uri="configuration.md"))
    with pytest.raises(PluginError):
        _hook().on_page_markdown("# Configuration\n", page, None, None)
