"""The tier rule of tests/conftest.py: which names a test reaches, and that the markers are
registered (``--strict-markers`` refuses any other)."""

from __future__ import annotations

import subprocess
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import E2E_NAMES, INTEGRATION_NAMES, TIERS, reached_names
from tests.harness import REPO

# By hand: these tests name a spawning helper (to test the rule) without ever calling it.
pytestmark = pytest.mark.unit


def _spawns() -> None:
    subprocess.run(["true"], check=False)


def _calls_a_spawner() -> None:
    _spawns()


@contextmanager
def _decorated() -> Iterator[None]:
    _calls_a_spawner()
    yield


class _Server:
    def start(self) -> None:
        FakeExchange = None  # a local name is no reference to the fake exchange
        del FakeExchange


def _test_reaching_a_decorated_helper() -> None:
    with _decorated():
        pass


@given(st.integers())
def _test_wrapped_by_hypothesis(n: int) -> None:
    _calls_a_spawner()


def _test_pure() -> None:
    assert sorted([2, 1]) == [1, 2]


def test_a_process_started_by_a_helper_of_a_helper_is_seen() -> None:
    assert "subprocess" in reached_names(_calls_a_spawner)
    assert reached_names(_test_reaching_a_decorated_helper) & E2E_NAMES
    assert reached_names(_test_wrapped_by_hypothesis) & E2E_NAMES


def test_a_pure_test_reaches_no_process_and_no_server() -> None:
    names = reached_names(_test_pure)
    assert not names & E2E_NAMES and not names & INTEGRATION_NAMES
    assert not reached_names(_Server) & INTEGRATION_NAMES  # locals are not names it refers to


def test_the_tiers_are_registered_markers_and_strict() -> None:
    with open(REPO / "pyproject.toml", "rb") as fh:
        options = tomllib.load(fh)["tool"]["pytest"]["ini_options"]
    assert [line.split(":")[0] for line in options["markers"]] == list(TIERS)
    assert "--strict-markers" in options["addopts"]
