"""Batch side-mode (docs: batch.md): short-lived jobs that write through the streaming sink.

:mod:`batch.job` is the job contract (``Job``, ``JobContext``), :mod:`batch.registry` maps job
names to lazy factories, :mod:`batch.config` holds the env contract, :mod:`batch.progress` the
progress counters, :mod:`batch.sample_cli` is ``feedvault sample JOB``. The application runs a
job (``feedvault batch JOB``, :mod:`feedvault.batch_run`).
"""
