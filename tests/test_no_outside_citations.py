"""Code cites the repository's docs pages, never a file a clone does not have (docs: index.md).

The design notes the project started from live outside the repository; a citation of them
(a section sign after their name, their file name, a relative path out of the checkout) points a
reader at nothing. Code cites ``docs: page.md#anchor`` instead, and the pages are built
strictly by ``make docs``.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "connectors", "sinks", "batch", "feedvault")
ALSO = ("benchmarks", "deploy", "tests", "Makefile", "Dockerfile")
SPEC = "SPEC"
FORBIDDEN = (SPEC + " §", SPEC + ".md", "../" + "shared", "PROTOCOLS" + ".md")
"""Spelled in pieces so this file does not cite what it forbids."""
CITATION = re.compile(r"docs(?::\s*|/)([a-z-]+\.md)(?:#([a-z0-9-]+))?")
"""``docs: page.md#anchor`` or ``docs/page.md#anchor``."""
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)
SUFFIXES = {".py", ".yaml", ".yml", ".sh", ".toml", ".cfg", ".md", ".txt", ".json", ""}


def _files(top: str) -> list[Path]:
    path = ROOT / top
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in SUFFIXES
    )


@pytest.mark.parametrize("top", PACKAGES + ALSO)
def test_no_citation_of_files_outside_the_repository(top: str) -> None:
    found = []
    for path in _files(top):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            found += [
                f"{path.relative_to(ROOT)}:{number}: {word}" for word in FORBIDDEN if word in line
            ]
    assert found == [], "cite docs pages instead:\n" + "\n".join(found)


def test_the_check_reads_the_packages() -> None:
    assert len(_files("connectors")) > 10
    assert (ROOT / "Makefile") in _files("Makefile")


def _slug(heading: str) -> str:
    """The anchor mkdocs' ``toc`` extension gives a heading (its default slugify, on the text
    the heading renders: code spans lose their backticks)."""
    text = unicodedata.normalize("NFKD", heading.replace("`", "")).encode("ascii", "ignore")
    value = re.sub(r"[^\w\s-]", "", text.decode("ascii")).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


def _anchors() -> dict[str, set[str]]:
    pages: dict[str, set[str]] = {}
    for page in (ROOT / "docs").glob("*.md"):
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
        pages[page.name] = {_slug(h) for h in HEADING.findall(text)}
    return pages


def test_every_docs_citation_names_a_page_and_anchor_that_exist() -> None:
    pages = _anchors()
    broken = []
    for top in PACKAGES + ALSO + ("pyproject.toml",):
        for path in _files(top):
            if path.name == Path(__file__).name:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            for number, line in enumerate(text.splitlines(), 1):
                for page, anchor in CITATION.findall(line):
                    if page not in pages or (anchor and anchor not in pages[page]):
                        broken.append(f"{path.relative_to(ROOT)}:{number}: {page}#{anchor}")
    assert broken == []


def test_slugs_are_those_of_the_site() -> None:
    assert _slug("Verify and `feedvault runs`") == "verify-and-feedvault-runs"
    assert _slug("Metrics (CloudWatch EMF)") == "metrics-cloudwatch-emf"
    assert "spill-and-recovery" in _anchors()["operations.md"]
