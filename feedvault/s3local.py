"""An S3 server on loopback for ``feedvault loadtest``, as a process of its own.

``python -m feedvault.s3local --bucket NAME`` starts moto's S3 server (``moto[server]``, from the
``demo``/``dev`` extras) on 127.0.0.1 on a free port, creates the bucket, and prints one line::

    {"event":"listening","url":"http://127.0.0.1:PORT","bucket":"NAME"}

It then serves until its stdin closes (the parent ended, or closed the pipe) or SIGTERM/SIGINT.
Running it as its own process keeps its memory and CPU apart from the engine's and the parent's.
Exit status 2 with one line on stderr when moto's server is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import signal
import sys
from types import FrameType

import orjson

INSTALL_HINT = "the local S3 server needs moto[server]: pip install 'feedvault[demo]'"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "loadtest",
    "AWS_SECRET_ACCESS_KEY": "loadtest",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}
"""Throwaway credentials for talking to the local server."""


def available() -> bool:
    """True when moto's server mode (moto + flask + werkzeug) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("moto", "flask", "werkzeug"))


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m feedvault.s3local")
    parser.add_argument("--bucket", required=True)
    args = parser.parse_args(argv)
    if not available():
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        boto3.client(
            "s3",
            endpoint_url=url,
            region_name=CREDENTIALS["AWS_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket=args.bucket)
        sys.stdout.write(
            orjson.dumps({"event": "listening", "url": url, "bucket": args.bucket}).decode() + "\n"
        )
        sys.stdout.flush()
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
