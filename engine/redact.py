"""Redaction of credentials from text that leaves the process (log lines, error messages).

:func:`redact` replaces, with ``[REDACTED]``:

- AWS access key ids (``AKIA``/``ASIA``/... followed by 16 upper-case letters or digits);
- the value after ``aws_secret_access_key``, ``aws_session_token``, ``aws_security_token``,
  ``SecretAccessKey``, ``SessionToken`` and ``AWSAccessKeyId`` (``=`` or ``:``, quoted or not);
- the values of ``X-Amz-Security-Token``, ``X-Amz-Signature`` and ``X-Amz-Credential``, as
  query parameters (a presigned URL, any case) and as headers (``X-Amz-Security-Token: ...``,
  ``'X-Amz-Security-Token': b'...'`` in a printed request, ``\\"...\\"`` inside a JSON string);
- the value of an ``Authorization`` header, as text (``Authorization: AWS4-HMAC-SHA256 ...``) or
  in a printed mapping (``'Authorization': '...'``), and any SigV4 ``Credential=`` or
  ``Signature=`` value met on its own;
- the user and password of a URL (``wss://user:password@host/`` -> ``wss://[REDACTED]@host/``);
- the exact values of the known secrets, whatever their shape: this process's
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_SECURITY_TOKEN`` and
  ``AWS_ACCESS_KEY_ID`` (read once, on first use, or set with :func:`set_known_secrets`), and
  those registered with :func:`add_known_secrets`, such as the credentials botocore resolved
  from a shared credentials file, the container or the instance metadata (:mod:`sinks.s3`).

Only secrets are redacted: an exact value is known only when it is at least
:data:`MIN_SECRET_LENGTH` (16) characters long, the length of the shortest AWS access key id
(secret keys have 40, session tokens hundreds). A shorter value (``testing``, ``loadtest``) is
no credential anyone relies on, and redacting it would mangle ordinary text such as bucket names.

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
MIN_SECRET_LENGTH: Final = 16
"""Shorter values are never registered as known secrets (see the module docstring)."""

_VALUE: Final = r"[^\s\"'\\,&;]+"
_ASSIGN: Final = r"""(?:\\?['"])?\s*[:=]\s*(?:b?\\?['"])?"""
"""Between a name and its value: an optional (JSON-escaped) closing quote, ``:`` or ``=``, an
optional opening quote (``b'`` for bytes)."""
_PATTERNS: Final = (
    re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}\b"),
    re.compile(
        r"(?i)(\b(?:aws_(?:secret_access_key|session_token|security_token)|SecretAccessKey"
        r"|SessionToken|AWSAccessKeyId)\b" + _ASSIGN + ")" + _VALUE
    ),
    re.compile(r"(?i)(\bX-Amz-(?:Security-Token|Signature|Credential)\b" + _ASSIGN + ")" + _VALUE),
    re.compile(r"(?i)(\bAuthorization\b" + _ASSIGN + r")[^\"'\\\r\n]+"),
    re.compile(r"(?i)(\b(?:Credential|Signature)=)" + _VALUE),
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/\s:@\"'\\]*:[^/\s@\"'\\]*(?=@)"),
)

_known: list[str] | None = None


def set_known_secrets(values: Iterable[str | None]) -> None:
    """Redact exactly these values (longest first), forgetting those known before; values
    shorter than :data:`MIN_SECRET_LENGTH` are ignored."""
    global _known
    _known = _ordered(values)


def add_known_secrets(values: Iterable[str | None]) -> None:
    """Redact these values too, besides those known already (the environment's, read now if
    not yet read); values shorter than :data:`MIN_SECRET_LENGTH` are ignored. Cheap when they
    are all known: call it for every credential botocore resolves."""
    global _known
    known = _current()
    new = _ordered(values)
    if any(value not in known for value in new):
        _known = _ordered([*known, *new])


def _ordered(values: Iterable[str | None]) -> list[str]:
    return sorted({v for v in values if v and len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


def _current() -> list[str]:
    global _known
    if _known is None:
        _known = _ordered(secrets_of(os.environ))
    return _known


def secrets_of(environ: Mapping[str, str]) -> list[str]:
    """The credential values of ``environ`` (:data:`SECRET_VARIABLES`) that are set."""
    return [environ[name] for name in SECRET_VARIABLES if environ.get(name)]


def redact(text: str) -> str:
    """``text`` with every credential it holds replaced by ``[REDACTED]``."""
    for secret in _current():
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(_replacement, text)
    return text


def _replacement(match: re.Match[str]) -> str:
    return (match.group(1) if match.re.groups else "") + REDACTED
