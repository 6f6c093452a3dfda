"""Batch side-mode (SPEC §9): short-lived jobs that write through the streaming sink."""
