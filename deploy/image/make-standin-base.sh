#!/usr/bin/env bash
# Build a stand-in for python:3.11-slim with debootstrap and import it into podman.
#
# For machines where no container registry is reachable (so `FROM python:3.11-slim` cannot be
# pulled) but Debian's package mirror is: a Debian bookworm minbase root with Debian's Python 3.11,
# venv and pip, laid out like the official image (python, python3 and pip on /usr/local/bin,
# pip allowed to install globally, LANG=C.UTF-8, CMD ["python3"]). Build the feedvault image on it
# with `--build-arg BASE_IMAGE=localhost/python-standin:3.11-slim` (deploy/image/image_test.py
# does). It is a stand-in for tests only: production images use the real python:3.11-slim.
#
# Cached: nothing is done when the image already exists (--force rebuilds it). Needs root,
# debootstrap and podman.
#
# Environment: STANDIN_IMAGE (default localhost/python-standin:3.11-slim), STANDIN_SUITE
# (bookworm), STANDIN_MIRROR (default: the host's Debian mirror, else deb.debian.org),
# STANDIN_WORKDIR (default /var/tmp/feedvault-standin; the root is built there and removed).
set -euo pipefail

IMAGE=${STANDIN_IMAGE:-localhost/python-standin:3.11-slim}
SUITE=${STANDIN_SUITE:-bookworm}
WORKDIR=${STANDIN_WORKDIR:-/var/tmp/feedvault-standin}
FORCE=0
[[ ${1:-} == --force ]] && FORCE=1

log() { printf '[make-standin-base] %s\n' "$*" >&2; }

if [[ $FORCE == 0 ]] && podman image exists "$IMAGE"; then
    log "$IMAGE already present (cached; --force rebuilds it)"
    exit 0
fi

if [[ $(id -u) != 0 ]]; then
    log "needs root (debootstrap)"
    exit 1
fi
command -v debootstrap >/dev/null || {
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap >/dev/null
}

# The host's own Debian mirror (deb822 or one-line sources), else Debian's default.
mirror=${STANDIN_MIRROR:-}
if [[ -z $mirror ]]; then
    mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
fi
if [[ -z $mirror && -f /etc/apt/sources.list ]]; then
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}

root="$WORKDIR/root"
rm -rf "$root"
mkdir -p "$root"
trap 'rm -rf "$root"' EXIT

log "debootstrap $SUITE from $mirror into $root (a few minutes)"
debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates,netbase,tzdata \
    "$SUITE" "$root" "$mirror" >"$WORKDIR/debootstrap.log" 2>&1 || {
    log "debootstrap failed; the end of $WORKDIR/debootstrap.log:"
    tail -n 30 "$WORKDIR/debootstrap.log" >&2
    exit 1
}

log "laying it out like python:3.11-slim"
ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python3.11"
ln -sf python3.11 "$root/usr/local/bin/python3"
ln -sf python3.11 "$root/usr/local/bin/python"
ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip3"
ln -sf pip3 "$root/usr/local/bin/pip"
# The official image's pip installs globally; Debian marks its Python as externally managed.
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
# Slim: no package lists, caches, docs or man pages.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/var/log/*.log "$root"/var/log/apt/*
"$root/usr/bin/python3.11" --version >&2

log "importing as $IMAGE"
tar --numeric-owner -C "$root" -c . | podman import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$IMAGE" >/dev/null
podman image ls "$IMAGE" >&2
