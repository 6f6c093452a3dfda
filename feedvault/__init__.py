"""feedvault: record exchange market data into S3 from short-lived container tasks.

This is the application package: the ``feedvault`` command (:mod:`feedvault.cli`), the
configuration from the environment (:mod:`feedvault.config`), the wiring of stream, replay and
batch runs, ECS metadata, metrics, the demo and the load test. The layers below it are
``engine`` (the foundation), ``connectors`` (sources), ``sinks`` (storage) and ``batch``.
:mod:`feedvault.testing` holds the testing aids for code built on feedvault (docs: testing.md).
"""

from engine import __version__

__all__ = ["__version__"]
