"""Batch side-mode (SPEC §9): short-lived jobs that write through the streaming sink.

:mod:`batch.job` is the job contract (``Job``, ``JobContext``), :mod:`batch.runner` runs one job
(``feedvault batch JOB``), :mod:`batch.registry` maps job names to lazy factories,
:mod:`batch.config` holds the env contract, :mod:`batch.progress` the progress counters and
display, :mod:`batch.sample_cli` is ``feedvault sample JOB``; the jobs: :mod:`batch.computation`.
"""
