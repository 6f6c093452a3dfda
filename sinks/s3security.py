"""S3 security settings shared by every S3 request feedvault makes (issue 7).

==============================  ===============================================================
``S3_SSE``                      ``AES256`` (SSE-S3) or ``aws:kms`` (SSE-KMS); unset: the
                                bucket's default encryption applies
``S3_SSE_KMS_KEY_ID``           the KMS key (id, ARN or alias) for ``aws:kms``; only with
                                ``S3_SSE=aws:kms`` (unset: S3's ``aws/s3`` managed key)
``S3_EXPECTED_BUCKET_OWNER``    the 12-digit account id that must own every bucket touched;
                                S3 refuses a request to a bucket of another account (403)
==============================  ===============================================================

:class:`S3Security` is the one place that turns them into request parameters:
:meth:`S3Security.encryption_args` go on the requests that create an object (``PutObject``,
``CreateMultipartUpload``; S3 rejects them on ``UploadPart`` and
``CompleteMultipartUpload``, which inherit the upload's encryption), and
:meth:`S3Security.owner_args` on every request (head, get, list, put, parts, complete, abort,
delete). ``sinks.s3.S3Writer.open`` reads them from the process environment unless given
explicitly, so every writer (stream, batch output and input, verify, replay input, loadtest)
applies them; the stream and batch configuration loaders validate the same variables up front
(exit 2 naming the variable). None of these values is a secret; they are recorded in the
manifest's configuration.

This module is light (no AWS SDK import): configuration checks import it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from engine.errors import ConfigError

SSE_ALGORITHMS: Final = ("AES256", "aws:kms")
_OWNER: Final = re.compile(r"[0-9]{12}")
_KMS_KEY: Final = re.compile(r"[A-Za-z0-9:/_+=,.@-]{1,2048}")


@dataclass(frozen=True, slots=True)
class S3Security:
    """Server-side encryption and the expected bucket owner; the default sets neither."""

    sse: str | None = None
    kms_key_id: str | None = None
    expected_bucket_owner: str | None = None

    def encryption_args(self) -> dict[str, str]:
        """Parameters for ``PutObject`` and ``CreateMultipartUpload`` (empty when unset)."""
        args: dict[str, str] = {}
        if self.sse is not None:
            args["ServerSideEncryption"] = self.sse
        if self.kms_key_id is not None:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args

    def owner_args(self) -> dict[str, str]:
        """``ExpectedBucketOwner`` for every request (empty when unset)."""
        if self.expected_bucket_owner is None:
            return {}
        return {"ExpectedBucketOwner": self.expected_bucket_owner}

    def public_dict(self) -> dict[str, str | None]:
        """For the manifest's configuration (no secrets here)."""
        return {
            "s3_sse": self.sse,
            "s3_sse_kms_key_id": self.kms_key_id,
            "s3_expected_bucket_owner": self.expected_bucket_owner,
        }


def _value(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    if value is None:
        return None
    return value.strip() or None


def s3_security(environ: Mapping[str, str]) -> S3Security:
    """Read and check ``S3_SSE``, ``S3_SSE_KMS_KEY_ID`` and ``S3_EXPECTED_BUCKET_OWNER``.

    Raises :class:`ConfigError` naming the variable: an algorithm other than ``AES256`` or
    ``aws:kms``; a KMS key without ``S3_SSE=aws:kms``, or with characters no key id, ARN or
    alias has; a bucket owner that is not a 12-digit account id.
    """
    sse = _value(environ, "S3_SSE")
    if sse is not None and sse not in SSE_ALGORITHMS:
        raise ConfigError("S3_SSE", f"must be one of {', '.join(SSE_ALGORITHMS)}; got {sse!r}")
    key = _value(environ, "S3_SSE_KMS_KEY_ID")
    if key is not None:
        if sse != "aws:kms":
            raise ConfigError("S3_SSE_KMS_KEY_ID", "is set but S3_SSE is not aws:kms")
        if not _KMS_KEY.fullmatch(key):
            raise ConfigError(
                "S3_SSE_KMS_KEY_ID", "must be a KMS key id, key ARN, alias name or alias ARN"
            )
    owner = _value(environ, "S3_EXPECTED_BUCKET_OWNER")
    if owner is not None and not _OWNER.fullmatch(owner):
        raise ConfigError(
            "S3_EXPECTED_BUCKET_OWNER", f"must be a 12-digit AWS account id, got {owner!r}"
        )
    return S3Security(sse, key, owner)
