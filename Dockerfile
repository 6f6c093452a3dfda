# feedvault: one image for every workload (docs: operations.md#the-image).
#
# No ENTRYPOINT and no CMD: the ECS task definition's command picks the workload
# (["feedvault", "stream"], ["feedvault", "batch", "ecommerce"], ...), configured by environment
# variables only. Python runs as PID 1 and stops cleanly on SIGTERM: the engine installs its own
# SIGTERM/SIGINT handlers (a PID 1 with a handler gets the signal), so no init process is needed.
#
# BASE_IMAGE: a slim Python 3.11 (python:3.11-slim by default; deploy/image/make-standin-base.sh
# builds a local stand-in where no registry is reachable). Build behind a TLS-intercepting proxy
# with --build-arg PIP_CERT=/path/in/build (and PIP_INDEX_URL): they reach the build stage only.
ARG BASE_IMAGE=python:3.11-slim

# ---- build: a virtualenv with the package, its dependencies and the `all` extra ----
FROM ${BASE_IMAGE} AS build

ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=120

WORKDIR /src
RUN python -m venv /opt/feedvault

# Dependencies first, from pyproject.toml alone, so a source change does not reinstall them: the
# base dependencies and the `all` extra (batch jobs, load-test chart), its `feedvault[...]` entries
# resolved to the extras they name.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; x = p['optional-dependencies']; own = p['name'] + '['; print('\n'.join(sorted(set(p['dependencies'] + [r for a in x['all'] for r in (sum((x[e] for e in a[len(own):].rstrip(']').split(',')), []) if a.startswith(own) else [a])]))))" \
        > requirements.txt \
    && /opt/feedvault/bin/pip install --no-cache-dir --requirement requirements.txt

COPY README.md ./
COPY engine ./engine
COPY connectors ./connectors
COPY sinks ./sinks
COPY batch ./batch
COPY feedvault ./feedvault
RUN /opt/feedvault/bin/pip install --no-cache-dir --no-deps . \
    && /opt/feedvault/bin/feedvault --help > /dev/null \
    && /opt/feedvault/bin/pip uninstall --yes pip setuptools

# Parts of pyarrow that nothing here loads (about 50 MB): Arrow Flight (only pyarrow.flight links
# it), its tests, C++ headers and Cython sources. The import check (-I: the installed packages,
# not /src) proves that what the engine and the jobs use still loads.
RUN site=/opt/feedvault/lib/python3.11/site-packages/pyarrow \
    && rm -rf "$site/tests" "$site/include" "$site/src" \
        "$site"/*flight* "$site"/_pyarrow_cpp_tests* \
    && find "$site" \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' \) -delete \
    && /opt/feedvault/bin/python -I -c "import pyarrow, pyarrow.parquet, pyarrow.dataset, pyarrow.compute, pyarrow.csv, pyarrow.fs, numpy, aioboto3, orjson, zstandard, uvloop, websockets, psutil, tqdm, matplotlib.backends.backend_agg, feedvault.cli, feedvault.loadtest_chart, batch.registry"

# ---- final: the virtualenv on the same slim base, run as a non-root user ----
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="feedvault" \
      org.opencontainers.image.description="Stream exchange trades into S3 and run batch jobs (ECS Fargate tasks)"

RUN useradd --uid 10001 --user-group --no-log-init --create-home --home-dir /home/feedvault \
        --shell /usr/sbin/nologin feedvault

COPY --from=build /opt/feedvault /opt/feedvault

ENV PATH=/opt/feedvault/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /home/feedvault
USER 10001:10001
STOPSIGNAL SIGTERM
