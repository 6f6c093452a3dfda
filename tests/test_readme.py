"""The README is the front door (docs: index.md): short, and its links lead into docs/.

The reference text lives in docs/ (built strictly by ``make docs``, which checks every link and
anchor between the pages); this test covers what the site build does not see: the README.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_LINES = 200
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")


def test_readme_has_at_most_200_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; move text into docs/"


def test_readme_links_resolve() -> None:
    targets = LINK.findall(README.read_text(encoding="utf-8"))
    local = [t for t in targets if "://" not in t]
    assert local, "the README links into docs/"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert missing == []


def test_readme_links_every_docs_page() -> None:
    text = README.read_text(encoding="utf-8")
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert [p for p in pages if p != "index.md" and f"docs/{p}" not in text] == []
