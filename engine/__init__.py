"""feedvault runtime: configuration, the streaming pipeline, the stop sequence and the CLI."""

__version__ = "0.1.0"
