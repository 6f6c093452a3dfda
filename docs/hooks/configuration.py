"""mkdocs hook: generate the configuration reference in ``configuration.md``.

The page holds the marker ``<!-- settings-reference -->``; this hook replaces it with the
tables :func:`feedvault.settings_reference.render_markdown` renders from the configuration's
own definitions, so the page cannot drift from the code. A page that lost its marker fails the
build (``make docs`` builds with ``--strict``).
"""

from __future__ import annotations

from typing import Any

from mkdocs.exceptions import PluginError

MARKER = "<!-- settings-reference -->"
PAGE = "configuration.md"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE} has lost its marker {MARKER}")
    from feedvault.settings_reference import render_markdown

    return markdown.replace(MARKER, render_markdown())
