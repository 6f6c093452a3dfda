"""Small helpers for user-facing text (reports, stderr lines, Markdown).

:func:`plural` puts a count and its noun together, so no report says "1 problems"::

    plural(1, "problem")              # "1 problem"
    plural(3, "problem")              # "3 problems"
    plural(0, "entry", "entries")     # "0 entries"
    plural(2, "window", verb=("was", "were"))   # "2 windows were"
"""

from __future__ import annotations


def plural(
    count: int,
    word: str,
    many: str | None = None,
    *,
    verb: tuple[str, str] | None = None,
    grouped: bool = False,
) -> str:
    """``count`` and ``word``, in the plural unless ``count`` is 1 (``many``, default
    ``word + "s"``), followed by ``verb``'s singular or plural form when given
    (``("is", "are")``). ``grouped`` writes the count with thousands separators (``1,234``)."""
    one = count == 1
    number = f"{count:,}" if grouped else str(count)
    text = f"{number} {word if one else (many or word + 's')}"
    if verb is not None:
        text += f" {verb[0] if one else verb[1]}"
    return text
