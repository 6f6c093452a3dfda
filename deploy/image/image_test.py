"""Container test of the feedvault image (``make image-test``).

Builds the image with podman and runs it the way ECS Fargate does: configured only by environment
variables, the workload chosen by the command (``feedvault stream``, ``feedvault batch JOB``),
stopped by a SIGTERM from the container runtime. On the host it starts moto's S3 server and the
project's fake exchange; the container reaches them over the host network.

Steps, each bounded by a timeout:

1. podman: installed with apt-get and configured (``runtime = "runc"``, ``nofile`` ulimits in
   /etc/containers/containers.conf, only when that file does not exist) where it is missing.
2. the base image: ``--base IMAGE`` (or ``BASE_IMAGE``), else the local stand-in for
   python:3.11-slim built by deploy/image/make-standin-base.sh (cached) -- for machines with no
   registry to pull from.
3. the build: the host's CA bundle (``PIP_CERT``, ``REQUESTS_CA_BUNDLE`` or the system bundle) is
   mounted into the build and passed as ``PIP_CERT``, as is the host pip's index URL, for hosts
   behind a TLS-intercepting proxy; neither ends up in the image.
4. the image: no moto, no pytest, a non-root user, no ENTRYPOINT or CMD of its own.
5. ``feedvault stream`` until it has stored trades, then ``podman stop`` (SIGTERM): exit 0 within
   ``STOP_GRACE_SECONDS``, Python was PID 1, the manifest is ``complete`` and
   ``feedvault verify`` on the host exits 0.
6. ``feedvault batch computation``, then ``feedvault batch ecommerce`` on sample orders (it
   writes Parquet, so pyarrow works in the image): exit 0, a complete manifest, ``feedvault
   verify`` exits 0.

Prints a PASS/FAIL line per check and a summary; exit 0 only when every check passed. Containers
and servers are removed on every path; the image is kept (``--rm-image`` removes it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
STANDIN_IMAGE = "localhost/python-standin:3.11-slim"
CONTAINERS_CONF = Path("/etc/containers/containers.conf")
CONTAINERS_CONF_TEXT = """\
# Written by feedvault's deploy/image/image_test.py: podman on a machine without a Docker daemon.
# runc (crun is not installed with podman here); ulimits a sandboxed root may set (podman's
# defaults, 1048576 each, are refused: "error setting rlimits for ready process").
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
"""
BUILD_CA_PATH = "/run/feedvault-build-ca.pem"
BUCKET = "feedvault-image-test"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}
STOP_GRACE_SECONDS = 20
# Explicit, whatever containers.conf says (see CONTAINERS_CONF_TEXT).
RUN_LIMITS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768")


class CheckFailed(Exception):
    """A check failed; the message says what was expected and what was seen."""


@dataclass
class Report:
    results: list[tuple[str, bool, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)

    def record(self, name: str, ok: bool, detail: str = "") -> None:
        self.results.append((name, ok, detail))
        say(f"{'PASS' if ok else 'FAIL'}  {name}" + (f": {detail}" if detail else ""))

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.record(name, ok, detail)
        if not ok:
            raise CheckFailed(name)

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        start = time.monotonic()
        say(f"--- {step}")
        try:
            yield
        finally:
            self.timings[step] = time.monotonic() - start

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(ok for _, ok, _ in self.results)


def say(text: str) -> None:
    print(f"[image-test] {text}", flush=True)


def run(
    command: Sequence[str],
    timeout: float,
    *,
    check: bool = True,
    capture: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a time limit; its output is captured (or streamed with capture=False)."""
    try:
        result = subprocess.run(
            list(command),
            timeout=timeout,
            text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.STDOUT if capture else None,
            stdin=subprocess.DEVNULL,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(
            f"{command[0]} {command[1] if len(command) > 1 else ''}: no end within {timeout:.0f} s"
        ) from exc
    if check and result.returncode != 0:
        tail = "\n".join((result.stdout or "").splitlines()[-20:])
        raise CheckFailed(f"{' '.join(command[:3])} exited {result.returncode}\n{tail}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(what: str, predicate: Any, timeout: float, interval: float = 0.5) -> Any:
    """Poll ``predicate`` until it returns something true; CheckFailed after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


# ---- podman and the base image ----


def ensure_podman(report: Report) -> None:
    if shutil.which("podman") is None:
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            raise CheckFailed("podman is missing and cannot be installed here (needs root, apt)")
        say("installing podman with apt-get (a few minutes)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update"], 600, env=env)
        run(["apt-get", "install", "-y", "podman", "runc", "debootstrap"], 1200, env=env)
    ours = CONTAINERS_CONF.exists() and CONTAINERS_CONF.read_text().startswith(
        CONTAINERS_CONF_TEXT.splitlines()[0]
    )
    current = CONTAINERS_CONF.read_text() if CONTAINERS_CONF.exists() else None
    if (ours or current is None) and current != CONTAINERS_CONF_TEXT and os.geteuid() == 0:
        CONTAINERS_CONF.parent.mkdir(parents=True, exist_ok=True)
        CONTAINERS_CONF.write_text(CONTAINERS_CONF_TEXT)
        say(f"wrote {CONTAINERS_CONF} (runtime runc, nofile and nproc ulimits)")
    version = run(["podman", "--version"], 60).stdout.strip()
    report.facts["podman"] = version
    say(version)


def ensure_base(base: str | None) -> str:
    if base:
        return base
    run(["bash", str(HERE / "make-standin-base.sh")], 1800, capture=False)
    return STANDIN_IMAGE


def host_ca_bundle() -> str | None:
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("REQUESTS_CA_BUNDLE"),
        os.environ.get("SSL_CERT_FILE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return str(Path(candidate).resolve())
    return None


def host_pip_setting(name: str) -> str | None:
    """The host pip's ``global.<name>`` (PIP_<NAME> or pip's config files), if it is a URL."""
    value = os.environ.get(f"PIP_{name.upper().replace('-', '_')}")
    if not value:
        result = run(
            [sys.executable, "-m", "pip", "config", "get", f"global.{name}"], 60, check=False
        )
        value = result.stdout.strip() if result.returncode == 0 else ""
    # Only network indexes: local file:// indexes and find-links do not exist inside the build.
    urls = [url for url in value.split() if url.startswith(("http://", "https://"))]
    return " ".join(urls) or None


def build_image(image: str, base: str, report: Report) -> None:
    command = ["podman", "build", "--pull=never", "--build-arg", f"BASE_IMAGE={base}"]
    ca = host_ca_bundle()
    if ca:
        command += [
            "--volume",
            f"{ca}:{BUILD_CA_PATH}:ro",
            "--build-arg",
            f"PIP_CERT={BUILD_CA_PATH}",
        ]
    for name, arg in (("index-url", "PIP_INDEX_URL"), ("extra-index-url", "PIP_EXTRA_INDEX_URL")):
        url = host_pip_setting(name)
        if url:
            command += ["--build-arg", f"{arg}={url}"]
    command += ["--tag", image, str(REPO)]
    say(" ".join(command))
    run(command, 2400, capture=False)
    size = int(run(["podman", "image", "inspect", "--format", "{{.Size}}", image], 60).stdout)
    report.facts["image size"] = f"{size / 1e6:.0f} MB ({size} bytes)"
    say(f"image {image}: {size / 1e6:.0f} MB")


def check_image(image: str, report: Report) -> None:
    inspect = json.loads(run(["podman", "image", "inspect", image], 60).stdout)[0]
    config = inspect.get("Config", {})
    report.check(
        "no ENTRYPOINT in the image", not config.get("Entrypoint"), str(config.get("Entrypoint"))
    )
    user = config.get("User", "")
    report.check(
        "image USER is set and not root",
        user not in ("", "0", "root") and not user.startswith(("0:", "root:")),
        f"User={user!r}",
    )
    uid = run(["podman", "run", "--rm", *RUN_LIMITS, image, "id", "-u"], 120).stdout.strip()
    report.check("container runs as non-root", uid not in ("", "0"), f"uid {uid}")
    for module in ("moto", "pytest"):
        result = run(
            ["podman", "run", "--rm", *RUN_LIMITS, image, "python", "-c", f"import {module}"],
            120,
            check=False,
        )
        report.check(
            f"image has no {module}", result.returncode != 0, f"import exit {result.returncode}"
        )
    result = run(
        ["podman", "run", "--rm", *RUN_LIMITS, image, "feedvault", "--help"], 120, check=False
    )
    report.check("feedvault runs in the image", result.returncode == 0)
    result = run(
        ["podman", "run", "--rm", *RUN_LIMITS, image, "feedvault", "stream"], 120, check=False
    )
    report.check(
        "unconfigured `feedvault stream` exits 2 (config from env only)",
        result.returncode == 2,
        (result.stdout or "").strip().splitlines()[-1] if result.stdout else "",
    )


# ---- servers on the host ----


class Servers:
    """moto's S3 server and the fake exchange on 127.0.0.1; stopped by close()."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.s3_port = free_port()
        self.ws_port = free_port()
        self.s3_url = f"http://127.0.0.1:{self.s3_port}"
        self.ledger = workdir / "ledger.jsonl"

    def _start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        out = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        out.close()
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        self._start(
            "moto",
            [str(BIN / "python"), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.s3_port)],
        )
        self._start(
            "fake-exchange",
            [
                str(BIN / "feedvault"),
                "fake-exchange",
                "--protocol",
                "binance",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ws_port),
                "--rate",
                "200",
                "--symbols",
                "BTCUSDT,ETHUSDT",
                "--ledger",
                str(self.ledger),
            ],
        )

        def s3_up() -> bool:
            try:
                with urllib.request.urlopen(f"{self.s3_url}/", timeout=2):
                    return True
            except OSError:
                return False

        wait_until("moto S3 server", s3_up, 60)
        wait_until(
            "fake exchange listening",
            lambda: '"listening"' in (self.workdir / "fake-exchange.log").read_text(),
            60,
        )
        for proc in self.procs:
            if proc.poll() is not None:
                raise CheckFailed(f"{proc.args[1]} exited {proc.returncode} at start")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def s3_client(endpoint: str) -> Any:
    import boto3  # the dev extra; imported here so --help works without it

    return boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_REGION"],
    }


def only_manifest(s3: Any, prefix: str) -> dict[str, Any]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}_manifests/")
    keys = [item["Key"] for item in listing.get("Contents", [])]
    if len(keys) != 1:
        raise CheckFailed(f"expected one manifest under {prefix}_manifests/, found {keys}")
    body = s3.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read()
    manifest: dict[str, Any] = json.loads(body)
    return manifest


def verify_on_host(servers: Servers, prefix: str, workdir: Path, name: str) -> int:
    env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL_S3": servers.s3_url}
    result = run(
        [str(BIN / "feedvault"), "verify", f"s3://{BUCKET}/{prefix}"], 180, check=False, env=env
    )
    (workdir / f"verify-{name}.txt").write_text(result.stdout or "")
    return result.returncode


# ---- the container runs ----


def container_env(servers: Servers, extra: dict[str, str]) -> list[str]:
    env = {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL_S3": servers.s3_url,
        "LOG_FORMAT": "json",
        "STOP_GRACE_SECONDS": str(STOP_GRACE_SECONDS),
        **extra,
    }
    args: list[str] = []
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    return args


def podman_run_args(name: str) -> list[str]:
    # Host networking: the servers listen on the host's 127.0.0.1. No proxy variables from the host.
    return ["podman", "run", *RUN_LIMITS, "--name", name, "--network", "host", "--http-proxy=false"]


def stored_objects(logs: str) -> int:
    objects = 0
    for line in logs.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == "stats":
                objects = max(objects, int(record.get("objects", 0)))
    return objects


def stream_run(image: str, servers: Servers, workdir: Path, report: Report, tag: str) -> None:
    name = f"feedvault-image-test-stream-{tag}"
    prefix = "streaming/image-test/"
    env = container_env(
        servers,
        {
            "S3_BUCKET": BUCKET,
            "S3_PREFIX": prefix,
            "MAX_RUNTIME_SECONDS": "3600",
            "STREAMS": "binance:BTCUSDT,binance:ETHUSDT",
            "BINANCE_WS_URL": f"ws://127.0.0.1:{servers.ws_port}",
            "WINDOW_SECONDS": "2",
            "STATS_INTERVAL_SECONDS": "1",
        },
    )
    run([*podman_run_args(name), "--detach", *env, image, "feedvault", "stream"], 120)

    def logs() -> str:
        return run(["podman", "logs", name], 60, check=False).stdout or ""

    started = time.monotonic()
    try:
        wait_until(
            "the streaming container stored trades", lambda: stored_objects(logs()) >= 2, 120
        )
    except CheckFailed:
        (workdir / "stream-container.log").write_text(logs())
        raise
    report.timings["stream: start to first objects stored"] = time.monotonic() - started
    cmdline = run(["podman", "exec", name, "cat", "/proc/1/cmdline"], 60).stdout
    pid1 = cmdline.replace("\0", " ").strip()
    report.check("python is PID 1 in the container", "python" in pid1 and "feedvault" in pid1, pid1)

    time.sleep(2)  # a few more windows
    stop_started = time.monotonic()
    # podman stop sends the image's STOPSIGNAL (SIGTERM), and SIGKILL only after -t seconds.
    run(["podman", "stop", "--time", "30", name], 90)
    stop_seconds = time.monotonic() - stop_started
    status = run(["podman", "wait", name], 60).stdout.strip()
    text = logs()
    (workdir / "stream-container.log").write_text(text)
    report.timings["stream: SIGTERM to exit"] = stop_seconds
    report.check("stream exit status 0 after SIGTERM", status == "0", f"exit {status}")
    report.check(
        f"stream stopped within STOP_GRACE_SECONDS ({STOP_GRACE_SECONDS} s)",
        stop_seconds < STOP_GRACE_SECONDS,
        f"{stop_seconds:.1f} s",
    )
    report.check(
        "stream logged the SIGTERM", '"event":"signal","signal":"SIGTERM"' in text.replace(" ", "")
    )
    manifest = only_manifest(s3_client(servers.s3_url), prefix)
    records = sum(int(obj.get("records", 0)) for obj in manifest.get("objects", []))
    report.check(
        "stream manifest complete, stop_reason signal",
        manifest.get("status") == "complete" and manifest.get("stop_reason") == "signal",
        f"status={manifest.get('status')} stop_reason={manifest.get('stop_reason')} "
        f"objects={len(manifest.get('objects', []))} records={records}",
    )
    report.check("stream stored trades", records > 0, f"{records} records")
    code = verify_on_host(servers, prefix, workdir, "stream")
    report.check(f"feedvault verify s3://{BUCKET}/{prefix} on the host", code == 0, f"exit {code}")


def batch_run(
    image: str,
    servers: Servers,
    workdir: Path,
    report: Report,
    tag: str,
    job: str,
    job_env: dict[str, str],
) -> list[str]:
    """``feedvault batch JOB`` in the container; the output keys of its (complete) manifest."""
    name = f"feedvault-image-test-{job}-{tag}"
    prefix = f"batch/image-test-{job}/"
    env = container_env(
        servers,
        {"OUTPUT_BUCKET": BUCKET, "OUTPUT_PREFIX": prefix, "MAX_RUNTIME_SECONDS": "300", **job_env},
    )
    started = time.monotonic()
    result = run([*podman_run_args(name), *env, image, "feedvault", "batch", job], 400, check=False)
    report.timings[f"batch {job} run"] = time.monotonic() - started
    (workdir / f"batch-{job}-container.log").write_text(result.stdout or "")
    run(["podman", "rm", "--ignore", name], 60, check=False)
    report.check(f"batch {job} exit status 0", result.returncode == 0, f"exit {result.returncode}")
    manifest = only_manifest(s3_client(servers.s3_url), prefix)
    outputs = [str(obj.get("key", "")).removeprefix(prefix) for obj in manifest.get("objects", [])]
    report.check(
        f"batch {job} manifest complete",
        manifest.get("status") == "complete",
        f"status={manifest.get('status')} outputs={outputs}",
    )
    code = verify_on_host(servers, prefix, workdir, f"batch-{job}")
    report.check(f"feedvault verify s3://{BUCKET}/{prefix} on the host", code == 0, f"exit {code}")
    return outputs


def batch_runs(image: str, servers: Servers, workdir: Path, report: Report, tag: str) -> None:
    computation = {"COMPUTATION_SEED": "7", "COMPUTATION_PATHS": "20000"}
    batch_run(image, servers, workdir, report, tag, "computation", computation)
    # ecommerce writes Parquet: pyarrow in the image works (the Dockerfile prunes parts of it).
    input_prefix = "input/orders/"
    env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL_S3": servers.s3_url}
    sample = [str(BIN / "feedvault"), "sample", "ecommerce", "--seed", "7"]
    run([*sample, "--out", f"s3://{BUCKET}/{input_prefix}"], 120, env=env)
    outputs = batch_run(
        image,
        servers,
        workdir,
        report,
        tag,
        "ecommerce",
        {"INPUT_BUCKET": BUCKET, "INPUT_PREFIX": input_prefix},
    )
    parquet = [key for key in outputs if key.endswith(".parquet")]
    report.check("batch ecommerce wrote Parquet in the image", bool(parquet), ", ".join(parquet))


def remove_containers(tag: str) -> None:
    for kind in ("stream", "computation", "ecommerce"):
        name = f"feedvault-image-test-{kind}-{tag}"
        with contextlib.suppress(CheckFailed):
            run(["podman", "rm", "--force", "--ignore", "--time", "5", name], 60, check=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--image", default="localhost/feedvault:image-test", help="tag to build")
    parser.add_argument(
        "--base",
        default=os.environ.get("BASE_IMAGE") or None,
        help="base image (default: the debootstrap stand-in for python:3.11-slim)",
    )
    parser.add_argument("--workdir", help="where logs go (default: a new directory under /tmp)")
    parser.add_argument("--rm-image", action="store_true", help="remove the image at the end")
    args = parser.parse_args(argv)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="feedvault-image-test-"))
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}"
    report = Report()
    servers: Servers | None = None
    started = time.monotonic()
    say(f"logs in {workdir}")
    try:
        with report.timed("podman"):
            ensure_podman(report)
        with report.timed("base image"):
            base = ensure_base(args.base)
            report.facts["base image"] = base
        with report.timed("image build"):
            build_image(args.image, base, report)
        with report.timed("image checks"):
            check_image(args.image, report)
        with report.timed("servers"):
            servers = Servers(workdir)
            servers.start()
            s3_client(servers.s3_url).create_bucket(Bucket=BUCKET)
        with report.timed("stream in the container"):
            stream_run(args.image, servers, workdir, report, tag)
        with report.timed("batch in the container"):
            batch_runs(args.image, servers, workdir, report, tag)
    except CheckFailed as exc:
        if not report.results or report.results[-1][1] or str(exc) != report.results[-1][0]:
            report.record("image test", False, str(exc))
    except KeyboardInterrupt:
        report.record("image test", False, "interrupted")
    finally:
        with report.timed("cleanup"):
            if shutil.which("podman"):
                remove_containers(tag)
                if args.rm_image:
                    run(["podman", "rmi", "--force", args.image], 120, check=False)
            if servers is not None:
                servers.close()

    total = time.monotonic() - started
    passed = sum(ok for _, ok, _ in report.results)
    failed = len(report.results) - passed
    print()
    say("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items()))
    for key, value in report.facts.items():
        say(f"{key}: {value}")
    say(f"logs: {workdir}")
    verdict = "PASS" if report.passed else "FAIL"
    say(f"{verdict}: {passed} passed, {failed} failed in {total:.0f} s")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
