"""Redaction of credentials from text that leaves the process (log lines, error messages).

:func:`redact` replaces, with ``[REDACTED]``:

- AWS access key ids (``AKIA``/``ASIA``/... followed by 16 upper-case letters or digits);
- the value after ``aws_secret_access_key``, ``aws_session_token``, ``aws_security_token``
  (``=`` or ``:``, quoted or not);
- the values of the SigV4 query parameters ``X-Amz-Security-Token``, ``X-Amz-Signature`` and
  ``X-Amz-Credential`` (a presigned URL in an error message);
- the value of an ``Authorization`` header, as text (``Authorization: AWS4-HMAC-SHA256 ...``) or
  in a printed mapping (``'Authorization': '...'``);
- the user and password of a URL (``wss://user:password@host/`` -> ``wss://[REDACTED]@host/``);
- the exact values of this process's ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
  ``AWS_SECURITY_TOKEN`` and ``AWS_ACCESS_KEY_ID`` (read once, on first use, or set with
  :func:`set_known_secrets`), whatever their shape.

A replaced value stops before a quote, backslash, comma, ``&`` or white space, so a redacted JSON
line stays valid JSON. The patterns run on whole log lines (a few per second), never per trade.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Final

REDACTED: Final = "[REDACTED]"
SECRET_VARIABLES: Final = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ACCESS_KEY_ID",
)
_MIN_SECRET_LENGTH: Final = 8
"""Shorter values (``testing``, ``x``) would redact ordinary words; they are no secrets."""

_VALUE: Final = r"[^\s\"'\\,&;]+"
_PATTERNS: Final = (
    re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}\b"),
    re.compile(
        r"(?i)(\baws_(?:secret_access_key|session_token|security_token)\b['\"]?\s*[=:]\s*['\"]?)"
        + _VALUE
    ),
    re.compile(r"(?i)(\bX-Amz-(?:Security-Token|Signature|Credential)=)" + _VALUE),
    re.compile(r"(?i)(\bAuthorization['\"]?\s*[:=]\s*['\"]?)[^\"'\\\r\n]+"),
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/\s:@\"'\\]*:[^/\s@\"'\\]*(?=@)"),
)

_known: list[str] | None = None


def set_known_secrets(values: Iterable[str | None]) -> None:
    """Redact these exact values too (longest first); values shorter than 8 are ignored."""
    global _known
    _known = sorted(
        {v for v in values if v and len(v) >= _MIN_SECRET_LENGTH}, key=len, reverse=True
    )


def secrets_of(environ: Mapping[str, str]) -> list[str]:
    """The credential values of ``environ`` (:data:`SECRET_VARIABLES`) that are set."""
    return [environ[name] for name in SECRET_VARIABLES if environ.get(name)]


def redact(text: str) -> str:
    """``text`` with every credential it holds replaced by ``[REDACTED]``."""
    global _known
    if _known is None:
        set_known_secrets(secrets_of(os.environ))
        assert _known is not None
    for secret in _known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(_replacement, text)
    return text


def _replacement(match: re.Match[str]) -> str:
    return (match.group(1) if match.re.groups else "") + REDACTED
