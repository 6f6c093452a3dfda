"""feedvault's foundation: records, errors, clock, logging, the bounded queue, stats and the run
lifecycle. Imports no other package of the project (docs: architecture.md)."""

__version__ = "0.1.0"
